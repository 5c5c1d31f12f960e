"""Loaded into benchmarked worker processes (PYTHONPATH=bench/probe) when VCBENCH_PROBE_DIR is set.

Counts, per process, Redis round trips (each ``send_packed_command``: one command, or one
whole pipeline) and messages published through kombu, and writes them to
``$VCBENCH_PROBE_DIR/<pid>.json`` every 0.2 s. Not used by the product.
"""
import json
import os
import threading

_DIR = os.environ.get("VCBENCH_PROBE_DIR")
if _DIR:
    counts = {"redis_round_trips": 0, "published": 0}

    def _install() -> None:
        import kombu.messaging
        import redis.connection

        send = redis.connection.AbstractConnection.send_packed_command

        def counted_send(self, *args, **kwargs):
            counts["redis_round_trips"] += 1
            return send(self, *args, **kwargs)

        redis.connection.AbstractConnection.send_packed_command = counted_send
        publish = kombu.messaging.Producer.publish

        def counted_publish(self, *args, **kwargs):
            counts["published"] += 1
            return publish(self, *args, **kwargs)

        kombu.messaging.Producer.publish = counted_publish

    def _dump() -> None:
        path = os.path.join(_DIR, f"{os.getpid()}.json")
        while True:
            try:
                with open(path + ".tmp", "w") as f:
                    json.dump(counts, f)
                os.replace(path + ".tmp", path)
            except OSError:
                pass
            threading.Event().wait(0.2)

    def _start() -> None:
        counts.update(redis_round_trips=0, published=0)
        threading.Thread(target=_dump, daemon=True).start()

    try:
        _install()
        _start()
        os.register_at_fork(after_in_child=_start)
    except ImportError:
        pass
