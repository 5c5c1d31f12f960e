"""Every setting of the service, read from the environment and validated at start-up.

A bad value raises :class:`ConfigError` naming the variable and the problem; the entry
points turn it into one line on stderr and a non-zero exit.
"""
from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_API_URL = "http://api.voice.ihuyi.com/webservice/voice.php"
DEFAULT_ACCOUNT = "default"


class ConfigError(ValueError):
    """A configuration variable is missing or has a bad value."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


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
    sentry_dsn: str | None
    sentry_environment: str
    sentry_traces_sample_rate: float
    alert_dedup_seconds: int
    balance_alert_threshold: int
    balance_check_seconds: float
    account_probe_seconds: float
    flower_basic_auth: str | None
    state_dir: Path
    visibility_timeout: int

    @property
    def embedded(self) -> bool:
        """True when no server was configured and the embedded Redis stands in."""
        return not (self.broker_url or self.redis_url)


_RATE = re.compile(r"^\s*(\d+)\s*/\s*(s|m|h)\s*$")
_PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_WINDOW = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*(s|m|h|d)\s*$")
_WINDOW_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(variable: str, text: str, burst: object = None) -> Rate:
    """Parse ``N/s``, ``N/m`` or ``N/h``; the burst defaults to one second's worth (at least 1)."""
    match = _RATE.match(str(text))
    if not match or int(match[1]) <= 0:
        raise ConfigError(variable, f"expected a rate like 10/s or 600/m, got {text!r}")
    limit, period = int(match[1]), _PERIODS[match[2]]
    if burst is None:
        burst = max(1, int(limit / period))
    if not isinstance(burst, int) or isinstance(burst, bool) or burst <= 0:
        raise ConfigError(variable, f"burst must be a positive integer, got {burst!r}")
    return Rate(limit, period, burst)


def parse_throttle(variable: str, text: str) -> tuple[Window, ...]:
    """Parse per-number windows such as ``1/60s,5/h,10/d``; an empty value turns throttling off."""
    windows = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = _WINDOW.match(part)
        if not match or int(match[1]) <= 0 or match[2] == "0":
            raise ConfigError(variable, f"expected windows like 1/60s,5/h,10/d, got {part!r}")
        seconds = int(match[2] or 1) * _WINDOW_UNITS[match[3]]
        windows.append(Window(int(match[1]), seconds))
    return tuple(sorted(windows, key=lambda w: w.seconds))


