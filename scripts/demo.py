"""``make demo``: the whole of ordersync on this machine, against zohosim, with a summary.

Needs PostgreSQL and Redis running (defaults: 127.0.0.1:5432 user ``postgres``, 127.0.0.1:6379).
What it does, all state and logs under ``var/demo/``:

1. (re)creates the database ``ordersync_demo`` (dropped first if a previous demo left it: it is
   the demo's own), seeds 100,000 orders of which 300 Zoho will reject, ``ordersync db install``;
2. starts zohosim (``--job-speed realistic``: 25,000 rows a minute per job), a Celery worker on
   both queues with events (``-E``), the web process (callbacks, ``/metrics``) and Flower with
   basic auth (a generated password), all with settings from ``var/demo/ordersync.toml`` and
   the secrets from the environment;
3. ``ordersync sync initial --follow`` (live progress); then beat, and ``ordersync demo churn``
   for a minute while near-real-time sync runs with ``realtime_max_delay`` 20 s; then waits
   until the churn's changes have reached zohosim;
4. prints a summary: rows synced, rows rejected by reason, credits spent beside the naive cost.
   On a terminal it then keeps everything running until Ctrl-C, and says where Flower is and
   how to log in; otherwise (or with ``--exit``) it stops them all, Flower too. Ctrl-C at any
   point stops what it started.

Ports: zohosim 8010, web 8080, Flower 5555 when free, else any free port (printed). A port
given in ``DEMO_SIM_PORT``, ``DEMO_WEB_PORT`` or ``DEMO_FLOWER_PORT`` is used as it is: if it is
busy, the demo stops at once and says which variable to change.

Shorter runs: ``DEMO_ROWS=5000 DEMO_CHURN_SECONDS=10 make demo`` (see ``--help`` for every
``DEMO_*`` variable). The broker names live in their own namespace (``ordersyncdemo``), so the
demo never touches another install's queues on the same Redis.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import psycopg2
import redis

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NAMESPACE = "ordersyncdemo"  # broker names and Redis keys of the demo (default)
FLOWER_USER = "demo"
CLIENT_ID = "1000.ORDERSYNCDEMO"
# (process, variable that sets its port, port when the variable is unset and the port is free)
PORTS = (("zohosim", "DEMO_SIM_PORT", 8010), ("web", "DEMO_WEB_PORT", 8080),
         ("Flower", "DEMO_FLOWER_PORT", 5555))  # fmt: skip


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="make demo", description=__doc__.split("\n")[0])
    p.add_argument(
        "--rows",
        type=int,
        default=int(_env("DEMO_ROWS", "100000")),
        help="orders to seed ($DEMO_ROWS, default 100000)",
    )
    p.add_argument(
        "--bad-rows",
        type=int,
        default=int(_env("DEMO_BAD_ROWS", "300")),
        help="of which Zoho rejects ($DEMO_BAD_ROWS, default 300)",
    )
    p.add_argument(
        "--job-speed",
        default=_env("DEMO_JOB_SPEED", "realistic"),
        help="zohosim --job-speed ($DEMO_JOB_SPEED, default realistic: 25k rows/min)",
    )
    p.add_argument(
        "--churn-seconds",
        type=float,
        default=float(_env("DEMO_CHURN_SECONDS", "60")),
        help="how long the legacy app writes ($DEMO_CHURN_SECONDS, default 60)",
    )
    p.add_argument(
        "--churn-rate",
        type=float,
        default=float(_env("DEMO_CHURN_RATE", "20")),
        help="legacy writes a second ($DEMO_CHURN_RATE, default 20)",
    )
    p.add_argument(
        "--max-delay",
        type=float,
        default=float(_env("DEMO_MAX_DELAY", "20")),
        help="near-real-time realtime_max_delay, seconds ($DEMO_MAX_DELAY, default 20)",
    )
    p.add_argument(
        "--database",
        default=_env("DEMO_DB", "ordersync_demo"),
        help="demo database, dropped and created ($DEMO_DB)",
    )
    p.add_argument(
        "--pg",
        default=_env("DEMO_PG", "postgresql://postgres@127.0.0.1:5432"),
        help="PostgreSQL server URL without database ($DEMO_PG)",
    )
    p.add_argument(
        "--redis",
        default=_env("DEMO_REDIS", "redis://127.0.0.1:6379"),
        help="Redis server URL without db number ($DEMO_REDIS)",
    )
    p.add_argument(
        "--namespace",
        default=_env("DEMO_NAMESPACE", NAMESPACE),
        help=f"broker namespace and Redis key prefix ($DEMO_NAMESPACE, default {NAMESPACE})",
    )
    p.add_argument(
        "--var",
        default=_env("DEMO_VAR", str(REPO / "var" / "demo")),
        help="directory of the settings, logs and work files ($DEMO_VAR, default var/demo)",
    )
    p.add_argument(
        "--any-ports",
        action="store_true",
        help="any free ports, not 8010 (zohosim), 8080 (web), 5555 (Flower) first"
        " ($DEMO_SIM_PORT, $DEMO_WEB_PORT, $DEMO_FLOWER_PORT still set one)",
    )
    p.add_argument(
        "--exit",
        action="store_true",
        default=bool(os.environ.get("DEMO_EXIT")),
        help="stop after the summary even on a terminal ($DEMO_EXIT)",
    )
    return p.parse_args(argv)  # fmt: skip


def port_is_free(port: int) -> bool:
    """Nothing answers on 127.0.0.1:``port`` and a server could bind it there."""
    with socket.socket() as probe:
        probe.settimeout(1)
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            return False
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def any_free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PortBusy(Exception):
    def __init__(self, what: str, variable: str, port: int) -> None:
        super().__init__(what, variable, port)
        self.what, self.variable, self.port = what, variable, port

    def __str__(self) -> str:
        return (f"port {self.port} for {self.what} is busy: set {self.variable} to a free port,"
                " or unset it to let the demo pick one")  # fmt: skip


def choose_port(what: str, variable: str, default: int, env: dict[str, str], *,
                any_port: bool = False) -> int:  # fmt: skip
    """The port for ``what``: ``env[variable]`` if set (:class:`PortBusy` if taken), else
    ``default`` when free (unless ``any_port``), else any free port."""
    given = env.get(variable, "")
    if given:
        if not given.isdigit() or not 0 < int(given) < 65536:
            raise SystemExit(f"{variable}={given!r}: a port number (1-65535)")
        if not port_is_free(int(given)):
            raise PortBusy(what, variable, int(given))
        return int(given)
    if not any_port and port_is_free(default):
        return default
    return any_free_port()


def say(text: str) -> None:
    print(f"==> {text}", flush=True)


class Processes:
    """The long-running processes the demo started, each in its own process group."""

    def __init__(self, logs: Path, env: dict[str, str]) -> None:
        self.logs = logs
        self.env = env
        self.started: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            argv, cwd=REPO, env=env or self.env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.started.append((name, proc, log))

    def check(self) -> None:
        """Raise if one of them has exited."""
        for name, proc, _ in self.started:
            if proc.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")

    def stop(self) -> None:
        """SIGTERM every group (newest first), then SIGKILL what is still there after 15 s."""
        for _, proc, _ in reversed(self.started):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _, proc, log in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the group: pool children too
            proc.wait()
            log.close()
        self.started.clear()


def wait_http(url: str, procs: Processes, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        procs.check()
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=3):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer at {url} within {timeout:.0f} s")
        time.sleep(0.3)


def wait_log(path: Path, text: str, procs: Processes, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text(errors="replace"):
        procs.check()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{text!r} not in {path} within {timeout:.0f} s")
        time.sleep(0.3)


def cleanup_redis(server: str, namespace: str) -> None:
    """Delete the demo's own keys (broker db 0, token cache and beat lock db 1); nothing else."""
    for db in (0, 1):
        client = redis.Redis.from_url(f"{server}/{db}")
        try:
            keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


