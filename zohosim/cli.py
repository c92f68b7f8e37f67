"""``zohosim serve``: run the simulator on one port."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import gc
import logging
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from zohosim.schema import load_schema
from zohosim.server import SimServer
from zohosim.state import REALISTIC_ROWS_PER_SECOND, State

DEFAULTS = {
    "ZOHOSIM_CLIENT_ID": "1000.ZOHOSIMCLIENT",
    "ZOHOSIM_CLIENT_SECRET": "zohosim-secret",
    "ZOHOSIM_REFRESH_TOKEN": "1000.zohosim.refresh",
    "ZOHOSIM_ZGID": "74822955",
}


def _env(name: str) -> str:
    return os.environ.get(name) or DEFAULTS[name]


def job_speed(value: str) -> float:
    """``instant`` → 0, ``realistic`` → 25,000 rows a minute, or a number of rows per second."""
    if value == "instant":
        return 0.0
    if value == "realistic":
        return REALISTIC_ROWS_PER_SECOND
    try:
        rate = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError("instant, realistic or rows per second") from None
    if rate < 0:
        raise argparse.ArgumentTypeError("rows per second must be >= 0")
    return rate


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="zohosim", description="A local Zoho CRM v8 over HTTP.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve the simulated Zoho CRM")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8010, help="0 picks a free port")
    s.add_argument("--schema", default=None, help="module schema JSON (default: Orders)")
    s.add_argument("--state", default=None, help="SQLite file that keeps state across restarts")
    s.add_argument("--job-speed", type=job_speed, default=0.0,
                   help="instant | realistic | <rows per second>")
    s.add_argument("--status-spelling", choices=("IN PROGRESS", "INPROGRESS"),
                   default="IN PROGRESS")
    s.add_argument("--token-ttl", type=int, default=3600, help="access token lifetime, seconds")
    s.add_argument("--download-url-style", choices=("absolute", "relative"), default="absolute")
    s.add_argument("--credit-limit", type=int, default=5_000_000)
    s.add_argument("--concurrency", type=int, default=20)
    s.add_argument("--sub-concurrency", type=int, default=10)
    s.add_argument("--max-bulk-jobs", type=int, default=0,
                   help="bulk write jobs running at once; more → 429 TOO_MANY_REQUESTS "
                        "(default 0: unlimited; Zoho's limit is not documented)")
    s.add_argument("--time-zone", default="UTC",
                   help="time zone of answered datetimes (IANA name; '' keeps offsets as sent)")
    s.add_argument("--client-id", default=None, help="default $ZOHOSIM_CLIENT_ID or "
                   + DEFAULTS["ZOHOSIM_CLIENT_ID"])
    s.add_argument("--client-secret", default=None, help="default $ZOHOSIM_CLIENT_SECRET or "
                   + DEFAULTS["ZOHOSIM_CLIENT_SECRET"])
    s.add_argument("--refresh-token", default=None, help="default $ZOHOSIM_REFRESH_TOKEN or "
                   + DEFAULTS["ZOHOSIM_REFRESH_TOKEN"])
    s.add_argument("--zgid", default=None, help="default $ZOHOSIM_ZGID or "
                   + DEFAULTS["ZOHOSIM_ZGID"])
    s.add_argument("--log-level", default="WARNING")
    return p


M_ARENA_MAX = -8  # mallopt parameter (glibc malloc.h)
GC_THRESHOLDS = (50_000, 50, 100)
SWITCH_INTERVAL = 0.0005


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Fewer glibc malloc arenas: the request threads' arenas otherwise keep freed memory."""
    name = ctypes.util.find_library("c")
    if not name:
        return
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL(name).mallopt(M_ARENA_MAX, arenas)


def tune_gc() -> None:
    """Keep the cyclic GC off the records: what start-up made is frozen, collections are rarer.

    The simulator holds up to millions of record dicts, upload rows and results; with the default
    thresholds the collector walks them over and over (9 % of the CPU of 200,000 rows of bulk
    jobs, more as records pile up: ~31 % at 1M rows, measured for issue 13; ~2 % with these).
    Reference counting still frees them; only cycles wait longer.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def share_the_gil(seconds: float = SWITCH_INTERVAL) -> None:
    """Hand the GIL over sooner (Python's default: every 5 ms) while a job's rows run.

    A request gives the GIL up at each socket read and write and waits that long to get it
    back from a busy job thread: 5 ms times a dozen hops. The shorter interval costs nothing
    when no other thread wants the GIL.
    """
    sys.setswitchinterval(seconds)


def _terminate(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM stops serving cleanly: the temporary files are removed


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config = {
        "token_ttl": args.token_ttl,
        "job_rows_per_second": args.job_speed,
        "job_queue_seconds": 2.0 if args.job_speed else 0.0,
        "status_spelling": args.status_spelling,
        "download_url_style": args.download_url_style,
        "credit_limit": args.credit_limit,
        "concurrency": args.concurrency,
        "sub_concurrency": args.sub_concurrency,
        "max_bulk_jobs": args.max_bulk_jobs,
        "time_zone": args.time_zone,
    }
    limit_malloc_arenas()
    state = State(
        load_schema(args.schema),
        client_id=args.client_id or _env("ZOHOSIM_CLIENT_ID"),
        client_secret=args.client_secret or _env("ZOHOSIM_CLIENT_SECRET"),
        refresh_token=args.refresh_token or _env("ZOHOSIM_REFRESH_TOKEN"),
        zgid=args.zgid or _env("ZOHOSIM_ZGID"),
        config=config,
        state_file=args.state,
    )
    server = SimServer((args.host, args.port), state)
    host, port = str(server.server_address[0]), int(server.server_address[1])
    shown = f"[{host}]" if ":" in host else host
    base = f"http://{shown}:{port}"
    state.base_url = base
    print(f"zohosim listening on {base}", flush=True)
    print(f"  accounts token  POST {base}/oauth/v2/token")
    print(f"  CRM API         {base}/crm/v8/  (org, users, settings/fields, <Module>, upsert)")
    print(f"  upload          POST {base}/crm/v8/upload")
    print(f"  bulk write      {base}/crm/bulk/v8/write")
    print(f"  result files    GET {base}/v8/crm/{state.zgid}/bulk-write/<job>/<job>.zip")
    print(f"  admin           {base}/__sim/  (health, reset, config, credits, requests, ...)")
    print(f"  client_id={state.client_id} refresh_token={state.refresh_token} zgid={state.zgid}",
          flush=True)
    signal.signal(signal.SIGTERM, _terminate)
    tune_gc()
    share_the_gil()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        state.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
