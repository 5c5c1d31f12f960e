"""The ``voicecode`` command line."""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING
from typing import NoReturn, TypeVar
from urllib.parse import urlsplit

from config import ConfigError, get_settings

if TYPE_CHECKING:
    from worker.stores import Stores
from config.settings import MAX_TTL, get_producer_settings, parse_host, parse_number

T = TypeVar("T")


def _send(args: argparse.Namespace) -> int:
    from tasks.producer import enqueue_voice_code

    result = enqueue_voice_code(args.mobile, args.code, args.account, args.request_id, args.ttl, args.requester)
    print(result.id, flush=True)
    if args.wait:
        from celery.exceptions import TimeoutError as CeleryTimeout

        try:
            value = result.get(timeout=args.wait, propagate=False)
        except CeleryTimeout:
            return _fail(f"no result within {args.wait:g} s (task {result.id} is still queued or running)")
        print(json.dumps(value, ensure_ascii=False))
    return 0


def _stores() -> Stores:
    from worker.stores import Stores

    return Stores.connect(get_settings())


def _balance(args: argparse.Namespace) -> int:
    from ihuyi import IhuyiError
    from worker.ops.balance import check_one
    from worker.sending.flow import client_for

    settings = get_settings()
    names = [args.account] if args.account else list(settings.accounts)
    if args.account and args.account not in settings.accounts:
        return _fail(f"unknown account {args.account!r}")
    states = _stores().accounts
    status = 0
    for name in names:
        try:
            print(f"{name}: {check_one(client_for(settings, settings.accounts[name]), states, name)}")
        except IhuyiError as exc:
            print(f"{name}: error: {exc}", file=sys.stderr)
            status = 1
    return status


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _dead_letters(args: argparse.Namespace) -> int:
    store = _stores().dead_letters
    if args.action == "list":
        letters = store.list()
        if args.json:
            print(json.dumps([letter.to_dict() for letter in letters], ensure_ascii=False, indent=2))
            return 0
        print(f"{'id':12}  {'reason':18}  {'code':>5}  {'account':10}  {'mobile':11}  {'tries':>5}  {'last attempt':19}  task")
        for d in letters:
            print(f"{d.id:12}  {d.reason:18}  {d.code if d.code is not None else '-':>5}  {d.account or '-':10}  "
                  f"{d.mobile:11}  {d.attempts:>5}  {_when(d.last_attempt):19}  {d.task_id or '-'}")
        print(f"{len(letters)} dead letter(s)")
        return 0
    if args.action == "purge":
        print(f"purged {store.purge()} dead letter(s)")
        return 0
    from tasks.producer import NotReplayable, replay_dead_letter

    ids = [d.id for d in store.list()] if args.all else [args.id]
    if not ids[0:1] or ids == [None]:
        return _fail("name a dead-letter ID or pass --all")
    failed = 0
    for letter_id in ids:
        try:
            print(f"{letter_id}: replayed as task {replay_dead_letter(letter_id).id}")
        except (NotReplayable, ValueError) as exc:
            print(f"{letter_id}: {exc}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def _accounts(args: argparse.Namespace) -> int:
    settings, states = get_settings(), _stores().accounts
    if args.action == "resume":
        if args.name not in settings.accounts:
            return _fail(f"unknown account {args.name!r}")
        print(f"{args.name}: {'resumed' if states.resume_everywhere(args.name) else 'was not paused'}")
        return 0
    from worker.stores.guards import Guards, shown_range

    guards = Guards(_stores().redis)
    used = guards.budget_use(settings.accounts)
    print(f"{'account':12}  {'state':24}  {'rate':8}  {'fallback':10}  {'last code':>9}  {'balance':>8}  "
          f"{'today/budget':>13}")
    for state in states.snapshot(settings.accounts):
        account = settings.accounts[state.name]
        shown = "active" if state.paused is None else f"paused ({state.paused.code}) since {_when(state.paused.since)[11:]}"
        budget = f"{used[state.name]}/{account.daily_budget or '-'}"
        print(f"{state.name:12}  {shown:24}  {str(account.rate):8}  {account.fallback or '-':10}  "
              f"{'-' if state.last_code is None else state.last_code:>9}  {'-' if state.balance is None else state.balance:>8}  "
              f"{budget:>13}")
        for pause in state.host_pauses:
            print(f"{'':12}  paused on host {pause.host} ({pause.code}) since {_when(pause.since)[11:]}")
    for name, seconds in sorted(guards.blocked_ranges().items()):
        print(f"range {shown_range(name)} blocked for {seconds:.0f} s more (too many of its numbers called)")
    return 0


def _sandbox(args: argparse.Namespace) -> int:
    from ihuyi.sandbox import serve

    accounts = {a.apiid: a.apikey for a in get_settings().accounts.values()}
    serve(accounts, args.host, args.port, args.latency_ms, args.slow_ms, args.balance, drip_ms=args.drip_ms)
    return 0


#: Where ``voicecode sandbox calls`` looks when IHUYI_API_URL names no sandbox: ``voicecode sandbox``'s default.
SANDBOX_URL = "http://127.0.0.1:8099"


def _sandbox_calls(args: argparse.Namespace) -> int:
    import requests

    from ihuyi.sandbox import phone_line

    api = urlsplit(os.environ.get("IHUYI_API_URL", ""))
    # The sandbox speaks plain HTTP only: an https:// URL is ihuyi itself, which has no such list.
    url = (args.url or (f"http://{api.netloc}" if api.scheme == "http" and api.netloc else SANDBOX_URL)).rstrip("/")
    try:
        reply = requests.get(f"{url}/_sandbox/calls", params={"method": "Submit"}, timeout=5)
        reply.raise_for_status()
        calls = reply.json()
    except (requests.RequestException, ValueError):
        return _fail(f"no ihuyi sandbox answers at {url} (start one with `voicecode sandbox` or `make run`)")
    for call in calls:
        print(phone_line(call))
    if not calls:
        print(f"no calls yet at {url}")
    return 0


def _with_embedded_redis(args: argparse.Namespace) -> int:
    from cli.devstack import with_embedded_redis

    command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not command:
        return _fail("name the command to run")
    try:
        return with_embedded_redis(get_producer_settings(), command)
    except OSError as exc:
        return _fail(f"cannot run {command[0]}: {exc.strerror}")


def _flower(args: argparse.Namespace) -> int:
    settings = get_settings()
    if not settings.flower_basic_auth:
        return _fail("FLOWER_BASIC_AUTH is not set: Flower shows every task, so it never runs without a password")
    from worker.ops.flower import run

    run(settings.flower_basic_auth, args.port or settings.flower_port, args.address or settings.flower_address)


def _worker(args: argparse.Namespace) -> int:
    from cli.workers import run_workers

    return run_workers(args.processes or get_settings().worker_processes, args.celery_args)


def _metrics(args: argparse.Namespace) -> int:
    settings = get_settings()
    auth = settings.metrics_basic_auth or settings.flower_basic_auth
    if not auth:
        return _fail("METRICS_BASIC_AUTH (or FLOWER_BASIC_AUTH) is not set: the metrics never run without a password")
    from worker.ops.metrics import run

    run(settings, auth, args.address or settings.metrics_address, args.port or settings.metrics_port)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from cli.devstack import embedded_redis

    # Up before the demo's imports, which would start it themselves: what it starts, it stops.
    with embedded_redis(get_settings(), stop_if_found=False):
        from cli.demo import run_demo

        return run_demo(timeout=args.timeout)


def _verify(args: argparse.Namespace) -> int:
    from cli.verify import run_verify

    return run_verify(args)


def _fail(message: str) -> int:
    print(f"voicecode: {message}", file=sys.stderr)
    return 1


class _Parser(argparse.ArgumentParser):
    """argparse, with a bad argument reported as one line on stderr like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"voicecode: {message}\n")


def _checked(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse ``type`` from one of config's parsers: its problem becomes the argument's error."""
    def convert(text: str) -> T:
        try:
            return parse(text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(exc.problem) from None
    return convert


def _bounded(kind: type[int] | type[float], minimum: float, maximum: float) -> Callable[[str], int | float]:
    """A finite ``kind`` from ``minimum`` to ``maximum``, by the rules every numeric setting follows."""
    return _checked(functools.partial(parse_number, "", kind=kind, minimum=minimum, maximum=maximum))


_PORT = _bounded(int, 1, 65535)
# A wait, like a code, is pointless past the longest TTL.
_SECONDS = _bounded(float, 0.01, MAX_TTL)
_MILLISECONDS = _bounded(int, 0, 600_000)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="voicecode", description="Send voice verification codes through ihuyi.")
    sub = parser.add_subparsers(dest="command", required=True)

    send = sub.add_parser("send", help="enqueue one voice code")
    send.add_argument("mobile")
    send.add_argument("code")
    send.add_argument("--account")
    send.add_argument("--request-id")
    send.add_argument("--requester", help="who asks (a client address, a user id): for the per-requester limit")
    send.add_argument("--ttl", type=_bounded(int, 1, MAX_TTL), metavar="SECONDS")
    send.add_argument("--wait", type=_SECONDS, metavar="SECONDS", help="wait for the result and print it as JSON")
    send.set_defaults(run=_send, settings=get_producer_settings)

    balance = sub.add_parser("balance", help="ask ihuyi for the remaining balance")
    balance.add_argument("--account")
    balance.set_defaults(run=_balance)

    dead = sub.add_parser("dead-letters", help="list, replay or purge dead letters")
    dead_sub = dead.add_subparsers(dest="action", required=True)
    dead_list = dead_sub.add_parser("list")
    dead_list.add_argument("--json", action="store_true")
    replay = dead_sub.add_parser("replay")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?")
    which.add_argument("--all", action="store_true")
    dead_sub.add_parser("purge")
    dead.set_defaults(run=_dead_letters)

    accounts = sub.add_parser("accounts", help="list accounts with their state, or resume a paused one")
    accounts.set_defaults(run=_accounts, action="list")
    accounts_sub = accounts.add_subparsers(dest="action")
    accounts_sub.add_parser("list")
    resume = accounts_sub.add_parser("resume")
    resume.add_argument("name")

    sandbox = sub.add_parser("sandbox", help="run the local ihuyi simulator")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=_PORT, default=8099)
    sandbox.add_argument("--latency-ms", type=_MILLISECONDS, default=0)
    sandbox.add_argument("--slow-ms", type=_MILLISECONDS, default=15000, help="how long the slow-reply magic numbers take")
    sandbox.add_argument("--drip-ms", type=_MILLISECONDS, default=2000, help="the dripping replies' pace, per byte")
    sandbox.add_argument("--balance", type=int, default=1000, help="starting balance of every account")
    sandbox.set_defaults(run=_sandbox)
    sandbox_sub = sandbox.add_subparsers(dest="action", metavar="{calls}")
    sandbox_calls = sandbox_sub.add_parser(
        "calls", help="print the calls a running sandbox's phone has had (the digits each read), oldest first")
    sandbox_calls.add_argument("--url", help=f"the sandbox (default: IHUYI_API_URL's host if plain http, else {SANDBOX_URL})")
    # The .env file read, as always; nothing else is needed.
    sandbox_calls.set_defaults(run=_sandbox_calls, settings=get_producer_settings)

    with_redis = sub.add_parser("with-embedded-redis", help="run a command with the embedded Redis up, and stop that "
                                                           "Redis when the command ends (what `make run` does)")
    with_redis.add_argument("argv", nargs=argparse.REMAINDER, metavar="COMMAND ...")
    with_redis.set_defaults(run=_with_embedded_redis, settings=get_producer_settings)

    flower = sub.add_parser("flower", help="run Flower, behind FLOWER_BASIC_AUTH")
    flower.add_argument("--port", type=_PORT, help="default FLOWER_PORT")
    flower.add_argument("--address", type=_checked(functools.partial(parse_host, "")), help="default FLOWER_ADDRESS")
    flower.set_defaults(run=_flower)

    worker = sub.add_parser("worker", allow_abbrev=False,
                            help="run WORKER_PROCESSES celery workers (default: one per core), w1@host, w2@host…; "
                                 "other options go to each `celery worker`")
    worker.add_argument("--processes", type=_bounded(int, 1, 256), help="default WORKER_PROCESSES")
    worker.set_defaults(run=_worker, celery_args=[])

    metrics = sub.add_parser("metrics", help="serve the pool's Prometheus metrics, behind METRICS_BASIC_AUTH")
    metrics.add_argument("--port", type=_PORT, help="default METRICS_PORT")
    metrics.add_argument("--address", type=_checked(functools.partial(parse_host, "")), help="default METRICS_ADDRESS")
    metrics.set_defaults(run=_metrics)

    demo = sub.add_parser("demo", help="send a scripted set through every outcome and print a table")
    demo.add_argument("--timeout", type=_SECONDS, default=120)
    demo.set_defaults(run=_demo)

    verify = sub.add_parser("verify", help="start a verification (the service picks the code) or check a code")
    verify_sub = verify.add_subparsers(dest="action", required=True)
    verify_start = verify_sub.add_parser("start", help="send a new code; prints the verification as JSON")
    verify_start.add_argument("mobile")
    verify_start.add_argument("--account")
    verify_start.add_argument("--ttl", type=_bounded(int, 1, MAX_TTL), metavar="SECONDS")
    verify_start.add_argument("--requester", help="who asks (a client address, a user id): for the per-requester limit")
    verify_start.add_argument("--wait", type=_SECONDS, metavar="SECONDS", help="wait for the send and add its result")
    verify_check = verify_sub.add_parser("check", help="check a code; prints the answer as JSON, exit 0 only if approved")
    verify_check.add_argument("mobile")
    verify_check.add_argument("code")
    verify.set_defaults(run=_verify, settings=get_producer_settings)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if args.command == "worker":
        args.celery_args = unknown  # each `celery worker` reads them
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        # Read (and checked) first. What a web app runs (send, verify) needs only a producer's settings: no ihuyi account.
        getattr(args, "settings", get_settings)()
        return args.run(args)
    except ConfigError as exc:
        return _fail(f"configuration error: {exc}")
    except ValueError as exc:
        return _fail(str(exc))
