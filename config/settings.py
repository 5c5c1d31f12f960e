"""Every setting of the service, read from the environment and validated at start-up.

A bad value raises :class:`ConfigError` naming the variable and the problem; the entry
points turn it into one line on stderr and a non-zero exit.
"""
from __future__ import annotations

import functools
import ipaddress
import json
import math
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from config.redis_urls import is_redis_broker, is_sentinel, sentinel_hosts

#: https, its certificate checked; a plain http:// URL works only when set, with a warning at start.
DEFAULT_API_URL = "https://api.voice.ihuyi.com/webservice/voice.php"
DEFAULT_ACCOUNT = "default"
#: The longest a code may stay valid, in seconds: the bound on ``VOICE_CODE_TTL`` and on a request's ``ttl``.
MAX_TTL = 86400
#: The largest daily call budget an account may have.
MAX_BUDGET = 10**9
#: What a code's TTL and a number's throttle are when nothing says otherwise.
DEFAULT_CODE_TTL = "300"
DEFAULT_MOBILE_THROTTLE = "1/60s,5/h,10/d"
#: What one requester (a web app's client address, user or session) may ask for.
DEFAULT_REQUESTER_THROTTLE = "5/10m,20/d"
#: How many distinct numbers of one range (its first 7 digits) may be called in a window.
DEFAULT_RANGE_GUARD = "20/10m"
#: The pools the service supports. gevent is refused: with 100 greenlets a worker ran 12.5
#: tasks/s, the no-op reference task as slowly, where the threads pool runs about 300; it is
#: not a dependency, and neither is eventlet.
WORKER_POOLS = ("threads", "prefork", "solo")
#: The most calls a rate, a burst or a throttle window may count.
_MAX_COUNT = 1_000_000
#: The longest per-number throttle window, in seconds.
_MAX_WINDOW = 30 * 86400
#: The shortest ``VOICECODE_SECRET`` accepted.
MIN_SECRET_LENGTH = 16


