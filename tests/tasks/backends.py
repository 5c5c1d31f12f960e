"""Stacks for the producer's end-to-end tests, on Redis databases of their own: 3 (broker and
state on Redis) and 4 (state, with RabbitMQ as broker), so runs of other tests do not flush them."""
from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ihuyi.sandbox import Sandbox
from tests.conftest import require_servers
from tests.support import Stack, base_env, make_backend
from worker.stores import embedded

REDIS_DB = 3


@contextmanager
def own_stack(name: str, sandbox: Sandbox, *worker_args: str, **env: str) -> Iterator[Stack]:
    """The flushed backend ``name`` with one worker running (``worker_args`` added to its command line)."""
    require_servers(name)
    with tempfile.TemporaryDirectory(prefix="vc-", dir="/tmp") as tmp:
        backend = make_backend(name, Path(tmp), redis_db=REDIS_DB)
        backend.flush()
        stack = Stack(backend, base_env(sandbox.url, **backend.env, **env), Path(tmp))
        try:
            stack.start_worker(*worker_args)
            yield stack
        finally:
            stack.stop_workers()
            if name == "embedded":
                embedded.stop(Path(backend.env["VOICECODE_STATE_DIR"]))


def producer_env(stack: Stack) -> dict[str, str]:
    """The service's environment as a web app has it: no ihuyi account, so no APIKEY."""
    return {name: value for name, value in stack.env.items() if not name.startswith("IHUYI_")}
