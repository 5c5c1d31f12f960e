"""The Lua scripts of the stores: each kept in a ``.lua`` file beside the store that runs it.

Two directives, each a line of its own:

- ``--! now`` becomes the preamble that reads the Redis server's clock into ``now`` (seconds,
  microsecond precision), so every worker and host decides on one clock;
- ``--! include <name>`` becomes the text of the stores' ``<name>.lua``: the functions several
  scripts share (``*_lib.lua``), so one script can do in one step what several stores decide.
"""
from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import redis
from redis.commands.core import Script

_HERE = Path(__file__).parent
_NOW = """local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000"""
_INCLUDE = re.compile(r"^--! include (\w+)$", re.M)


@cache
def source(name: str, directory: Path = _HERE) -> str:
    """The text of ``<name>.lua`` in ``directory`` (the stores'), its directives replaced."""
    text = (directory / f"{name}.lua").read_text().replace("--! now", _NOW)
    return _INCLUDE.sub(lambda m: source(m.group(1)), text)


def register(client: redis.Redis, name: str, directory: Path = _HERE) -> Script:
    """``<name>.lua`` registered on ``client``: called like a function, loaded on first use."""
    return client.register_script(source(name, directory))

