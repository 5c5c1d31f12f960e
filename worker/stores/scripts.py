"""The Lua scripts of the stores: each kept in a ``.lua`` file beside the store that runs it.

Scripts that need the time start with ``--! now``: that line becomes the preamble that reads
the Redis server's clock into ``now`` (seconds, microsecond precision), so every worker and
host decides on one clock.
"""
from __future__ import annotations

from functools import cache
from pathlib import Path

import redis
from redis.commands.core import Script

_HERE = Path(__file__).parent
_NOW = """local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000"""


@cache
def source(name: str, directory: Path = _HERE) -> str:
    """The text of ``<name>.lua`` in ``directory`` (the stores'), with ``--! now`` replaced by the clock preamble."""
    return (directory / f"{name}.lua").read_text().replace("--! now", _NOW)


def register(client: redis.Redis, name: str, directory: Path = _HERE) -> Script:
    """``<name>.lua`` registered on ``client``: called like a function, loaded on first use."""
    return client.register_script(source(name, directory))
