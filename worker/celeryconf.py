"""The Celery application: every setting in one place, each non-default one explained."""
from __future__ import annotations

import gc

from celery import Celery, signals

from config import ConfigError, get_settings
from worker.observability import BALANCE_MONITOR, init_sentry
from worker.routing import DEFAULT_QUEUE, all_queues
from worker.state import resolve_urls


def create_app() -> Celery:
    try:
        settings = get_settings()
    except ConfigError as exc:
        raise SystemExit(f"voicecode: configuration error: {exc}") from None
    urls = resolve_urls(settings)
    app = Celery("voicecode", include=["tasks.voice", "tasks.balance", "tasks.accounts"])
    transport_options: dict[str, object] = {}
    if urls.broker.startswith("redis"):
        # An unacked message is handed to another worker after this long. Longer than any
        # retry countdown (VOICECODE_RETRY_CAP) so ETA retries do not run twice, and well
        # inside the default 300 s TTL so a killed worker's codes are still sent in time.
        transport_options["visibility_timeout"] = settings.visibility_timeout
        # Kombu looks for messages past their visibility timeout only every interval x throttle
        # seconds (10 x 10 by default): a killed worker's tasks waited up to 100 s on top of
        # the timeout. Sweep every few seconds, and scan on each sweep.
        transport_options["unacked_restore_interval"] = max(1, min(10, settings.visibility_timeout // 4))
        transport_options["unacked_restore_throttle"] = 1
    else:
        # Wait for RabbitMQ to confirm each publish: a message is not lost between us and the broker.
        transport_options["confirm_publish"] = True
    app.conf.update(
        broker_url=urls.broker,
        result_backend=urls.result_backend,
        broker_transport_options=transport_options,
        result_backend_transport_options={"retry_policy": {"timeout": 5.0}},
        broker_connection_retry_on_startup=True,
        # No AMQP heartbeats. With them Celery's main loop also reads the connection task
        # events go out on, while with the threads pool each pool thread reads that socket for
        # its event's publisher confirm: the two take each other's frames and the worker hangs.
        # py-amqp's TCP keepalive (60 s idle, then 9 probes 10 s apart) notices a dead broker.
        broker_heartbeat=0,
        # Only JSON on the wire: no pickle from foreign producers.
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # Queues named for the product, so it can share a broker with other apps; one per
        # account (worker/routing.py) so accounts do not wait behind each other.
        task_default_queue=DEFAULT_QUEUE,
        task_queues=all_queues(settings.accounts),
        # Ack after the task ran and requeue when the worker process dies: at-least-once,
        # with duplicates stopped by the request_id record.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # Unreadable messages are dead-lettered, and never logged with their bodies.
        worker_consumer="worker.consumer:SafeConsumer",
        # I/O-bound work: threads, enough of them to hide ihuyi's latency.
        worker_pool=settings.worker_pool,
        worker_concurrency=settings.worker_concurrency,
        # After a broker reconnect Celery lowers the prefetch count and raises it again from
        # each task's ack callback. With the threads pool that callback runs in a pool thread,
        # which then sends basic.qos on the channel the main thread reads: both wait for the
        # same reply and the worker stops consuming. Restore the full prefetch at once instead.
        worker_enable_prefetch_count_reduction=False,
        # Results are small JSON, useful to the caller for a day.
        result_expires=86400,
        # Task events for Flower: sent, received, started, succeeded, failed, retried.
        worker_send_task_events=True,
        task_send_sent_event=True,
        beat_schedule={
            BALANCE_MONITOR: {"task": "check_balance", "schedule": settings.balance_check_seconds},
            "probe-paused-accounts": {"task": "probe_paused_accounts", "schedule": settings.account_probe_seconds},
        },
    )
    return app


_movers: list = []


@signals.worker_ready.connect
def _freeze_startup_objects(**_: object) -> None:
    """Keep the objects of start-up out of the garbage collector's full collections.

    A parked task ends with Celery's ``Ignore``, whose ExceptionInfo copies every frame's code
    positions into a reference cycle that outlives the young collections. Full
    collections run only when the old generation grew by a quarter, and start-up makes it
    large: 10,000 parked tasks held ~60 MB of such garbage at the peak. Frozen start-up
    objects no longer count, so full collections come soon enough to keep that small.
    """
    gc.freeze()


@signals.worker_ready.connect
def _start_parking_mover(**_: object) -> None:
    """Each worker re-publishes the parked tasks that come due (see worker/parking.py)."""
    from tasks.voice import republish
    from worker import runtime
    from worker.parking import Mover

    _movers.append(Mover(runtime.parking_lot(), republish).start())


@signals.worker_shutdown.connect
def _stop_parking_mover(**_: object) -> None:
    while _movers:
        _movers.pop().stop()


@signals.celeryd_init.connect
def _redis_transport_in_worker(**_: object) -> None:
    """Workers consume from Redis with worker/transport.py; producers, beat and Flower keep kombu's."""
    from worker import transport

    transport.install()


@signals.celeryd_init.connect
@signals.worker_process_init.connect
def _sentry_in_worker(**_: object) -> None:
    """Sentry in the worker (and, with the prefork pool, again in each forked child)."""
    init_sentry(get_settings(), "worker")


@signals.beat_init.connect
def _sentry_in_beat(**_: object) -> None:
    init_sentry(get_settings(), "beat")