class ConfigError(ValueError):
    """A configuration variable is missing or has a bad value."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


@dataclass(frozen=True)
class Rate:
    """``limit`` calls per ``period`` seconds, with up to ``burst`` calls at once."""

    limit: int
    period: float
    burst: int

    @property
    def per_second(self) -> float:
        return self.limit / self.period

    def __str__(self) -> str:
        unit = {1.0: "s", 60.0: "m", 3600.0: "h"}.get(self.period, f"{self.period:g}s")
        return f"{self.limit}/{unit}"


@dataclass(frozen=True)
class Window:
    """At most ``limit`` calls to one number in any ``seconds``-long window."""

    limit: int
    seconds: int


@dataclass(frozen=True)
class Account:
    name: str
    apiid: str
    apikey: str = field(repr=False)
    rate: Rate
    fallback: str | None = None
    #: The most requests accepted for the account per UTC day; None for no cap.
    daily_budget: int | None = None


@dataclass(frozen=True)
class RangeGuard:
    """At most ``limit`` distinct numbers of one range (the first 7 digits, an operator's segment)
    called in any ``seconds``; past it an alert, and new requests for the range refused for
    ``block_seconds`` (0: the alert only)."""

    limit: int
    seconds: int
    block_seconds: int


@dataclass(frozen=True)
class Settings:
    broker_url: str | None
    result_backend: str | None
    redis_url: str | None
    api_url: str
    accounts: Mapping[str, Account]
    password_mode: str
    reply_format: str
    connect_timeout: float
    read_timeout: float
    code_ttl: int
    max_attempts: int
    retry_base: float
    retry_cap: float
    mobile_throttle: tuple[Window, ...]
    requester_throttle: tuple[Window, ...]
    range_guard: RangeGuard | None
    sentry_dsn: str | None
    sentry_environment: str
    sentry_traces_sample_rate: float
    alert_dedup_seconds: int
    balance_alert_threshold: int
    balance_check_seconds: float
    account_probe_seconds: float
    flower_basic_auth: str | None
    flower_port: int
    flower_address: str
    metrics_basic_auth: str | None
    metrics_port: int
    metrics_address: str
    host: str
    state_dir: Path
    visibility_timeout: int
    worker_pool: str
    worker_concurrency: int
    #: How many worker processes ``voicecode worker`` runs (WORKER_PROCESSES; default: the cores).
    worker_processes: int
    #: The primary's name at the sentinels, for every ``sentinel://`` URL (REDIS_SENTINEL_MASTER).
    sentinel_master: str | None = None
    #: How many replicas must hold a published task before the publish returns (REDIS_WAIT_REPLICAS).
    wait_replicas: int = 0
    #: RabbitMQ: ``classic`` or ``quorum`` queues, and a quorum queue's delivery limit (RABBITMQ_QUEUE_TYPE...).
    queue_type: str = "classic"
    delivery_limit: int = 20

    @property
    def embedded(self) -> bool:
        """True when no server was configured and the embedded Redis stands in."""
        return not (self.broker_url or self.redis_url)


@dataclass(frozen=True)
class ProducerSettings:
    """What a web app needs to enqueue and to verify: where the broker and the state live.

    No ihuyi secret: workers announce the accounts they serve and the limits they keep
    (worker/stores/registry.py). ``code_ttl`` and ``mobile_throttle`` are None unless set
    here: then the workers' are used (a setting that differs from theirs is logged once), or,
    before any worker has announced, the defaults. ``accounts`` names the accounts this
    environment configures, if any (the CLI beside a worker): accepted before a worker announced them.
    """

    broker_url: str | None
    result_backend: str | None
    redis_url: str | None
    state_dir: Path
    code_ttl: int | None
    mobile_throttle: tuple[Window, ...] | None
    verify_secret: bytes | None = field(repr=False)
    verify_max_attempts: int
    accounts: tuple[str, ...] = ()
    sentinel_master: str | None = None
    wait_replicas: int = 0
    queue_type: str = "classic"
    delivery_limit: int = 20

    @property
    def embedded(self) -> bool:
        """True when no server was configured and the embedded Redis stands in."""
        return not (self.broker_url or self.redis_url)


# Digits capped so that int() stays cheap; the bounds are checked after.
_RATE = re.compile(r"\s*(\d{1,9})\s*/\s*(s|m|h)\s*", re.ASCII)
_PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_WINDOW = re.compile(r"\s*(\d{1,9})\s*/\s*(\d{0,9})\s*(s|m|h|d)\s*", re.ASCII)
_WINDOW_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Flower splits FLOWER_BASIC_AUTH at commas into several user:password credentials.
_CREDENTIAL = re.compile(r"[^:,\s]+:[^,\s]+")
_ACCOUNT_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
# Sentry refuses environments with white space or slashes, or longer than 64 characters.
_SENTRY_ENVIRONMENT = re.compile(r"[^\s/]{1,64}")
# A worker host's name (VOICECODE_HOST): part of Redis field names and alerts, so no "@" or space.
_HOST_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _shown(value: object) -> str:
    """``value``'s repr cut to a length that keeps an error message on one short line."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def parse_rate(variable: str, text: str, burst: object = None) -> Rate:
    """Parse ``N/s``, ``N/m`` or ``N/h``: at most N calls in any such window.

    The burst defaults to 1: calls are spaced evenly, one every period/N, never two at once.
    A larger ``burst`` (opt-in, per account) lets that many go at once after a quiet spell,
    so up to N + burst - 1 can fall in one window.
    """
    match = _RATE.fullmatch(str(text))
    if not match or not 1 <= int(match[1]) <= _MAX_COUNT:
        raise ConfigError(variable, f"expected a rate like 10/s or 600/m, at most {_MAX_COUNT} calls, got {_shown(text)}")
    limit, period = int(match[1]), _PERIODS[match[2]]
    burst = 1 if burst is None else burst
    if not isinstance(burst, int) or isinstance(burst, bool) or not 1 <= burst <= _MAX_COUNT:
        raise ConfigError(variable, f"burst must be a whole number from 1 to {_MAX_COUNT}, got {_shown(burst)}")
    return Rate(limit, period, burst)


def parse_throttle(variable: str, text: str) -> tuple[Window, ...]:
    """Parse per-number windows such as ``1/60s,5/h,10/d``; an empty value turns throttling off."""
    windows = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = _WINDOW.fullmatch(part)
        if not match:
            raise ConfigError(variable, f"expected windows like 1/60s,5/h,10/d, got {_shown(part)}")
        window = Window(int(match[1]), int(match[2] or 1) * _WINDOW_UNITS[match[3]])
        if not (1 <= window.limit <= _MAX_COUNT and 1 <= window.seconds <= _MAX_WINDOW):
            raise ConfigError(variable, f"a window counts 1 to {_MAX_COUNT} calls over 1 s to 30 d, got {_shown(part)}")
        windows.append(window)
    return tuple(sorted(windows, key=lambda w: w.seconds))


def parse_number(variable: str, raw: str, kind: type[int] | type[float], minimum: float, maximum: float) -> Any:
    """``raw`` as a ``kind`` from ``minimum`` to ``maximum``; nan and the infinities are never numbers here."""
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(variable, f"expected {'an integer' if kind is int else 'a number'}, got {_shown(raw)}") from None
    if not math.isfinite(value):
        raise ConfigError(variable, f"expected a finite number, got {_shown(raw)}")
    if not minimum <= value <= maximum:
        raise ConfigError(variable, f"must be from {minimum} to {maximum}, got {_shown(raw)}")
    return value


def parse_host(variable: str, text: str) -> str:
    """An IP address or a host name to listen on."""
    host = text.strip()
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        if _HOSTNAME.fullmatch(host):
            return host
    raise ConfigError(variable, f"expected an IP address or a host name, got {_shown(text)}")


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which a container's cpuset narrows)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _number(env: Mapping[str, str], variable: str, default: str, kind: type[int] | type[float],
            minimum: float, maximum: float) -> Any:
    return parse_number(variable, env.get(variable) or default, kind, minimum, maximum)


