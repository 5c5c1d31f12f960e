"""Canaries on the machine's own Redis and RabbitMQ: proof that the test suite left them alone.

``plant TOKEN``: a key ``voicecode-ci-canary`` in each of the 16 databases of 127.0.0.1:6379 and
a durable queue ``voicecode-ci-canary`` holding one persistent message on the default vhost ``/``.
``check TOKEN``: every key and the message still there, unchanged; names what was lost, exit 1.
``remove``: delete them (whatever is left). Run with the project's venv python (redis, kombu).
"""
from __future__ import annotations

import sys

import kombu
import redis

REDIS_URL = "redis://127.0.0.1:6379/{db}"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
NAME = "voicecode-ci-canary"
DATABASES = range(16)


def value(token: str, db: int) -> str:
    return f"{token}-{db}"


def plant(token: str) -> None:
    remove()  # a canary queue an interrupted run left behind would hold a second message
    for db in DATABASES:
        with redis.Redis.from_url(REDIS_URL.format(db=db)) as client:
            client.set(NAME, value(token, db))
    with kombu.Connection(AMQP_URL) as conn:
        queue = kombu.Queue(NAME, routing_key=NAME, durable=True, auto_delete=False)
        with conn.Producer() as producer:
            producer.publish(token.encode(), routing_key=NAME, declare=[queue], delivery_mode=2,
                             content_type="application/data", content_encoding="binary")


def check(token: str) -> list[str]:
    """What is missing or changed, each as a line."""
    lost = []
    for db in DATABASES:
        with redis.Redis.from_url(REDIS_URL.format(db=db)) as client:
            found = client.get(NAME)
        if found != value(token, db).encode():
            lost.append(f"Redis 127.0.0.1:6379 db {db}: key {NAME} is {found!r}, was {value(token, db)!r}")
    with kombu.Connection(AMQP_URL) as conn:
        channel = conn.channel()
        try:
            _, count, _ = channel.queue_declare(NAME, passive=True)
        except conn.channel_errors:
            return lost + [f"RabbitMQ vhost /: queue {NAME} is gone"]
        message = channel.basic_get(NAME, no_ack=False)
        if message is not None:
            channel.basic_reject(message.delivery_tag, requeue=True)
        body = None if message is None else message.body
        if count != 1 or body != token.encode():
            lost.append(f"RabbitMQ vhost /: queue {NAME} holds {count} message(s), first {body!r}, "
                        f"was 1 message {token!r}")
    return lost


def remove() -> None:
    for db in DATABASES:
        try:
            with redis.Redis.from_url(REDIS_URL.format(db=db)) as client:
                client.delete(NAME)
        except redis.RedisError:
            pass
    try:
        with kombu.Connection(AMQP_URL) as conn:
            conn.channel().queue_delete(NAME)
    except Exception:  # noqa: BLE001 - gone already, or RabbitMQ down: nothing to remove
        pass


def main(argv: list[str]) -> int:
    action, token = argv[0], (argv[1] if len(argv) > 1 else "")
    if action == "plant":
        plant(token)
    elif action == "check":
        lost = check(token)
        for line in lost:
            print(f"CANARY LOST: {line}", file=sys.stderr)
        if lost:
            print("The test suite touched data it did not create.", file=sys.stderr)
            return 1
        print(f"canaries intact: {len(DATABASES)} Redis databases, 1 RabbitMQ queue on vhost /")
    elif action == "remove":
        remove()
    else:
        raise SystemExit(f"usage: {sys.argv[0]} plant TOKEN | check TOKEN | remove")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
