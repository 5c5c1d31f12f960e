"""The life of one send, without Celery: the request, its flow, retries and masking."""