def _choice(env: Mapping[str, str], variable: str, default: str, choices: tuple[str, ...], note: str = "") -> str:
    value = (env.get(variable) or default).strip().lower()
    if value not in choices:
        raise ConfigError(variable, f"must be one of {', '.join(choices)}{note}, got {_shown(value)}")
    return value


def _url(env: Mapping[str, str], variable: str, schemes: tuple[str, ...]) -> str | None:
    value = (env.get(variable) or "").strip()
    if value and not value.startswith(tuple(f"{s}://" for s in schemes)):
        raise ConfigError(variable, f"must start with one of {', '.join(schemes)}://")
    return value or None


_REDIS_ROLES = ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "REDIS_URL")
_SENTINEL_MASTER = re.compile(r"[A-Za-z0-9_.-]{1,64}")
#: The most replicas a publish may wait for (REDIS_WAIT_REPLICAS).
MAX_WAIT_REPLICAS = 5


def _sentinel(env: Mapping[str, str]) -> tuple[str | None, int]:
    """``REDIS_SENTINEL_MASTER`` and ``REDIS_WAIT_REPLICAS``, checked against the Redis URLs.

    Every ``sentinel://`` URL (``sentinel://h1:26379;sentinel://h2:26379/0``) must be readable
    and needs the master name; a publish waits for one replica by default when the broker is
    behind Sentinel (a primary with a replica), for none otherwise.
    """
    sentinel_urls = [(variable, (env.get(variable) or "").strip()) for variable in _REDIS_ROLES]
    sentinel_urls = [(variable, url) for variable, url in sentinel_urls if is_sentinel(url)]
    for variable, url in sentinel_urls:
        try:
            sentinel_hosts(url)
        except ValueError as exc:
            raise ConfigError(variable, f"expected sentinel://host:26379;sentinel://host2:26379/0 ({exc})") from None
    master = (env.get("REDIS_SENTINEL_MASTER") or "").strip() or None
    if sentinel_urls and master is None:
        raise ConfigError("REDIS_SENTINEL_MASTER", f"{sentinel_urls[0][0]} is a sentinel:// URL: set the name the "
                                                   "sentinels know the Redis primary by (e.g. mymaster)")
    if master is not None and not _SENTINEL_MASTER.fullmatch(master):
        raise ConfigError("REDIS_SENTINEL_MASTER", f"a master name is 1 to 64 of A-Z a-z 0-9 _ . -, got {_shown(master)}")
    broker_behind_sentinel = is_sentinel((env.get("CELERY_BROKER_URL") or "").strip())
    replicas = _number(env, "REDIS_WAIT_REPLICAS", "1" if broker_behind_sentinel else "0", int, 0, MAX_WAIT_REPLICAS)
    return master, replicas


