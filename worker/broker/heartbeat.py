"""Who took which Redis message, and the messages of workers that died, given back in seconds.

Every worker process keeps a heartbeat on the broker Redis (worker/stores/heartbeats.py: a
key with a 10 s TTL rewritten every 2 s by a thread of its own). The take script
(worker/broker/take.lua) records, in the step that moves a message into kombu's ``unacked``
hash, that the taking process owns its delivery tag; kombu's ack, reject and restore drop that
record with the ``unacked`` entry (worker/broker/transport.py). Every ``RECOVER_SECONDS`` each
worker's event loop runs :meth:`Recovery.claim_dead` (recover.lua): the tags of owners whose
heartbeat has expired become the caller's, in one atomic step so that only one worker gives
each back, and the caller puts each on its queue with kombu's own ``restore_by_tag``. A
killed worker's messages are back 8 to 11 s after its death, where kombu's visibility timeout
(120 s), which stays as the backstop, took two minutes. As with Sidekiq Pro's super_fetch and
Dramatiq's Redis heartbeats; here nothing but the death of the process (or the whole process
standing still for over 8 s) stops its heartbeat, so a live worker, however slow, keeps what
it took.

Keys, beside kombu's ``unacked`` (names follow its ``unacked_key``, ``unacked`` by default):

- ``unacked_owner``: hash, delivery tag -> the identity of the process that holds it;
- ``unacked_owned:<identity>``: set, the tags that process took (a tag acked, or restored by
  someone else, may linger here until the owner dies: the hash is what counts);
- ``unacked_owners``: set, the identities that took messages, forgotten once dead and empty;
- ``voicecode:heartbeat:<identity>``: the heartbeat.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import redis

from worker.stores import scripts
from worker.stores.heartbeats import KEY_PREFIX as HEARTBEAT_PREFIX

#: How often each worker looks for dead owners (one script call, one EXISTS per owner).
RECOVER_SECONDS = 1.0
#: The most messages one look gives back; the rest wait for the next.
RECOVER_MAX = 1000


@dataclass(frozen=True)
class OwnerKeys:
    """Where the owner of each unacked message is recorded, for kombu's ``unacked_key``."""

    owner_of: str
    owners: str
    owned_prefix: str

    @classmethod
    def of(cls, unacked_key: str) -> OwnerKeys:
        return cls(f"{unacked_key}_owner", f"{unacked_key}_owners", f"{unacked_key}_owned:")

    def owned(self, identity: str) -> str:
        """The set of tags ``identity`` took."""
        return self.owned_prefix + identity


@dataclass(frozen=True)
class Claimed:
    """What one look found: the owners found dead, and the tags now the caller's to give back."""

    dead: list[str]
    tags: list[str]


class Recovery:
    """The recovery script on one broker client."""

    def __init__(self, client: redis.Redis, keys: OwnerKeys) -> None:
        self.client = client
        self.keys = keys
        self._claim = scripts.register(client, "recover", Path(__file__).parent)

    def claim_dead(self, identity: str, limit: int = RECOVER_MAX) -> Claimed:
        """Make the tags of dead owners ``identity``'s (a live process's), up to ``limit``."""
        dead, tags = self._claim(keys=[self.keys.owner_of, self.keys.owners, HEARTBEAT_PREFIX + identity,
                                       self.keys.owned(identity)],
                                 args=[identity, HEARTBEAT_PREFIX, self.keys.owned_prefix, limit])
        return Claimed([owner.decode() for owner in dead], [tag.decode() for tag in tags])
