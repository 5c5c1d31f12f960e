"""What faces kombu and the broker: the Redis transport, the consumer, message checks, queues."""