#: RabbitMQ queue types: classic by default, so a deployment's queues stay what they were declared as.
QUEUE_TYPES = ("classic", "quorum")


def _rabbitmq_queues(env: Mapping[str, str]) -> tuple[str, int]:
    """``RABBITMQ_QUEUE_TYPE`` and ``RABBITMQ_DELIVERY_LIMIT``: quorum queues only on an AMQP broker."""
    queue_type = _choice(env, "RABBITMQ_QUEUE_TYPE", "classic", QUEUE_TYPES)
    broker = (env.get("CELERY_BROKER_URL") or "").strip()
    if queue_type == "quorum" and not broker.startswith(("amqp", "pyamqp")):
        raise ConfigError("RABBITMQ_QUEUE_TYPE", "quorum queues need a RabbitMQ broker (CELERY_BROKER_URL=amqp://...)")
    return queue_type, _number(env, "RABBITMQ_DELIVERY_LIMIT", "20", int, 1, 1000)


def _sentry_dsn(env: Mapping[str, str]) -> str | None:
    """The DSN, checked the way the SDK will read it, so a bad one stops start-up rather than each worker."""
    dsn = (env.get("SENTRY_DSN") or "").strip()
    if not dsn:
        return None
    from sentry_sdk.utils import Dsn

    try:
        Dsn(dsn)
    except ValueError:  # the SDK's BadDsn, or a port that is not a number; neither message shows the key
        raise ConfigError("SENTRY_DSN", "expected a Sentry DSN like https://key@o0.ingest.sentry.io/0") from None
    return dsn


def _sentry_environment(env: Mapping[str, str]) -> str:
    value = (env.get("SENTRY_ENVIRONMENT") or "").strip() or "production"
    if not _SENTRY_ENVIRONMENT.fullmatch(value):
        raise ConfigError("SENTRY_ENVIRONMENT", "must be 1 to 64 characters without spaces or slashes")
    return value


def _basic_auth(env: Mapping[str, str], variable: str = "FLOWER_BASIC_AUTH") -> str | None:
    """``user:password``, or several separated by commas; never shown in an error."""
    auth = (env.get(variable) or "").strip()
    if auth and not all(_CREDENTIAL.fullmatch(part) for part in auth.split(",")):
        raise ConfigError(variable, "expected user:password, or user1:pass1,user2:pass2 (a password has no comma or space)")
    return auth or None


def _host(env: Mapping[str, str]) -> str:
    """This host's name for pauses and alerts about it: ``VOICECODE_HOST``, else the system's host name."""
    name = (env.get("VOICECODE_HOST") or "").strip() or socket.gethostname()
    if not _HOST_NAME.fullmatch(name):
        raise ConfigError("VOICECODE_HOST", f"a host is named by 1 to 64 of A-Z a-z 0-9 _ . -, got {_shown(name)}")
    return name


def _verify_secret(env: Mapping[str, str]) -> bytes | None:
    """The key of the verification hashes; None when unset (verifying then refuses, naming it). Never shown."""
    secret = (env.get("VOICECODE_SECRET") or "").strip()
    if secret and len(secret) < MIN_SECRET_LENGTH:
        # A short key lets anyone holding a copy of Redis try every number and code against the hashes.
        raise ConfigError("VOICECODE_SECRET", f"must be at least {MIN_SECRET_LENGTH} characters: a long random string")
    return secret.encode() or None