def _number(env: Mapping[str, str], variable: str, default: str, kind: type, minimum: float):
    raw = env.get(variable) or default
    try:
        value = kind(raw)
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise ConfigError(variable, f"expected {noun}, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(variable, f"must be at least {minimum}, got {raw!r}")
    return value


def _choice(env: Mapping[str, str], variable: str, default: str, choices: tuple[str, ...]) -> str:
    value = (env.get(variable) or default).strip().lower()
    if value not in choices:
        raise ConfigError(variable, f"must be one of {', '.join(choices)}, got {value!r}")
    return value


def _url(env: Mapping[str, str], variable: str, schemes: tuple[str, ...]) -> str | None:
    value = (env.get(variable) or "").strip()
    if value and not value.startswith(tuple(f"{s}://" for s in schemes)):
        raise ConfigError(variable, f"must start with one of {', '.join(schemes)}://")
    return value or None


def _accounts(env: Mapping[str, str], default_rate: Rate) -> dict[str, Account]:
    accounts: dict[str, Account] = {}
    apiid, apikey = env.get("IHUYI_APIID", "").strip(), env.get("IHUYI_APIKEY", "").strip()
    if apiid or apikey:
        if not (apiid and apikey):
            raise ConfigError("IHUYI_APIKEY" if apiid else "IHUYI_APIID", "set both IHUYI_APIID and IHUYI_APIKEY")
        accounts[DEFAULT_ACCOUNT] = Account(DEFAULT_ACCOUNT, apiid, apikey, default_rate)
    raw = env.get("IHUYI_ACCOUNTS", "").strip()
    if raw:
        try:
            table = json.loads(raw)
        except ValueError as exc:
            raise ConfigError("IHUYI_ACCOUNTS", f"not valid JSON ({exc.msg} at char {exc.pos})") from None
        if not isinstance(table, dict):
            raise ConfigError("IHUYI_ACCOUNTS", "must be a JSON object of name -> account")
        for name, spec in table.items():
            where = f"account {name!r}"
            if not isinstance(spec, dict) or not spec.get("apiid") or not spec.get("apikey"):
                raise ConfigError("IHUYI_ACCOUNTS", f"{where} needs non-empty apiid and apikey")
            unknown = set(spec) - {"apiid", "apikey", "rate_limit", "burst", "fallback"}
            if unknown:
                raise ConfigError("IHUYI_ACCOUNTS", f"{where} has unknown keys {sorted(unknown)}")
            rate = parse_rate("IHUYI_ACCOUNTS", spec.get("rate_limit", str(default_rate)), spec.get("burst"))
            accounts[name] = Account(name, str(spec["apiid"]), str(spec["apikey"]), rate, spec.get("fallback"))
    for account in accounts.values():
        if account.fallback is not None and (account.fallback not in accounts or account.fallback == account.name):
            raise ConfigError("IHUYI_ACCOUNTS", f"account {account.name!r} names unknown fallback {account.fallback!r}")
    if not accounts:
        raise ConfigError("IHUYI_APIID", "no ihuyi account configured: set IHUYI_APIID and IHUYI_APIKEY, or IHUYI_ACCOUNTS")
    return accounts


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build and validate :class:`Settings` from ``env`` (default: the process environment)."""
    env = os.environ if env is None else env
    default_rate = parse_rate("IHUYI_RATE_LIMIT", env.get("IHUYI_RATE_LIMIT") or "10/s")
    auth = (env.get("FLOWER_BASIC_AUTH") or "").strip() or None
    if auth is not None and not re.match(r"^[^:\s]+:\S+$", auth):
        raise ConfigError("FLOWER_BASIC_AUTH", "expected user:password")
    api_url = _url(env, "IHUYI_API_URL", ("http", "https")) or DEFAULT_API_URL
    return Settings(
        broker_url=_url(env, "CELERY_BROKER_URL", ("redis", "rediss", "redis+socket", "amqp", "amqps", "pyamqp")),
        result_backend=_url(env, "CELERY_RESULT_BACKEND", ("redis", "rediss", "redis+socket")),
        redis_url=_url(env, "REDIS_URL", ("redis", "rediss", "unix")),
        api_url=api_url,
        accounts=_accounts(env, default_rate),
        password_mode=_choice(env, "IHUYI_PASSWORD_MODE", "dynamic", ("dynamic", "apikey")),
        reply_format=_choice(env, "IHUYI_REPLY_FORMAT", "xml", ("xml", "json")),
        connect_timeout=_number(env, "IHUYI_CONNECT_TIMEOUT", "3.05", float, 0.01),
        read_timeout=_number(env, "IHUYI_READ_TIMEOUT", "10", float, 0.01),
        code_ttl=_number(env, "VOICE_CODE_TTL", "300", int, 1),
        max_attempts=_number(env, "VOICECODE_MAX_ATTEMPTS", "6", int, 1),
        retry_base=_number(env, "VOICECODE_RETRY_BASE", "1", float, 0),
        retry_cap=_number(env, "VOICECODE_RETRY_CAP", "30", float, 0),
        mobile_throttle=parse_throttle("MOBILE_THROTTLE", env.get("MOBILE_THROTTLE", "1/60s,5/h,10/d")),
        sentry_dsn=(env.get("SENTRY_DSN") or "").strip() or None,
        sentry_environment=(env.get("SENTRY_ENVIRONMENT") or "production").strip(),
        sentry_traces_sample_rate=_number(env, "SENTRY_TRACES_SAMPLE_RATE", "0.1", float, 0),
        alert_dedup_seconds=_number(env, "ALERT_DEDUP_SECONDS", "3600", int, 1),
        balance_alert_threshold=_number(env, "BALANCE_ALERT_THRESHOLD", "100", int, 0),
        balance_check_seconds=_number(env, "BALANCE_CHECK_SECONDS", "300", float, 1),
        account_probe_seconds=_number(env, "ACCOUNT_PROBE_SECONDS", "60", float, 1),
        flower_basic_auth=auth,
        state_dir=Path(env.get("VOICECODE_STATE_DIR") or Path.home() / ".local/state/voicecode").expanduser().absolute(),
        visibility_timeout=_number(env, "REDIS_VISIBILITY_TIMEOUT", "120", int, 10),
    )


@functools.cache
def get_settings() -> Settings:
    """The process's settings: the environment, with a ``.env`` file filling gaps.

    The file is ``VOICECODE_ENV_FILE`` (default ``.env`` in the working directory).
    """
    from dotenv import load_dotenv

    load_dotenv(os.environ.get("VOICECODE_ENV_FILE") or Path.cwd() / ".env", override=False)
    return load_settings()
