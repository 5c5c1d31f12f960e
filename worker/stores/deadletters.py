"""The dead-letter store: every request the worker gave up on, for a person to look at or replay.

Records live in the shared Redis (durable as far as that Redis persists: the embedded
default writes an append-only file). Each has two parts:

- the *record*, safe to show: reason, ihuyi code and msg, account, masked mobile,
  attempts, first and last attempt time, task id and request id;
- the *payload* a replay needs (the full number and the code). It is stored under its own
  key that expires when the code does: a replay never refreshes a code's TTL, so once
  the code is dead nobody needs the secret, and it is not kept.

Listing reads; it never consumes.
"""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

INDEX = "voicecode:deadletters"
RECORD = "voicecode:deadletter:"
PAYLOAD = "voicecode:deadletter-payload:"


@dataclass(frozen=True)
class DeadLetter:
    reason: str
    account: str | None
    mobile: str  # masked
    attempts: int
    task_id: str | None
    request_id: str | None
    code: int | None = None
    msg: str = ""
    detail: str = ""
    first_attempt: float | None = None
    last_attempt: float | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    created_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class DeadLetterStore:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    def add(self, letter: DeadLetter, payload: dict[str, Any] | None = None, payload_expires_at: float | None = None) -> None:
        """Store ``letter``; ``payload`` (what a replay needs) is kept until ``payload_expires_at``."""
        pipe = self._redis.pipeline()
        pipe.set(RECORD + letter.id, json.dumps(letter.to_dict(), ensure_ascii=False))
        pipe.zadd(INDEX, {letter.id: letter.created_at})
        if payload is not None and payload_expires_at is not None and payload_expires_at > time.time():
            pipe.set(PAYLOAD + letter.id, json.dumps(payload), exat=int(payload_expires_at) + 1)
        pipe.execute()

    def list(self) -> list[DeadLetter]:
        """Every record, oldest first."""
        ids = [i.decode() for i in self._redis.zrange(INDEX, 0, -1)]
        return [letter for letter in self._load(ids) if letter is not None]

    def get(self, letter_id: str) -> DeadLetter | None:
        return next(iter(self._load([letter_id])), None)

    def payload(self, letter_id: str) -> dict[str, Any] | None:
        """What a replay needs, or None once the code has expired (or it never had one)."""
        raw = self._redis.get(PAYLOAD + letter_id)
        return None if raw is None else json.loads(raw)

    def remove(self, letter_id: str) -> bool:
        pipe = self._redis.pipeline()
        pipe.zrem(INDEX, letter_id)
        pipe.delete(RECORD + letter_id, PAYLOAD + letter_id)
        return bool(pipe.execute()[0])

    def purge(self) -> int:
        """Remove every record; return how many there were."""
        ids = [i.decode() for i in self._redis.zrange(INDEX, 0, -1)]
        for letter_id in ids:
            self.remove(letter_id)
        return len(ids)

    def _load(self, ids: list[str]) -> Iterator[DeadLetter | None]:
        if not ids:
            return iter(())
        raws = self._redis.mget([RECORD + i for i in ids])
        return (None if raw is None else DeadLetter(**json.loads(raw)) for raw in raws)
