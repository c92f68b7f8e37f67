"""``ordersync listen``: wake the near-real-time flush as soon as a change commits (opt-in).

Needs ``notify = true`` under ``[sync]`` and ``ordersync db install`` after turning it on (the
change trigger then NOTIFYs). Holds one database connection that LISTENs and sends
``ordersync.realtime.check`` (``woken``: every ready row goes) at the first notification, then
at most once per ``--debounce`` seconds while they keep coming. The beat's periodic check stays
the safety net. Run one listener (several only send more checks). Stops on SIGTERM / SIGINT.

Exit codes: 0 stopped, 1 settings or database error, 2 notify is off or not installed.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

import psycopg2

from cli.commands.db import load
from pipeline.legacy import schema
from pipeline.notify import DEBOUNCE, Listener
from tasks.config import create_app
from tasks.schedule import REALTIME_CHECK

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_OFF = 2


def register(subparsers: Any) -> None:
    """Add ``listen`` to the ``ordersync`` parser."""
    parser = subparsers.add_parser(
        "listen",
        help="wake the near-real-time flush on each change (opt-in: sync.notify)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debounce", type=float, default=DEBOUNCE, metavar="SECONDS",
                        help=f"at most one wake per SECONDS while changes keep coming"
                             f" (default {DEBOUNCE})")  # fmt: skip
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, …")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = load(args)
    if settings is None:
        return EXIT_ERROR
    if not settings.notify:
        print(
            "error: notify is off: set notify = true under [sync], then run"
            " `ordersync db install` (the change trigger then notifies)",
            file=sys.stderr,
        )
        return EXIT_OFF
    try:
        installed = schema.notify_installed(settings)
    except psycopg2.Error as exc:
        print(f"error: cannot read the installed trigger: {str(exc).strip()}", file=sys.stderr)
        return EXIT_ERROR
    if not installed:
        print(
            "error: the installed change trigger does not notify: run `ordersync db install`"
            " with notify = true",
            file=sys.stderr,
        )
        return EXIT_OFF
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    app = create_app(settings)
    expires = settings.realtime_check  # a wake that waited a whole check period is moot

    def wake() -> None:
        app.send_task(REALTIME_CHECK, kwargs={"woken": True}, expires=expires)

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    listener = Listener(settings, wake, debounce=args.debounce)
    try:
        listener.run(stop)
    finally:
        app.close()
    logging.getLogger(__name__).info(
        "listener stopped: %d notifications, %d wakes, %d reconnects",
        listener.notifications,
        listener.wakes,
        listener.reconnects,
    )
    return EXIT_OK