def recreate_database(server: str, name: str) -> None:
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise SystemExit(f"demo database name {name!r}: lower-case letters, digits, _ only")
    conn = psycopg2.connect(f"{server}/postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()


def write_config(path: Path, dsn: str, sim: str, web: str, redis_server: str, args: Any) -> None:
    """The demo's ordersync.toml: no secret in it (they come from the environment)."""
    path.write_text(
        f"""# Written by scripts/demo.py (make demo). Secrets come from the environment:
# ORDERSYNC_ZOHO_CLIENT_SECRET, ORDERSYNC_ZOHO_REFRESH_TOKEN.
[source]
dsn = "{dsn}"

[zoho]
accounts_url = "{sim}"
api_url = "{sim}"
upload_url = "{sim}"
client_id = "{CLIENT_ID}"
callback_url = "{web}"
redis_prefix = "{args.namespace}:zoho"

[sync]
broker_url = "{redis_server}/0"
redis_url = "{redis_server}/1"
batch_size = 25000
batches_in_flight = 3
mode = "both"
realtime_threshold = 100
realtime_max_delay = {args.max_delay}
realtime_check = {min(5.0, max(1.0, args.max_delay / 4))}
work_dir = "{path.parent / "work"}"
""",
        encoding="utf-8",
    )


def ordersync(env: dict[str, str], *args: str, capture: bool = False) -> str:
    """Run an ``ordersync`` command in the foreground; its output if ``capture``."""
    argv = [str(BIN / "ordersync"), *args]
    if capture:
        done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"ordersync {' '.join(args)} failed:\n{done.stderr}")
        return done.stdout
    code = subprocess.call(argv, cwd=REPO, env=env)
    if code != 0:
        raise RuntimeError(f"ordersync {' '.join(args)} exited with {code}")
    return ""


