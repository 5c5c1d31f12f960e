"""The Celery application: every setting in one place, each non-default one explained.

Also the Celery-shaped pieces around the Celery-free send flow: the app that holds the
process's stores and sender, the task base class that masks every publish, and the worker
steps that re-publish parked tasks and announce the accounts the worker serves.

The settings are read when Celery first needs them, not at import: a web app that imports
the tasks (to call ``send_voice_code.delay``) has no ihuyi account, and gets the settings it
shares with the workers (worker/broker/messages.py). A worker or beat whose settings are
bad stops at start with one line naming the variable.
"""
from __future__ import annotations

import gc
import logging
import threading
from functools import cached_property
from typing import Any

from celery import Celery, Task, bootsteps, signals
from celery.app.task import Context
from celery.backends.redis import RedisBackend
from celery.worker.request import Request

from config import ConfigError, Settings, get_settings
from config.redis_urls import is_redis_broker
from config.settings import get_producer_settings
from worker.broker.messages import QueueKind, all_queues, due_queue_for, queue_for, shared_conf
from worker.broker.quorum import DeadLetterQueue, native_delay_options
from worker.broker import transport
from worker.ops.alerts import Alerts
from worker.ops.sentry import BALANCE_MONITOR, init_sentry
from worker.sending.flow import Sender
from worker.sending.masking import masked_call
from worker.stores import Stores
from worker.stores.connection import Urls, resolve_urls
from worker.stores.heartbeats import PROCESS
from worker.stores.idempotency import TaskResult
from worker.stores.parking import Mover
from worker.stores.registry import Limits, WorkerRegistry

#: How often a worker tells the registry which accounts it serves, and how long each word holds:
#: a worker that died without withdrawing stops counting within a minute.
ANNOUNCE_EVERY_SECONDS = 20.0
ANNOUNCE_TTL_SECONDS = 60.0
#: How soon a limit tripped at the door (a budget reached, a range under attack) is alerted on.
GUARD_ALERT_SECONDS = 30.0

log = logging.getLogger(__name__)


class VoiceCodeApp(Celery):
    """The Celery app, holding what this process's tasks share, each built on first use."""

    @cached_property
    def settings(self) -> Settings:
        return get_settings()

    @cached_property
    def stores(self) -> Stores:
        return Stores.for_worker(self.settings)

    @cached_property
    def sender(self) -> Sender:
        return Sender(self.settings, self.stores)

    @cached_property
    def urls(self) -> Urls:
        return resolve_urls(self.settings)

    @cached_property
    def results_in_state(self) -> bool:
        """Celery's results are kept by its Redis backend in the state Redis, as plain as the
        send writes them (:class:`TaskResult`)."""
        return self.urls.results_in_state and isinstance(self.backend, RedisBackend) and not self.conf.result_extended

    def task_result(self, request: Context) -> TaskResult | None:
        """Where the send may store the result of the task ``request`` runs, in the round trip
        that finishes the request, instead of Celery reading and writing it after the task
        returns: when the results are in the state Redis and the task is a plain one (not
        eager, not in a group, chain or chord, whose results Celery links). When the broker
        is there too, the same step acks the task's message."""
        # A retry's parent is the task itself (Task.retry publishes it from the task): still a plain one.
        linked = request.parent_id not in (None, request.id)
        if not self.results_in_state or request.is_eager or request.group or linked or request.chord:
            return None
        key = self.backend.get_key_for_task(request.id)
        tag = (request.delivery_info or {}).get("delivery_tag")
        ack = (tag, transport.ack_keys(PROCESS.identity)) if self.urls.broker_in_state and isinstance(tag, str) else None
        return TaskResult(key.decode() if isinstance(key, bytes) else key, request.id, int(self.backend.expires), ack)

    @cached_property
    def alerts(self) -> Alerts:
        return Alerts(self.stores.redis, self.settings.alert_dedup_seconds)

    @cached_property
    def registry(self) -> WorkerRegistry:
        return WorkerRegistry(self.stores.redis)

    def republish(self, message: dict[str, Any]) -> None:
        """Put a parked ``send_voice_code`` back on its queue (called by the parking mover)."""
        self.tasks["send_voice_code"].publish(
            message["args"], message["kwargs"], task_id=message["task_id"], headers=message["headers"],
            queue=message["queue"],
        )

    def celery_conf(self) -> dict[str, Any]:
        """Every Celery setting: a worker's, or, where the worker's settings cannot be read (a web
        app, which has no ihuyi account), the ones it shares with the workers."""
        try:
            return worker_conf(self.settings)
        except ConfigError:
            try:
                urls = resolve_urls(get_producer_settings())
            except ConfigError:
                return {}  # a worker or beat says why at start (_settings_or_exit); a producer when it publishes
            return shared_conf(urls.broker, urls.result_backend, urls.sentinel_master)


