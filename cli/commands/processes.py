"""``ordersync web | worker | beat``: the long-running processes, as deploy/ runs them.

Each replaces the ``ordersync`` process (``exec``) with the real one, so signals from systemd
or Docker reach it directly:

* ``web`` → ``python -m cli.web`` (Zoho's callback receiver, ``/healthz``);
* ``worker`` → ``celery -A tasks.app worker -Q ordersync.db,ordersync.zoho -E -l INFO``;
* ``beat`` → ``celery -A tasks.app beat -S redbeat.RedBeatScheduler --max-interval 10 -l INFO``.

Arguments after the command go to the process unchanged (e.g. ``ordersync worker -c 4``).
``--config`` is handed on as ``ORDERSYNC_CONFIG``. The queue names are the plain ones: with
``ORDERSYNC_CELERY_NAMESPACE`` set, pass ``-Q <namespace>.ordersync.db,…`` yourself.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

PROGRAMS: dict[str, tuple[str, list[str], str]] = {
    "web": (
        "cli.web",
        [],
        "serve Zoho's job callbacks and /healthz (python -m cli.web)",
    ),
    "worker": (
        "celery",
        ["-A", "tasks.app", "worker", "-Q", "ordersync.db,ordersync.zoho", "-E", "-l", "INFO"],
        "run a Celery worker on both queues, events on",
    ),
    "beat": (
        "celery",
        [
            *("-A", "tasks.app", "beat", "-S", "redbeat.RedBeatScheduler"),
            *("--max-interval", "10", "-l", "INFO"),
        ],
        "run the (single) Celery beat with its Redis lock",
    ),
}


def register(subparsers: Any) -> None:
    """Add ``web``, ``worker`` and ``beat`` to the ``ordersync`` parser."""
    for name, (_module, _argv, help_text) in PROGRAMS.items():
        # No options of our own: every word after the command, dashes included, is the process's
        # (``--config`` goes before the command: ``ordersync --config F worker -c 4``).
        parser = subparsers.add_parser(
            name, help=help_text, description=__doc__, prefix_chars="+", add_help=False
        )
        parser.add_argument(
            "extra", nargs=argparse.REMAINDER, help="arguments for the process, unchanged"
        )
        parser.set_defaults(func=run, program=name)


def command_line(name: str, extra: list[str]) -> list[str]:
    """The argv ``ordersync <name> <extra…>`` executes."""
    module, argv, _ = PROGRAMS[name]
    return [sys.executable, "-m", module, *argv, *extra]


def run(args: argparse.Namespace) -> int:
    """Replace this process with the chosen one (returns only if exec fails)."""
    argv = command_line(args.program, list(args.extra))
    if args.config:
        os.environ["ORDERSYNC_CONFIG"] = os.path.abspath(args.config)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(argv[0], argv)
    except OSError as exc:
        print(f"error: cannot start {' '.join(argv)}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0  # not reached