def sql_one(dsn: str, text: str) -> Any:
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(text)
            return cur.fetchall()
    finally:
        conn.close()


def credits_spent(dsn: str) -> int:
    return int(sql_one(dsn, "SELECT coalesce(sum(credits), 0) FROM ordersync.credit_ledger")[0][0])


def wait_drained(dsn: str, procs: Processes, timeout: float) -> float:
    """Wait until nothing but quarantined rows is pending and no batch is open; seconds waited."""
    started = time.monotonic()
    while True:
        procs.check()
        (sendable, open_batches), = sql_one(
            dsn,
            """SELECT (SELECT count(*) FROM orders o WHERE NOT o.synced AND NOT EXISTS (
                         SELECT 1 FROM ordersync.row_errors e WHERE e.row_key = o.id::text
                         AND e.quarantined AND e.version = o.sync_version)),
                      (SELECT count(*) FROM ordersync.batches
                         WHERE state NOT IN ('reconciled', 'failed'))""",
        )  # fmt: skip
        if sendable == 0 and open_batches == 0:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            print(f"    still pending after {timeout:.0f} s: {sendable} rows, "
                  f"{open_batches} open batches", flush=True)  # fmt: skip
            return time.monotonic() - started
        time.sleep(1)


def sim_credits(sim: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{sim}/__sim/credits", timeout=10) as answer:
        return dict(json.load(answer))


def sim_stats(sim: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{sim}/__sim/stats", timeout=10) as answer:
        return dict(json.load(answer))


def summary(
    dsn: str,
    sim: str,
    args: Any,
    phases: dict[str, Any],
    flower: str,
    password: str,
    web: str,
    var: Path,
    *,
    stay: bool,
) -> str:
    """The demo's closing summary. ``stay``: the processes keep running after it (a terminal),
    so Flower's login and the metrics URL are shown; otherwise they are stopped as it prints."""
    (total, synced, pending), = sql_one(
        dsn, "SELECT count(*), count(*) FILTER (WHERE synced), count(*) FILTER (WHERE NOT synced)"
        " FROM orders",
    )  # fmt: skip
    reasons = sql_one(
        dsn, "SELECT code, coalesce(field, '-'), count(*), count(*) FILTER (WHERE quarantined)"
        " FROM ordersync.row_errors GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2",
    )  # fmt: skip
    jobs = sql_one(
        dsn, "SELECT row_count FROM ordersync.batches WHERE kind = 'bulk' AND job_id IS NOT NULL"
        " ORDER BY id",
    )  # fmt: skip
    rows, churn = args.rows, phases["churn_writes"]
    naive_initial = math.ceil(rows / 10)
    naive_churn = sum(churn.values()) if churn else 0
    zoho = sim_credits(sim)
    records = sim_stats(sim).get("records", {}).get("Orders", "?")
    ours = phases["initial_credits"] + phases["churn_credits"]
    lines = [
        "",
        "================================ ordersync demo ================================",
        f"orders in the legacy table   {total:>9,}   ({rows:,} seeded, {args.bad_rows} of"
        " them bad, + churn inserts)",
        f"rows synced                  {synced:>9,}   (records in zohosim's Orders: {records:,})",
        f"rows not synced              {pending:>9,}   (rejected, held back until they change)",
        "",
        "rows held back, by reason (code / field: rows, of which held back;"
        " ORDERSYNC_VALIDATION: our field rules, never sent, 0 credits):",
    ]
    lines += [f"    {code} / {field}: {n:,} ({q:,} held back)" for code, field, n, q in reasons]
    if not reasons:
        lines.append("    none")
    lines += [
        "",
        f"initial sync                 {phases['initial_seconds']:.0f} s for {rows:,} rows"
        f" (zohosim --job-speed {args.job_speed})",
        f"    credits spent            {phases['initial_credits']:>9,}   "
        + (f"bulk jobs of {' + '.join(f'{n:,}' for (n,) in jobs)} rows" if jobs
           else "no bulk job (fewer writable rows than a job's break-even)"),
        f"    naive (all upserts)      {naive_initial:>9,}   ceil({rows:,} / 10 records per"
        " credit)",
        *(f"    {line}" for line in phases.get("initial_explained", "").splitlines()[1:]),
        f"churn                        {args.churn_seconds:.0f} s at {args.churn_rate:g} writes/s:"
        f" {', '.join(f'{k} {v}' for k, v in sorted(churn.items())) or '-'}",
        f"    near-real-time credits   {phases['churn_credits']:>9,}   (max_delay"
        f" {args.max_delay:g} s; drained {phases['drain_seconds']:.0f} s after the churn)",
        f"    naive (1 upsert/write)   {naive_churn:>9,}",
        f"credits, all told            {ours:>9,}   (zohosim counted {zoho.get('used_24h', 0):,})",
        "",
    ]
    if stay:
        lines += [
            f"Flower     {flower}   user {FLOWER_USER}  password {password}",
            f"metrics    {web}/metrics",
        ]
    else:
        lines.append(
            "Flower     stopped with the demo (run `make demo` on a terminal to keep it up)"
        )
    lines += [
        f"logs       {var}/logs/   settings {var}/ordersync.toml",
        "================================================================================",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    var = Path(args.var).resolve()
    logs = var / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    shutil.rmtree(var / "work", ignore_errors=True)
    logs.mkdir(parents=True, exist_ok=True)

    try:
        sim_port, web_port, flower_port = (
            choose_port(what, variable, default, dict(os.environ), any_port=args.any_ports)
            for what, variable, default in PORTS
        )
    except PortBusy as exc:
        print(f"demo: {exc}", file=sys.stderr, flush=True)
        return 1
    sim, web = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{web_port}"
    flower = f"http://127.0.0.1:{flower_port}"
    dsn = f"{args.pg}/{args.database}"
    client_secret = f"demo-secret-{secrets.token_hex(16)}"
    refresh_token = f"1000.demo.{secrets.token_hex(16)}"
    password = secrets.token_urlsafe(12)
    config = var / "ordersync.toml"
    write_config(config, dsn, sim, web, args.redis, args)

    base = {k: v for k, v in os.environ.items() if not k.startswith(("ORDERSYNC_", "ZOHOSIM_"))}
    env = {
        **base,
        "ORDERSYNC_CONFIG": str(config),
        "ORDERSYNC_ZOHO_CLIENT_SECRET": client_secret,
        "ORDERSYNC_ZOHO_REFRESH_TOKEN": refresh_token,
        "ORDERSYNC_CELERY_NAMESPACE": args.namespace,
        "PYTHONUNBUFFERED": "1",
    }
    sim_env = {
        **base,
        "ZOHOSIM_CLIENT_ID": CLIENT_ID,
        "ZOHOSIM_CLIENT_SECRET": client_secret,
        "ZOHOSIM_REFRESH_TOKEN": refresh_token,
        "PYTHONUNBUFFERED": "1",
    }
    procs = Processes(logs, env)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        say(f"database {args.database}: {args.rows:,} orders ({args.bad_rows} bad), db install")
        cleanup_redis(args.redis, args.namespace)
        recreate_database(args.pg, args.database)
        ordersync(env, "demo", "seed", "--rows", str(args.rows), "--bad-rows", str(args.bad_rows))
        ordersync(env, "db", "install", capture=True)

        say(f"zohosim on {sim} (--job-speed {args.job_speed}), worker, web, Flower")
        print(f"    ports: zohosim {sim_port}, web {web_port}, Flower {flower_port}"
              " (set DEMO_SIM_PORT, DEMO_WEB_PORT, DEMO_FLOWER_PORT to choose)",
              flush=True)  # fmt: skip
        procs.start("zohosim", [str(BIN / "zohosim"), "serve", "--port", str(sim_port),
                                "--job-speed", args.job_speed], sim_env)  # fmt: skip
        queues = ",".join(f"{args.namespace}.{q}" for q in ("ordersync.db", "ordersync.zoho"))
        celery = [str(BIN / "celery"), "-A", "tasks.app"]
        procs.start("worker", [*celery, "worker", "-Q", queues, "-E", "-c", "2", "-l", "INFO",
                               "-n", f"{args.namespace}@%h"])  # fmt: skip
        procs.start("web", [str(BIN / "ordersync"), "web", "--port", str(web_port)])
        procs.start(
            "flower",
            [*celery, "flower", "--address=127.0.0.1", f"--port={flower_port}"],
            {**env, "FLOWER_BASIC_AUTH": f"{FLOWER_USER}:{password}"},
        )
        wait_http(f"{sim}/__sim/health", procs, "zohosim")
        wait_http(f"{web}/healthz", procs, "web")
        wait_http(f"{flower}/healthcheck", procs, "Flower")
        wait_log(logs / "worker.log", " ready.", procs)
        print(f"    Flower {flower} (user {FLOWER_USER}, password {password}) while the demo runs",
              flush=True)  # fmt: skip

        say("ordersync sync initial --follow")
        started = time.monotonic()
        ordersync(env, "sync", "initial", "--follow", "--interval", "2")
        phases: dict[str, Any] = {
            "initial_seconds": time.monotonic() - started,
            "initial_credits": credits_spent(dsn),
            # the run's credits explained: spent, predicted, minimum, why they differ
            "initial_explained": ordersync(env, "sync", "credits", capture=True),
        }
        procs.check()
        # Beat (near-real-time checks, sweeper) starts once the initial load is done: while it
        # runs, a near-real-time check would hand the rows the initial run has not claimed yet
        # to an interval run, and the initial run's progress would stop short of 100 %.
        procs.start("beat", [*celery, "beat", "-S", "redbeat.RedBeatScheduler",
                             "--max-interval", "5", "-l", "INFO"])  # fmt: skip
        wait_log(logs / "beat.log", "beat: Starting", procs)

        say(f"legacy app churn: {args.churn_rate:g} writes/s for {args.churn_seconds:g} s,"
            f" near-real-time sync (max_delay {args.max_delay:g} s)")  # fmt: skip
        out = ordersync(env, "demo", "churn", "--rate", str(args.churn_rate), "--seconds",
                        str(args.churn_seconds), capture=True)  # fmt: skip
        print(f"    {out.strip()}", flush=True)
        phases["churn_writes"] = {
            k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", out) if k != "total"
        }
        say("waiting for the churn's changes to reach Zoho")
        phases["drain_seconds"] = wait_drained(dsn, procs, timeout=4 * args.max_delay + 60)
        phases["churn_credits"] = credits_spent(dsn) - phases["initial_credits"]

        stay = sys.stdout.isatty() and not args.exit
        print(summary(dsn, sim, args, phases, flower, password, web, var, stay=stay), flush=True)
        if stay:
            print("Flower, zohosim, the worker, beat and web keep running: press Ctrl-C here to"
                  " stop them all (logs stay in var/demo/logs/).", flush=True)  # fmt: skip
            while True:
                procs.check()
                time.sleep(1)
        return 0
    except KeyboardInterrupt:
        print("\nstopping…", flush=True)
        return 130
    except RuntimeError as exc:
        print(f"demo failed: {exc}\n(logs in {logs})", file=sys.stderr, flush=True)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        procs.stop()
        with contextlib.suppress(redis.RedisError):
            cleanup_redis(args.redis, args.namespace)  # queues, beat lock, token cache


if __name__ == "__main__":
    sys.exit(main())