class MaskedRequest(Request):
    """A request whose argsrepr/kwargsrepr are masked whatever the producer sent, for events and logs.

    Its message was checked by worker/broker/consumer.py: args is a list and kwargs an object.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._argsrepr, self._kwargsrepr = masked_call(self._args, self._kwargs)
        # For the task's last step to ack its message (VoiceCodeApp.task_result).
        self._delivery_info["delivery_tag"] = self._message.delivery_tag


class MaskedTask(Task):
    """A task whose arguments are masked wherever Celery shows them: every publish (an enqueue,
    a retry, a re-published parked task) and every message a worker receives."""

    Request = MaskedRequest

    def publish(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        """Publish as Celery does, the arguments masked (a countdown fit for quorum queues' delays)."""
        options["argsrepr"], options["kwargsrepr"] = masked_call(args or (), kwargs or {})
        return super().apply_async(args, kwargs, **native_delay_options(self.app, options))


class ParkingMover(bootsteps.StartStopStep):
    """Each worker re-publishes the parked tasks that come due (see worker/stores/parking.py)."""

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.mover: Mover | None = None

    def start(self, worker: Any) -> None:
        self.mover = Mover(worker.app.stores.parking, worker.app.republish).start()

    def stop(self, worker: Any) -> None:
        if self.mover is not None:
            self.mover.stop()


def served_accounts(app: VoiceCodeApp) -> list[str]:
    """The configured accounts whose queues this worker consumes: all of them, unless ``-Q`` (or a
    remote ``add_consumer``/``cancel_consumer``) chose others."""
    consumed = app.amqp.queues.consume_from
    return [name for name in app.settings.accounts if queue_for(name) in consumed]


class RegistryAnnouncer(bootsteps.StartStopStep):
    """Each worker announces the accounts it serves and the limits it keeps (worker/stores/registry.py),
    and withdraws from the live workers when it stops: a producer refuses an account no worker
    has served instead of leaving its task on a queue nobody reads, and checks the workers' limits.

    The first announcement is made before the worker reports ready, then one every
    ANNOUNCE_EVERY_SECONDS from a thread that outlives any failure of the state Redis.
    """

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(worker,), name="registry-announcer", daemon=True)

    def start(self, worker: Any) -> None:
        self._registry = worker.app.registry
        accounts = self._announce(worker)
        if accounts is not None:
            log.info("worker registry: serving accounts %s", ", ".join(accounts) or "(none)")
        self._thread.start()

    def stop(self, worker: Any) -> None:
        self._stopping.set()
        self._thread.join(5)
        try:
            self._registry.withdraw(worker.hostname)
        except Exception as exc:  # noqa: BLE001 - shutting down goes on
            log.warning("worker registry: withdrawing failed (%s); the entry expires within %g s",
                        type(exc).__name__, ANNOUNCE_TTL_SECONDS)

    terminate = stop  # a cold shutdown withdraws too

    def _run(self, worker: Any) -> None:
        while not self._stopping.wait(ANNOUNCE_EVERY_SECONDS):
            self._announce(worker)

    def _announce(self, worker: Any) -> list[str] | None:
        """Announce the accounts served now; None when the state Redis did not take it."""
        accounts = served_accounts(worker.app)
        try:
            self._registry.announce(worker.hostname, accounts, ttl=ANNOUNCE_TTL_SECONDS,
                                    limits=Limits.of(worker.app.settings))
        except Exception as exc:  # noqa: BLE001 - the thread must outlive any failure
            log.warning("worker registry: announcing failed (%s: %s); trying again in %g s",
                        type(exc).__name__, exc, ANNOUNCE_EVERY_SECONDS)
            return None
        return accounts


def create_app() -> VoiceCodeApp:
    """The app, its settings a promise: read when Celery first asks for one (see the module's docstring)."""
    app = VoiceCodeApp("voicecode", include=["tasks.voice", "tasks.balance", "tasks.accounts", "tasks.guards"])
    app.steps["worker"].add(ParkingMover)
    app.steps["worker"].add(RegistryAnnouncer)
    app.steps["consumer"].add(DeadLetterQueue)
    app.add_defaults(app.celery_conf)
    return app


