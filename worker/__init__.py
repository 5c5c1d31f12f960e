"""The Celery application and the runtime around the tasks: state, retries, dead letters, alerts."""
