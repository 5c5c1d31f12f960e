"""A stand-in for Sentry on loopback: it takes what the real sentry-sdk transport posts.

The worker and beat processes under test run the real SDK with ``SENTRY_DSN`` pointing
here. Every envelope body is kept as received (after undoing gzip or brotli), so tests can
scan each byte for secrets, and parsed into items: events, transactions, logs, check-ins.
"""
from __future__ import annotations

import gzip
import json
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PUBLIC_KEY = "0123456789abcdef0123456789abcdef"
PROJECT = 42


def parse_envelope(body: bytes) -> list[tuple[dict[str, Any], Any]]:
    """The (item header, payload) pairs of one envelope; payloads are JSON-decoded where they can be."""
    _, _, rest = body.partition(b"\n")
    items = []
    while rest.strip():
        line, _, rest = rest.partition(b"\n")
        header = json.loads(line)
        if "length" in header:
            payload, rest = rest[: header["length"]], rest[header["length"]:].removeprefix(b"\n")
        else:
            payload, _, rest = rest.partition(b"\n")
        try:
            items.append((header, json.loads(payload)))
        except ValueError:
            items.append((header, payload))
    return items


def decode(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "br":
        import brotli  # only sent when the SDK finds the module, so it is here too

        return brotli.decompress(body)
    return body


class SentryReceiver:
    """Serves ``POST /api/<project>/envelope/`` on 127.0.0.1 and answers 200 to each, after
    ``reply_delay`` seconds (a Sentry far away)."""

    def __init__(self, reply_delay: float = 0.0) -> None:
        self.reply_delay = reply_delay
        self._lock = threading.Lock()
        self._bodies: list[bytes] = []
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.receiver = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> SentryReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def dsn(self) -> str:
        return f"http://{PUBLIC_KEY}@127.0.0.1:{self._server.server_address[1]}/{PROJECT}"

    def _add(self, body: bytes) -> None:
        with self._lock:
            self._bodies.append(body)

    def clear(self) -> None:
        with self._lock:
            self._bodies.clear()

    @property
    def bodies(self) -> list[bytes]:
        with self._lock:
            return list(self._bodies)

    def items(self, kind: str) -> list[Any]:
        """Every payload of item type ``kind`` received so far (``event``, ``transaction``, ``check_in``, ...)."""
        return [payload for body in self.bodies for header, payload in parse_envelope(body)
                if header.get("type") == kind]

    def events(self) -> list[dict[str, Any]]:
        return self.items("event")

    def transactions(self) -> list[dict[str, Any]]:
        return self.items("transaction")

    def check_ins(self) -> list[dict[str, Any]]:
        return self.items("check_in")

    def logs(self) -> list[dict[str, Any]]:
        """Every Sentry log, with its attributes flattened to plain values."""
        return [{**entry, "attributes": {k: v.get("value") for k, v in entry.get("attributes", {}).items()}}
                for batch in self.items("log") for entry in batch.get("items", [])]

    def outcome_logs(self) -> list[dict[str, Any]]:
        """The outcome log lines, one per send's result (``voice code …``)."""
        return [log for log in self.logs() if log["body"].startswith("voice code ")]

    def alerts(self) -> Iterator[dict[str, Any]]:
        """The alert events (fingerprinted ``["voicecode", kind, account]``)."""
        return (e for e in self.events() if e.get("fingerprint", [None])[0] == "voicecode")


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A sender that goes away mid-request (a worker stopped) is no error here; anything else is printed."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        receiver = self.server.receiver  # type: ignore[attr-defined]
        receiver._add(decode(body, self.headers.get("Content-Encoding", "")))
        time.sleep(receiver.reply_delay)
        reply = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        pass