def worker_conf(settings: Settings) -> dict[str, Any]:
    """A worker's Celery settings: the shared ones (worker/broker/messages.py) and its own."""
    urls = resolve_urls(settings)
    conf = shared_conf(urls.broker, urls.result_backend, urls.sentinel_master, settings.wait_replicas)
    if is_redis_broker(urls.broker):
        conf["broker_transport_options"] = {
            **conf["broker_transport_options"],  # the master name and the replicas to wait for
            # An unacked message is handed to another worker after this long. Longer than any
            # retry countdown (VOICECODE_RETRY_CAP) so ETA retries do not run twice, and well
            # inside the default 300 s TTL so a killed worker's codes are still sent in time.
            "visibility_timeout": settings.visibility_timeout,
            # Kombu looks for messages past their visibility timeout only every interval x
            # throttle seconds (10 x 10 by default): a killed worker's tasks waited up to 100 s
            # on top of the timeout. Sweep every few seconds, and scan on each sweep.
            "unacked_restore_interval": max(1, min(10, settings.visibility_timeout // 4)),
            "unacked_restore_throttle": 1,
        }
    conf.update(
        # One queue per account (worker/broker/messages.py) so accounts do not wait behind each other.
        task_queues=all_queues(settings.accounts, QueueKind(settings.queue_type, settings.delivery_limit)),
        # Quorum queues (RABBITMQ_QUEUE_TYPE): Celery then turns global QoS off and delays retries
        # natively (worker/broker/quorum.py); classic by default, as declared before.
        task_default_queue_type=settings.queue_type,
        worker_detect_quorum_queues=True,
        # Ack after the task ran and requeue when the worker process dies: at-least-once,
        # with duplicates stopped by the request_id record.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # Unreadable messages are dead-lettered, and never logged with their bodies.
        worker_consumer="worker.broker.consumer:SafeConsumer",
        # I/O-bound work: threads, enough of them to hide ihuyi's latency.
        worker_pool=settings.worker_pool,
        worker_concurrency=settings.worker_concurrency,
        # After a broker reconnect Celery lowers the prefetch count and raises it again from
        # each task's ack callback. With the threads pool that callback runs in a pool thread,
        # which then sends basic.qos on the channel the main thread reads: both wait for the
        # same reply and the worker stops consuming. Restore the full prefetch at once instead.
        worker_enable_prefetch_count_reduction=False,
        # A message waits in the worker behind those prefetched before it: a parked task back
        # for its slot must not wait behind four per thread (worker/broker/messages.py).
        worker_prefetch_multiplier=1,
        # Results are small JSON, useful to the caller for a day.
        result_expires=86400,
        # Task events only while a monitor listens: Flower (worker/ops/flower.py) turns them on
        # in every worker and keeps them on; `celery -A worker.app control enable_events` does
        # too. Always on, they cost about 30 % of a worker's throughput. Producers still send
        # task-sent events, so Flower sees a task the moment it is enqueued.
        worker_send_task_events=False,
        beat_schedule={
            BALANCE_MONITOR: {"task": "check_balance", "schedule": settings.balance_check_seconds},
            "probe-paused-accounts": {"task": "probe_paused_accounts", "schedule": settings.account_probe_seconds},
            "raise-guard-alerts": {"task": "raise_guard_alerts", "schedule": GUARD_ALERT_SECONDS},
        },
    )
    return conf


@signals.celeryd_init.connect
@signals.beat_init.connect
def _settings_or_exit(**_: object) -> None:
    """A worker or beat with a bad setting stops here, before anything else reads them, with one line."""
    try:
        get_settings()
    except ConfigError as exc:
        raise SystemExit(f"voicecode: configuration error: {exc}") from None


@signals.celeryd_after_setup.connect
def _consume_due_queues(instance: Any, **_: object) -> None:
    """A worker started with ``-Q`` consumes the due queue of each account whose queue it chose:
    that account's parked tasks come back there (worker/broker/messages.py)."""
    queues = instance.app.amqp.queues
    for account in served_accounts(instance.app):
        queues.select_add(queues[due_queue_for(account)])


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


@signals.celeryd_init.connect
def _redis_transport_in_worker(**_: object) -> None:
    """Workers consume from Redis with worker/broker/transport.py; producers, beat and Flower keep kombu's."""
    transport.install()


@signals.celeryd_init.connect
@signals.worker_process_init.connect
def _sentry_in_worker(**_: object) -> None:
    """Sentry in the worker (and, with the prefork pool, again in each forked child)."""
    init_sentry(get_settings(), "worker")


@signals.beat_init.connect
def _sentry_in_beat(**_: object) -> None:
    init_sentry(get_settings(), "beat")
