"""Fixtures for the real parts: Redis, RabbitMQ, the sandbox and worker processes.

The session's own Redis is started here before any test module is imported, and stopped (with
the session's RabbitMQ vhost deleted) at the end: see ``tests/servers.py``. Without RabbitMQ
or ``rabbitmqctl`` the RabbitMQ tests are skipped locally and fail under ``CI=true``
(``.ci/run`` starts the servers first).
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ihuyi.sandbox import Sandbox
from tests import servers
from tests.support import SANDBOX_ACCOUNTS, Stack, base_env, make_backend

BACKENDS = ("embedded", "redis", "rabbitmq")
#: Fixtures that start real worker (or Flower) processes: the tests that use them are the
#: ``e2e`` tier, left out of ``make test-fast``.
E2E_FIXTURES = frozenset({"stack", "poisoned", "input_stack", "hostile", "flower"})


def pytest_configure(config: pytest.Config) -> None:
    servers.session_redis()  # up before collection imports the modules that name its URLs


def pytest_unconfigure(config: pytest.Config) -> None:
    servers.stop_all()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)


def require_servers(name: str) -> None:
    """Skip (fail under ``CI=true``) a test of the ``rabbitmq`` backend without the session's vhost.

    The other backends need only the session's own Redis, which is always there.
    """
    if name != "rabbitmq":
        return
    try:
        servers.rabbitmq_vhost()
    except servers.Unavailable as exc:
        message = f"rabbitmq backend: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SANDBOX_ACCOUNTS, slow_ms=3000) as box:
        yield box


@pytest.fixture(autouse=False)
def fresh_sandbox(sandbox: Sandbox) -> Sandbox:
    sandbox.reset()
    return sandbox


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short temporary directory (unix socket paths must stay under 108 bytes)."""
    with tempfile.TemporaryDirectory(prefix="vc-", dir="/tmp") as tmp:
        yield Path(tmp)


@pytest.fixture(scope="module", params=BACKENDS)
def stack(request: pytest.FixtureRequest, sandbox: Sandbox) -> Iterator[Stack]:
    """A backend with one running worker, shared by a module's tests; stopped at the end.

    A test module may set ``STACK_ENV`` (a dict) to change the service's environment.
    """
    require_servers(request.param)
    with tempfile.TemporaryDirectory(prefix="vc-", dir="/tmp") as tmp:
        backend = make_backend(request.param, Path(tmp))
        backend.flush()
        env = base_env(sandbox.url, **backend.env, **getattr(request.module, "STACK_ENV", {}))
        stack = Stack(backend, env, Path(tmp))
        stack.start_worker()
        try:
            yield stack
        finally:
            stack.stop_workers()
            if request.param == "embedded":
                from worker.stores import embedded

                embedded.stop(Path(backend.env["VOICECODE_STATE_DIR"]))
