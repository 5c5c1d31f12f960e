"""The service around the tasks: the send flow, the stores, the broker-facing code, operations, the Celery app and the CLI."""
