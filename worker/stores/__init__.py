"""The Redis stores: the state every worker process and host shares, each a class over its Lua scripts."""