def _state_dir(env: Mapping[str, str]) -> Path:
    return Path(env.get("VOICECODE_STATE_DIR") or Path.home() / ".local/state/voicecode").expanduser().absolute()


def parse_range_guard(env: Mapping[str, str]) -> RangeGuard | None:
    """``RANGE_GUARD`` (one window, e.g. ``20/10m``; empty turns it off) and ``RANGE_GUARD_BLOCK``."""
    windows = parse_throttle("RANGE_GUARD", env.get("RANGE_GUARD", DEFAULT_RANGE_GUARD))
    if len(windows) > 1:
        raise ConfigError("RANGE_GUARD", f"one window, e.g. {DEFAULT_RANGE_GUARD}, got {len(windows)}")
    block = _number(env, "RANGE_GUARD_BLOCK", "1800", int, 0, 30 * 86400)
    return RangeGuard(windows[0].limit, windows[0].seconds, block) if windows else None


def _table_account(name: str, spec: object, default_rate: Rate, default_budget: int | None = None) -> Account:
    """One entry of ``IHUYI_ACCOUNTS``; its fallback is checked once every account is known."""
    where = f"account {_shown(name)}"
    if not _ACCOUNT_NAME.fullmatch(name):
        raise ConfigError("IHUYI_ACCOUNTS", f"{where}: a name is 1 to 64 of A-Z a-z 0-9 _ . -")
    if not isinstance(spec, dict) or not all(isinstance(spec.get(k), str) and spec[k].strip() for k in ("apiid", "apikey")):
        raise ConfigError("IHUYI_ACCOUNTS", f"{where} needs non-empty apiid and apikey strings")
    unknown = set(spec) - {"apiid", "apikey", "rate_limit", "burst", "fallback", "daily_budget"}
    if unknown:
        raise ConfigError("IHUYI_ACCOUNTS", f"{where} has unknown keys {_shown(sorted(unknown))}")
    fallback = spec.get("fallback")
    if fallback is not None and not isinstance(fallback, str):
        raise ConfigError("IHUYI_ACCOUNTS", f"{where}: fallback must be an account name")
    rate = parse_rate("IHUYI_ACCOUNTS", spec.get("rate_limit", str(default_rate)), spec.get("burst"))
    budget = spec.get("daily_budget", default_budget)
    if budget is not None and (type(budget) is not int or not 1 <= budget <= MAX_BUDGET):
        raise ConfigError("IHUYI_ACCOUNTS", f"{where}: daily_budget must be a whole number from 1 to {MAX_BUDGET}")
    return Account(name, spec["apiid"].strip(), spec["apikey"].strip(), rate, fallback, budget)


def _accounts(env: Mapping[str, str], default_rate: Rate) -> dict[str, Account]:
    accounts: dict[str, Account] = {}
    default_budget = _number(env, "ACCOUNT_DAILY_BUDGET", "0", int, 0, MAX_BUDGET) or None
    apiid, apikey = env.get("IHUYI_APIID", "").strip(), env.get("IHUYI_APIKEY", "").strip()
    if apiid or apikey:
        if not (apiid and apikey):
            raise ConfigError("IHUYI_APIKEY" if apiid else "IHUYI_APIID", "set both IHUYI_APIID and IHUYI_APIKEY")
        accounts[DEFAULT_ACCOUNT] = Account(DEFAULT_ACCOUNT, apiid, apikey, default_rate, daily_budget=default_budget)
    raw = env.get("IHUYI_ACCOUNTS", "").strip()
    if raw:
        try:
            table = json.loads(raw)
        except ValueError as exc:
            raise ConfigError("IHUYI_ACCOUNTS", f"not valid JSON ({exc.msg} at char {exc.pos})") from None
        if not isinstance(table, dict):
            raise ConfigError("IHUYI_ACCOUNTS", "must be a JSON object of name -> account")
        accounts.update((name, _table_account(name, spec, default_rate, default_budget)) for name, spec in table.items())
    for account in accounts.values():
        if account.fallback is not None and (account.fallback not in accounts or account.fallback == account.name):
            raise ConfigError("IHUYI_ACCOUNTS", f"account {account.name!r} names unknown fallback {_shown(account.fallback)}")
    if not accounts:
        raise ConfigError("IHUYI_APIID", "no ihuyi account configured: set IHUYI_APIID and IHUYI_APIKEY, or IHUYI_ACCOUNTS")
    return accounts


