"""The producer's end-to-end stack: a real worker on the embedded default, Redis and RabbitMQ."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from config.settings import load_producer_settings
from ihuyi.sandbox import Sandbox
from tasks.producer import Producer
from tests.conftest import BACKENDS
from tests.support import Stack
from tests.tasks.backends import own_stack, producer_env


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "producer_stack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="module", params=BACKENDS)
def producer_stack(request: pytest.FixtureRequest, sandbox: Sandbox) -> Iterator[Stack]:
    """One worker per backend, shared by a module's tests. The module may set ``STACK_ENV`` (the
    service's environment) and ``WORKER_ARGS`` (the worker's command line)."""
    with own_stack(request.param, sandbox, *getattr(request.module, "WORKER_ARGS", ()),
                   **getattr(request.module, "STACK_ENV", {})) as stack:
        yield stack


@pytest.fixture(scope="module")
def producer(producer_stack: Stack) -> Producer:
    """A producer in this process with the web app's environment: broker and state URLs, no APIKEY."""
    return Producer(load_producer_settings(producer_env(producer_stack)))
