"""``ordersync sync initial`` and ``ordersync sync follow``: start the initial load and watch it.

``sync initial`` creates the run in the ledger (``pipeline.initial_sync.start_initial_run``) and
sends the Celery task ``ordersync.initial.start`` with the run's id; the workers do the rest.
With ``--follow`` (the default when stdout is a terminal) it then shows the run's progress from
the ledger until the run ends; Ctrl-C stops watching, never the run. ``--dry-run`` writes
nothing (a read-only transaction), sends nothing, and prints the plan and the pending rows that
Zoho's field rules would refuse (``pipeline.validate``).

Exit codes:

=====  ======================================================================
0      run started (and, when followed, finished ``done``); dry run printed
1      settings do not load, the database or the broker cannot be reached
2      ordersync is not installed on the table (``ordersync db install``)
3      refused: an initial run is already in progress (its progress is shown)
4      the followed run ended ``failed``
130    Ctrl-C while following: the run goes on (``ordersync sync follow``)
=====  ======================================================================
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from typing import IO, Any

import psycopg2

from cli.commands.config import zoho_problems
from cli.commands.db import load
from cli.commands.status import human_duration
from pipeline import accounting, initial_sync, ledger, mapping_check, report, validate
from pipeline import progress as in_flight
from pipeline.ledger import BatchState, RunState
from pipeline.legacy import schema
from pipeline.legacy.connection import connect
from pipeline.planner import plan
from pipeline.settings import Settings, Severity
from tasks.config import create_app

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_NOT_INSTALLED = 2
EXIT_RUN_IN_PROGRESS = 3
EXIT_RUN_FAILED = 4
EXIT_INTERRUPTED = 130

START_TASK = "ordersync.initial.start"
DEFAULT_INTERVAL = 1.0  # seconds between progress reads
PLAIN_HEARTBEAT = 30.0  # without a terminal, a line at least this often even if nothing moved

ProgressReader = Callable[[Settings, int], dict[str, Any]]


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
    return value


def register(subparsers: Any) -> None:
    """Add ``sync initial`` and ``sync follow`` to the ``ordersync`` parser."""
    parser = subparsers.add_parser("sync", help="start the initial sync or follow a run")
    actions = parser.add_subparsers(dest="sync_action", metavar="ACTION", required=True)
    initial = actions.add_parser(
        "initial",
        help="load every pending row into Zoho (one run at a time)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    initial.add_argument(
        "--dry-run",
        action="store_true",
        help="write and send nothing; print the plan and the rows Zoho would refuse",
    )
    initial.add_argument(
        "--follow",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show live progress until the run ends (default: on when stdout is a terminal)",
    )
    initial.add_argument(
        "--interval",
        type=_seconds,
        default=DEFAULT_INTERVAL,
        metavar="S",
        help=f"seconds between progress updates (default {DEFAULT_INTERVAL})",
    )
    initial.add_argument(
        "--sample",
        type=int,
        default=validate.DEFAULT_SAMPLE,
        metavar="N",
        help=f"dry run: first N offending keys per rule (default {validate.DEFAULT_SAMPLE})",
    )
    initial.add_argument("--json", action="store_true", help="dry run: print one JSON object")
    initial.set_defaults(func=run_initial)

    follow = actions.add_parser("follow", help="show a run's live progress until it ends")
    follow.add_argument(
        "run_id",
        nargs="?",
        type=int,
        metavar="RUN_ID",
        help="the run (default: the oldest running one)",
    )
    follow.add_argument(
        "--interval",
        type=_seconds,
        default=DEFAULT_INTERVAL,
        metavar="S",
        help=f"seconds between progress updates (default {DEFAULT_INTERVAL})",
    )
    follow.set_defaults(func=run_follow)

    credits = actions.add_parser(
        "credits", help="a run's credits: spent, predicted, minimum, and why they differ"
    )
    credits.add_argument(
        "run_id", nargs="?", type=int, metavar="RUN_ID", help="the run (default: the latest)"
    )
    credits.add_argument("--json", action="store_true", help="print one JSON object")
    credits.set_defaults(func=run_credits)


def _installed(settings: Settings) -> int:
    """EXIT_OK when installed; otherwise prints why and returns the exit code."""
    try:
        found = schema.status(settings)
    except psycopg2.Error as exc:
        print(f"error: {str(exc).strip()}", file=sys.stderr)
        return EXIT_ERROR
    if not found["installed"]:
        print(
            f"error: ordersync is not installed on {found['table']}: run `ordersync db install`",
            file=sys.stderr,
        )
        return EXIT_NOT_INSTALLED
    return EXIT_OK


def run_initial(args: argparse.Namespace) -> int:
    """Start the initial run (or print the dry-run plan); see the module docstring."""
    settings = load(args)
    if settings is None:
        return EXIT_ERROR
    code = _installed(settings)
    if code != EXIT_OK:
        return code
    if args.dry_run:
        return _dry_run(settings, args)
    if args.json:
        print("error: --json goes with --dry-run", file=sys.stderr)
        return EXIT_ERROR
    refused = [p for p in zoho_problems(settings) if p.severity is Severity.ERROR]
    if refused:
        for problem in refused:
            print(problem, file=sys.stderr)
        print(
            "refused: the mapping disagrees with the Zoho module (fix it, then `ordersync config"
            " check`); no run started",
            file=sys.stderr,
        )
        return EXIT_ERROR

    try:
        run_id = initial_sync.start_initial_run(settings)
    except initial_sync.RunInProgress as exc:
        running = exc.run_id
        print(f"refused: initial run {running} is in progress", file=sys.stderr)
        try:
            progress = exc.summary or initial_sync.run_progress(settings, running)
            for line in format_progress(progress):
                print(line)
        except (psycopg2.Error, LookupError) as read_error:
            print(f"(cannot read its progress: {read_error})", file=sys.stderr)
        print(f"follow it with: ordersync sync follow {running}", file=sys.stderr)
        return EXIT_RUN_IN_PROGRESS
    except psycopg2.Error as exc:
        print(f"error: {str(exc).strip()}", file=sys.stderr)
        return EXIT_ERROR
    try:
        enqueue_initial_run(settings, run_id)
    except Exception as exc:  # broker errors come from kombu/celery; the run must not linger
        _abandon(settings, run_id, f"could not enqueue {START_TASK}: {exc}")
        print(f"error: could not send the run to the workers: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"initial run {run_id} started ({START_TASK} sent)")
    follow = sys.stdout.isatty() if args.follow is None else args.follow
    if not follow:
        print(f"follow it with: ordersync sync follow {run_id}")
        return EXIT_OK
    return follow_run(settings, run_id, _reader(initial_sync.run_progress), interval=args.interval)


def run_follow(args: argparse.Namespace) -> int:
    """Follow a run until it ends (exit 0 done, 4 failed, 130 on Ctrl-C)."""
    settings = load(args)
    if settings is None:
        return EXIT_ERROR
    code = _installed(settings)
    if code != EXIT_OK:
        return code
    run_id = args.run_id
    if run_id is None:
        conn = connect(settings, application="ordersync-cli")
        try:
            with conn:
                running = report.running_run_ids(conn, settings)
        finally:
            conn.close()
        if not running:
            print("no run is in progress", file=sys.stderr)
            return EXIT_ERROR
        run_id = running[0]
    return follow_run(settings, run_id, _reader(initial_sync.run_progress), interval=args.interval)


def run_credits(args: argparse.Namespace) -> int:
    """Print a run's credits explained (``sync credits``)."""
    settings = load(args)
    if settings is None:
        return EXIT_ERROR
    code = _installed(settings)
    if code != EXIT_OK:
        return code
    conn = connect(settings, application="ordersync-cli")
    try:
        with conn:
            run_id = args.run_id
            if run_id is None:
                latest = report.recent_runs(conn, settings, limit=1)
                if not latest:
                    print("no run yet", file=sys.stderr)
                    return EXIT_ERROR
                run_id = latest[0]["id"]
            spent = accounting.run_spending(conn, settings, run_id)
            predicted = report.run_forecast(conn, settings, run_id)
    except psycopg2.Error as exc:
        print(f"error: {str(exc).strip()}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        conn.close()
    if args.json:
        print(json.dumps({"run_id": run_id, "spent": spent, "predicted": predicted}, indent=2))
    else:
        print(f"run {run_id}")
        print("\n".join(accounting.explain(spent, predicted)))
    return EXIT_OK


def _reader(progress_of: ProgressReader) -> ProgressReader:
    """``run_progress`` plus, while the run goes on, what its batches and jobs are doing
    (:func:`pipeline.progress.activity`), and once it has ended, its ``error``."""

    def read(settings: Settings, run_id: int) -> dict[str, Any]:
        progress = in_flight.activity(settings, run_id, progress_of(settings, run_id))
        if progress.get("state") != RunState.RUNNING.value and "error" not in progress:
            conn = connect(settings, application="ordersync-cli")
            try:
                with conn:
                    progress = {**progress, "error": report.run_error(conn, settings, run_id)}
            finally:
                conn.close()
        return progress

    return read


def enqueue_initial_run(settings: Settings, run_id: int) -> None:
    """Send ``ordersync.initial.start`` with ``{"run_id": run_id}`` by name."""
    app = create_app(settings)
    try:
        app.send_task(START_TASK, kwargs={"run_id": run_id})
    finally:
        app.close()


def _abandon(settings: Settings, run_id: int, reason: str) -> None:
    """Mark a run that never reached the workers as failed, so it blocks no later run."""
    try:
        conn = connect(settings, application="ordersync-cli")
        try:
            with conn:
                ledger.finish_run(conn, settings, run_id, RunState.FAILED, reason)
        finally:
            conn.close()
    except psycopg2.Error as exc:
        print(f"error: run {run_id} could not be marked failed: {exc}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# Dry run
# ---------------------------------------------------------------------------------------------


def dry_run_document(settings: Settings, *, sample: int) -> dict[str, Any]:
    """What a run would do now, read in one read-only transaction."""
    org_cached = accounting.org_id_cached(settings)
    conn = connect(settings, application="ordersync-dry-run")
    try:
        conn.set_session(readonly=True)
        with conn:
            rows = report.row_counts(conn, settings)
            budget = report.credits(conn, settings)
            running = report.running_run_ids(conn, settings)
            checked = validate.check_pending(conn, settings, sample=sample)
            ahead = accounting.forecast(conn, settings, org_cached=org_cached)
            mapping_problems = mapping_check.against_zoho(settings, conn)
    finally:
        conn.close()
    rows = {**rows, "writable": ahead.writable, "validated_out": ahead.validated_out}
    run_plan = ahead.plan
    cheapest = plan(ahead.writable)
    waiting = ""
    if ahead.credits > budget["left"]:
        waiting = (
            f"credit budget: the run needs {ahead.credits:,} credits, {budget['left']:,} left"
            " in the 24 h window; calls beyond it wait"
        )
    return {
        "dry_run": True,
        "rows": rows,
        "batch_size": settings.batch_size,
        # one ledger batch per bulk job and per upsert call, as the run records them
        "batches": run_plan.bulk_jobs + run_plan.upsert_calls,
        "plan": run_plan.as_dict(),
        "cheapest": cheapest.as_dict(),
        "forecast": ahead.as_dict(),
        "credits": budget,
        "waiting_reason": waiting,
        "running_run_ids": running,
        "mapping_problems": [
            {"severity": str(p.severity), "key": p.key, "message": p.message}
            for p in mapping_problems
        ],
        "validation": {
            "checked": checked.checked,
            "bad_rows": checked.bad_rows,
            "violations": [v.as_dict() for v in checked.violations],
        },
    }


def _dry_run(settings: Settings, args: argparse.Namespace) -> int:
    try:
        document = dry_run_document(settings, sample=args.sample)
    except psycopg2.Error as exc:
        print(f"error: {str(exc).strip()}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print(format_dry_run(document))
    return EXIT_OK


def _mix(a_plan: dict[str, Any]) -> str:
    mix = []
    if a_plan["bulk_jobs"]:
        mix.append(f"{a_plan['bulk_jobs']} bulk job(s) ({sum(a_plan['bulk_rows']):,} rows)")
    if a_plan["upsert_calls"]:
        mix.append(f"{a_plan['upsert_calls']} upsert call(s) ({a_plan['upsert_rows']:,} rows)")
    return " + ".join(mix) or "nothing to send"


def format_dry_run(document: dict[str, Any]) -> str:
    """The dry-run document as text for people."""
    rows, best, budget = document["rows"], document["plan"], document["credits"]
    found = document["validation"]
    lines = ["dry run: nothing written; Zoho asked only for the module's fields (cached: free)"]
    if document["running_run_ids"]:
        lines.append(
            "note: run(s) "
            + ", ".join(map(str, document["running_run_ids"]))
            + " in progress: a new initial run would be refused"
        )
    ahead = document["forecast"]
    lines.append(
        f"pending rows   {rows['pending']:,} ({rows['claimed']:,} in flight,"
        f" {rows['quarantined']:,} held back) → {rows['writable']:,} to send"
        f" ({rows['validated_out']:,} more break a field rule: held back, never sent)"
    )
    lines.append(
        f"batches        {document['batches']:,}: {best['bulk_jobs']:,} bulk of up to"
        f" {document['batch_size']:,} rows, {best['upsert_calls']:,} upsert call(s) of up to 100"
    )
    lines.append(f"plan           {_mix(best)}: {best['credits']:,} credits")
    lines.append(
        f"will spend     {ahead['credits']:,} credits"
        + (f" (plan + {ahead['org_call']} for GET org: the org id is not cached)"
           if ahead["org_call"] else "")
        + f"; minimum for these rows {ahead['minimum']:,}"
    )  # fmt: skip
    cheapest = document["cheapest"]
    if cheapest["credits"] < best["credits"]:
        lines.append(
            f"cheapest       {_mix(cheapest)}: {cheapest['credits']:,} credits"
            " (bulk batches of 25,000 rows: raise ORDERSYNC_SYNC_BATCH_SIZE)"
        )
    lines.append(
        f"credits        {budget['spent_24h']:,} spent in the last 24 h, {budget['left']:,} left"
    )
    if document["waiting_reason"]:
        lines.append(f"waiting        {document['waiting_reason']}")
    lines.append(
        "mapping check  sync initial reads the module's fields first: 1 credit when the cached"
        " copy is over an hour old"
    )
    for problem in document.get("mapping_problems", []):
        p = problem
        lines.append(f"mapping        {p['severity']}: {p['key']}: {p['message']}")
    if not found["violations"]:
        lines.append(f"field rules    all {found['checked']:,} pending rows pass")
        return "\n".join(lines)
    lines.append(
        f"field rules    {found['bad_rows']:,} of {found['checked']:,} pending rows would be"
        " refused by Zoho:"
    )
    for v in found["violations"]:
        keys = ", ".join(v["first_keys"])
        more = "" if len(v["first_keys"]) >= v["rows"] else ", …"
        lines.append(
            f"  {v['field'] + '.' + v['rule']:<28} {v['rows']:>8,} row(s)  {v['code']}"
            f" ({v['requirement']})"
        )
        lines.append(f"  {'':<28} keys: {keys}{more}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Live progress
# ---------------------------------------------------------------------------------------------


def _count(value: Any) -> str:
    return "-" if value is None else f"{int(value):,}"


def format_progress(progress: dict[str, Any]) -> list[str]:
    """Lines for a ``run_progress`` dict: rows and timing; batches and credits; and, with the
    keys of :func:`pipeline.progress.activity`, what is in flight (the ETA is then the one from
    the expected job time)."""
    total, done = progress.get("rows_total"), progress.get("rows_done") or 0
    share = f" ({100.0 * done / total:.1f}%)" if total else ""
    rate = progress.get("rate_rows_s")
    eta = progress.get("eta_jobs_s")
    eta = progress.get("eta_s") if eta is None else eta
    first = (
        f"run {progress['run_id']} {progress['state']}: {_count(done)} of {_count(total)} rows"
        f"{share}, synced {_count(progress.get('rows_synced'))},"
        f" skipped {_count(progress.get('rows_skipped'))}"
        + (
            f", held back {held:,}"
            if (
                held := (progress.get("rows_held") or 0) + (progress.get("rows_validated_out") or 0)
            )
            else ""
        )
        + f" | {human_duration(progress.get('elapsed_s'))} elapsed,"
        f" {'-' if rate is None else f'{rate:,.0f}'} rows/s,"
        f" ETA {human_duration(eta)}"
    )
    batches: dict[str, int] = progress.get("batches") or {}
    ordered = [s.value for s in BatchState] + sorted(set(batches) - {s.value for s in BatchState})
    shown = ", ".join(f"{s} {batches[s]:,}" for s in ordered if batches.get(s))
    predicted = progress.get("credits_predicted")
    second = (
        f"batches: {shown or 'none yet'} | credits spent {_count(progress.get('credits_spent'))}"
        + ("" if predicted is None else f" of {predicted:,} predicted")
    )
    third = in_flight.format_activity(progress)
    return [first, second] if third is None else [first, second, third]


def credit_lines(settings: Settings, run_id: int) -> list[str]:
    """The run's credits explained (:func:`pipeline.accounting.explain`), read from the ledger."""
    conn = connect(settings, application="ordersync-cli")
    try:
        with conn:
            spent = accounting.run_spending(conn, settings, run_id)
            predicted = report.run_forecast(conn, settings, run_id)
    finally:
        conn.close()
    return accounting.explain(spent, predicted)


def _moved(progress: dict[str, Any]) -> tuple[Any, ...]:
    """What counts as progress for plain output (time alone does not)."""
    batches = progress.get("batches") or {}
    return (
        progress.get("state"),
        progress.get("rows_done"),
        progress.get("rows_total"),
        progress.get("credits_spent"),
        tuple(sorted(batches.items())),
    )


def follow_run(
    settings: Settings,
    run_id: int,
    read: ProgressReader,
    *,
    interval: float = DEFAULT_INTERVAL,
    out: IO[str] | None = None,
    tty: bool | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    explain: Callable[[Settings, int], list[str]] | None = credit_lines,
) -> int:
    """Show ``read(settings, run_id)`` until the run ends; returns the exit code.

    At the end, ``explain(settings, run_id)`` prints the run's credits: spent, predicted,
    minimum, and why they differ (None: not shown).

    On a terminal the two progress lines are redrawn in place; otherwise a plain line is
    printed whenever the run moved (and at least every ``PLAIN_HEARTBEAT`` seconds).
    """
    out = sys.stdout if out is None else out
    tty = out.isatty() if tty is None else tty
    drawn = 0
    last_moved: tuple[Any, ...] | None = None
    last_line_at = -math.inf
    try:
        while True:
            try:
                progress = read(settings, run_id)
            except psycopg2.Error as exc:
                print(f"\nerror: cannot read run {run_id}: {str(exc).strip()}", file=sys.stderr)
                return EXIT_ERROR
            lines = format_progress(progress)
            finished = progress.get("state") != RunState.RUNNING.value
            if tty:
                # up to the first line drawn last time, clear to the end, draw again
                prefix = f"\x1b[{drawn}F\x1b[J" if drawn else ""
                out.write(prefix + "\n".join(lines) + "\n")
                drawn = len(lines)
            else:
                moved = _moved(progress)
                if moved != last_moved or finished or clock() - last_line_at >= PLAIN_HEARTBEAT:
                    out.write(" | ".join(lines) + "\n")
                    last_moved, last_line_at = moved, clock()
            out.flush()
            if finished:
                try:
                    if explain is not None:
                        out.write("".join(f"{line}\n" for line in explain(settings, run_id)))
                except psycopg2.Error as exc:
                    out.write(f"(cannot read the run's credits: {str(exc).strip()})\n")
                if progress.get("state") == RunState.DONE.value:
                    out.write(f"run {run_id} done\n")
                    return EXIT_OK
                reason = f": {progress['error']}" if progress.get("error") else ""
                out.write(f"run {run_id} ended {progress.get('state')}{reason}\n")
                return EXIT_RUN_FAILED
            sleep(interval)
    except KeyboardInterrupt:
        out.write(f"\nstopped following; run {run_id} goes on (ordersync sync follow {run_id})\n")
        out.flush()
        return EXIT_INTERRUPTED