def _check_together(settings: Settings) -> None:
    """The bounds that tie one variable to another."""
    if settings.retry_base > settings.retry_cap:
        raise ConfigError("VOICECODE_RETRY_BASE", f"must not exceed VOICECODE_RETRY_CAP ({settings.retry_cap:g}), got {settings.retry_base:g}")
    redis_broker = settings.broker_url is None or is_redis_broker(settings.broker_url)
    if redis_broker and settings.retry_cap >= settings.visibility_timeout:
        # Redis hands an unacked message to another worker after the visibility timeout:
        # a retry counting down for longer would run twice.
        raise ConfigError("VOICECODE_RETRY_CAP", f"must be below REDIS_VISIBILITY_TIMEOUT ({settings.visibility_timeout}) "
                                                 f"with a Redis broker, got {settings.retry_cap:g}")


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build and validate :class:`Settings` from ``env`` (default: the process environment)."""
    env = os.environ if env is None else env
    default_rate = parse_rate("IHUYI_RATE_LIMIT", env.get("IHUYI_RATE_LIMIT") or "10/s")
    settings = Settings(
        broker_url=_url(env, "CELERY_BROKER_URL", ("redis", "rediss", "redis+socket", "sentinel", "amqp", "amqps",
                                                   "pyamqp")),
        result_backend=_url(env, "CELERY_RESULT_BACKEND", ("redis", "rediss", "redis+socket", "sentinel")),
        redis_url=_url(env, "REDIS_URL", ("redis", "rediss", "unix", "sentinel")),
        api_url=_url(env, "IHUYI_API_URL", ("http", "https")) or DEFAULT_API_URL,
        accounts=_accounts(env, default_rate),
        password_mode=_choice(env, "IHUYI_PASSWORD_MODE", "dynamic", ("dynamic", "apikey")),
        reply_format=_choice(env, "IHUYI_REPLY_FORMAT", "xml", ("xml", "json")),
        connect_timeout=_number(env, "IHUYI_CONNECT_TIMEOUT", "3.05", float, 0.01, 60),
        read_timeout=_number(env, "IHUYI_READ_TIMEOUT", "10", float, 0.01, 300),
        code_ttl=_number(env, "VOICE_CODE_TTL", DEFAULT_CODE_TTL, int, 1, MAX_TTL),
        max_attempts=_number(env, "VOICECODE_MAX_ATTEMPTS", "6", int, 1, 100),
        retry_base=_number(env, "VOICECODE_RETRY_BASE", "1", float, 0, 3600),
        retry_cap=_number(env, "VOICECODE_RETRY_CAP", "30", float, 0, 3600),
        mobile_throttle=parse_throttle("MOBILE_THROTTLE", env.get("MOBILE_THROTTLE", DEFAULT_MOBILE_THROTTLE)),
        requester_throttle=parse_throttle("REQUESTER_THROTTLE", env.get("REQUESTER_THROTTLE",
                                                                        DEFAULT_REQUESTER_THROTTLE)),
        range_guard=parse_range_guard(env),
        sentry_dsn=_sentry_dsn(env),
        sentry_environment=_sentry_environment(env),
        sentry_traces_sample_rate=_number(env, "SENTRY_TRACES_SAMPLE_RATE", "0.01", float, 0, 1),
        alert_dedup_seconds=_number(env, "ALERT_DEDUP_SECONDS", "3600", int, 1, 30 * 86400),
        balance_alert_threshold=_number(env, "BALANCE_ALERT_THRESHOLD", "100", int, 0, 10**9),
        balance_check_seconds=_number(env, "BALANCE_CHECK_SECONDS", "300", float, 1, 86400),
        account_probe_seconds=_number(env, "ACCOUNT_PROBE_SECONDS", "60", float, 1, 86400),
        flower_basic_auth=_basic_auth(env),
        flower_port=_number(env, "FLOWER_PORT", "5555", int, 1, 65535),
        flower_address=parse_host("FLOWER_ADDRESS", env.get("FLOWER_ADDRESS") or "127.0.0.1"),
        metrics_basic_auth=_basic_auth(env, "METRICS_BASIC_AUTH"),
        metrics_port=_number(env, "METRICS_PORT", "9808", int, 1, 65535),
        metrics_address=parse_host("METRICS_ADDRESS", env.get("METRICS_ADDRESS") or "127.0.0.1"),
        host=_host(env),
        state_dir=_state_dir(env),
        visibility_timeout=_number(env, "REDIS_VISIBILITY_TIMEOUT", "120", int, 10, MAX_TTL),
        worker_pool=_choice(env, "WORKER_POOL", "threads", WORKER_POOLS,
                            " (gevent and eventlet are not supported: use threads)"),
        # A send mostly waits on ihuyi: a process's threads cap it at WORKER_CONCURRENCY ÷ ihuyi's
        # latency sends/s. 64 at 100 ms is about what one core's CPU sends (docs/performance.md).
        worker_concurrency=_number(env, "WORKER_CONCURRENCY", "64", int, 1, 1000),
        worker_processes=_number(env, "WORKER_PROCESSES", str(usable_cores()), int, 1, 256),
        **dict(zip(("sentinel_master", "wait_replicas"), _sentinel(env))),
        **dict(zip(("queue_type", "delivery_limit"), _rabbitmq_queues(env))),
    )
    _check_together(settings)
    return settings


@functools.cache
def get_settings() -> Settings:
    """The process's settings: the environment, with a ``.env`` file filling gaps.

    The file is ``VOICECODE_ENV_FILE`` (default ``.env`` in the working directory).
    """
    _load_env_file()
    return load_settings()


def load_producer_settings(env: Mapping[str, str] | None = None) -> ProducerSettings:
    """Build and validate :class:`ProducerSettings` from ``env`` (default: the process environment)."""
    env = os.environ if env is None else env
    configured = env.get("IHUYI_APIID", "").strip() or env.get("IHUYI_ACCOUNTS", "").strip()
    default_rate = parse_rate("IHUYI_RATE_LIMIT", env.get("IHUYI_RATE_LIMIT") or "10/s")
    return ProducerSettings(
        broker_url=_url(env, "CELERY_BROKER_URL", ("redis", "rediss", "redis+socket", "sentinel", "amqp", "amqps",
                                                   "pyamqp")),
        result_backend=_url(env, "CELERY_RESULT_BACKEND", ("redis", "rediss", "redis+socket", "sentinel")),
        redis_url=_url(env, "REDIS_URL", ("redis", "rediss", "unix", "sentinel")),
        state_dir=_state_dir(env),
        code_ttl=_number(env, "VOICE_CODE_TTL", "300", int, 1, MAX_TTL) if "VOICE_CODE_TTL" in env else None,
        mobile_throttle=(parse_throttle("MOBILE_THROTTLE", env["MOBILE_THROTTLE"]) if "MOBILE_THROTTLE" in env
                         else None),
        verify_secret=_verify_secret(env),
        verify_max_attempts=_number(env, "VERIFY_MAX_ATTEMPTS", "5", int, 1, 100),
        accounts=tuple(_accounts(env, default_rate)) if configured else (),
        **dict(zip(("sentinel_master", "wait_replicas"), _sentinel(env))),
        **dict(zip(("queue_type", "delivery_limit"), _rabbitmq_queues(env))),
    )


@functools.cache
def get_producer_settings() -> ProducerSettings:
    """The producer's settings: the environment, with the ``.env`` file filling gaps (as :func:`get_settings`)."""
    _load_env_file()
    return load_producer_settings()


def _load_env_file() -> None:
    from dotenv import load_dotenv

    load_dotenv(os.environ.get("VOICECODE_ENV_FILE") or Path.cwd() / ".env", override=False)
