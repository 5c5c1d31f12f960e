"""The Celery tasks, and the producer API web apps call to enqueue them."""
