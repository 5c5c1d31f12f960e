"""Redis URLs behind Sentinel, in the form kombu and Celery read them.

``sentinel://host1:26379;sentinel://host2:26379/0``: each sentinel, ``;`` between them; the
database and the primary's username and password come from the first. The master name is a
setting of its own (``REDIS_SENTINEL_MASTER``), as kombu's and Celery's ``master_name``
transport option.
"""
from __future__ import annotations

from urllib.parse import unquote, urlsplit

SENTINEL_SCHEME = "sentinel://"
DEFAULT_SENTINEL_PORT = 26379


def is_sentinel(url: str) -> bool:
    return url.startswith(SENTINEL_SCHEME)


def is_redis_broker(url: str) -> bool:
    """True for a broker URL kombu's Redis transport serves: ``redis://``, ``rediss://``,
    ``redis+socket://`` (the embedded Redis) or ``sentinel://``."""
    return url.startswith(("redis", SENTINEL_SCHEME))


def sentinel_hosts(url: str) -> tuple[list[tuple[str, int]], int, str | None, str | None]:
    """The sentinels of a ``sentinel://h1:26379;sentinel://h2:26379/0`` URL, with the database,
    username and password (for the primary) of the first: ``ValueError`` naming what is wrong."""
    hosts: list[tuple[str, int]] = []
    db, username, password = 0, None, None
    for i, part in enumerate(p.strip() for p in url.split(";")):
        if not part.startswith(SENTINEL_SCHEME):
            raise ValueError(f"each address must start with {SENTINEL_SCHEME}, got {part[:40]!r}")
        parsed = urlsplit(part)
        try:
            port = parsed.port or DEFAULT_SENTINEL_PORT
        except ValueError:
            raise ValueError(f"bad port in {parsed.netloc.rpartition('@')[2][:40]!r}") from None
        if not parsed.hostname:
            raise ValueError(f"no host in {part[:40]!r}")
        hosts.append((parsed.hostname, port))
        if i == 0:
            path = parsed.path.strip("/")
            if path and not path.isdigit():
                raise ValueError(f"the database must be a number, got {path[:20]!r}")
            db = int(path or 0)
            username = unquote(parsed.username) if parsed.username else None
            password = unquote(parsed.password) if parsed.password else None
    return hosts, db, username, password
