"""The Celery application (``celery -A worker.app``)."""
from worker.celeryconf import create_app

app = create_app()
