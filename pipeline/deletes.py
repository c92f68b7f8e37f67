"""Deletes, opt-in (``sync.deletes``): a deleted legacy row deletes its Zoho record.

The legacy table's ``AFTER DELETE`` trigger (``pipeline.legacy.schema``) writes a tombstone
(key, ``zoho_id``) into ``<ledger>.tombstones``. A delete run then:

1. drops the tombstones that need no call: the key is back in the legacy table (the row was
   re-created: the normal sync owns it again), or the row never reached Zoho (no ``zoho_id``
   and no unfinished batch carries it; a row deleted while in flight gets the id its batch
   created when the batch is marked, and waits until then);
2. counts what is left and refuses the whole run, sending nothing, when it is more than
   ``max_deletes`` (a mass delete in the legacy app is more often a mistake than an intent:
   an operator raises the cap, or runs ``ordersync deletes --allow N`` once);
3. states its cost (1 credit per 10 ids, 100 ids a call) and checks it against the credit
   budget net of the reserve;
4. deletes by ``zoho_id``, 100 a call, each chunk locked (``FOR UPDATE SKIP LOCKED``) for its
   call so two runs never send the same ids; an id Zoho no longer holds counts as deleted, so
   a run repeated after a crash costs at most the one chunk it re-sends.

A refused id keeps its tombstone with the code (``attempts``); after ``max_attempts`` it is
left alone until ``ordersync deletes --retry`` (not sent again at every run: no credit is spent
twice on the same refusal).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from psycopg2 import sql
from psycopg2.extensions import connection as Connection

from pipeline.legacy.names import Names, key_type
from pipeline.settings import Settings
from pipeline.zoho import limits
from pipeline.zoho.client import ZohoClient
from pipeline.zoho.errors import CreditBudgetExceeded

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeletePlan:
    """What a delete run would do now: ``deletable`` ids in ``calls`` calls for ``credits``."""

    tombstones: int  # all tombstones, before anything is dropped
    revived: int  # the key is back in the legacy table: dropped, no call
    never_sent: int  # no Zoho id and not in flight: dropped, no call
    in_flight: int  # no Zoho id yet, an unfinished batch carries the row: wait
    held: int  # refused max_attempts times: left until --retry
    deletable: int
    cap: int
    calls: int
    credits: int

    @property
    def over_cap(self) -> bool:
        return self.deletable > self.cap

    def as_dict(self) -> dict[str, Any]:
        return {
            "tombstones": self.tombstones, "revived": self.revived,
            "never_sent": self.never_sent, "in_flight": self.in_flight, "held": self.held,
            "deletable": self.deletable, "max_deletes": self.cap, "over_cap": self.over_cap,
            "calls": self.calls, "credits": self.credits,
        }  # fmt: skip


@dataclass
class DeleteReport:
    """What a delete run did (``refused``: nothing sent, and why)."""

    plan: DeletePlan
    dry_run: bool = False
    refused: str | None = None
    deleted: int = 0  # Zoho deleted the record now
    already_gone: int = 0  # Zoho no longer held it (INVALID_DATA): done too
    failed: int = 0
    calls: int = 0
    credits_spent: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # code → ids
    tried: list[str] = field(default_factory=list)  # keys sent in this run (sent once a run)

    def as_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan.as_dict(), "dry_run": self.dry_run, "refused": self.refused,
            "deleted": self.deleted, "already_gone": self.already_gone, "failed": self.failed,
            "calls": self.calls, "credits_predicted": self.plan.credits,
            "credits_spent": self.credits_spent, "errors": dict(self.errors),
        }  # fmt: skip


def calls_and_credits(ids: int) -> tuple[int, int]:
    """Delete Records calls and credits for ``ids`` ids: full calls of 100, 1 credit per 10."""
    full, rest = divmod(ids, limits.DELETE_MAX_RECORDS)
    credits = full * limits.delete_credits(limits.DELETE_MAX_RECORDS)
    return full + (1 if rest else 0), credits + (limits.delete_credits(rest) if rest else 0)


def _parts(conn: Connection, settings: Settings) -> dict[str, sql.Composable]:
    n = Names(settings)
    return {
        "z": n.ledger_table("tombstones"),
        "t": n.table,
        "k": n.key,
        "kt": key_type(conn, settings),
        "b": n.ledger_table("batches"),
    }


_REVIVED = "EXISTS (SELECT 1 FROM {t} t WHERE t.{k} = z.row_key::{kt})"
_IN_FLIGHT = "EXISTS (SELECT 1 FROM {b} b WHERE b.finished_at IS NULL AND z.row_key = ANY(b.keys))"


def plan(conn: Connection, settings: Settings, *, cap: int | None = None) -> DeletePlan:
    """Count the tombstones by what a run would do with them (read-only)."""
    p = _parts(conn, settings)
    statement = sql.SQL(
        "SELECT count(*),"
        " count(*) FILTER (WHERE " + _REVIVED + "),"
        " count(*) FILTER (WHERE NOT " + _REVIVED + " AND z.zoho_id IS NULL AND NOT "
        + _IN_FLIGHT + "),"
        " count(*) FILTER (WHERE NOT " + _REVIVED + " AND z.zoho_id IS NULL AND "
        + _IN_FLIGHT + "),"
        " count(*) FILTER (WHERE NOT " + _REVIVED + " AND z.zoho_id IS NOT NULL"
        " AND z.attempts >= {max}),"
        " count(*) FILTER (WHERE NOT " + _REVIVED + " AND z.zoho_id IS NOT NULL"
        " AND z.attempts < {max})"
        " FROM {z} z"
    ).format(max=sql.Literal(settings.max_attempts), **p)
    with conn.cursor() as cur:
        cur.execute(statement)
        total, revived, never, flying, held, deletable = cur.fetchone()  # type: ignore[misc]
    calls, credits = calls_and_credits(int(deletable))
    return DeletePlan(
        tombstones=int(total), revived=int(revived), never_sent=int(never),
        in_flight=int(flying), held=int(held), deletable=int(deletable),
        cap=settings.max_deletes if cap is None else cap, calls=calls, credits=credits,
    )  # fmt: skip


def _drop_needless(conn: Connection, settings: Settings) -> int:
    p = _parts(conn, settings)
    statement = sql.SQL(
        "DELETE FROM {z} z WHERE " + _REVIVED + " OR (z.zoho_id IS NULL AND NOT " + _IN_FLIGHT
        + ")"
    ).format(**p)
    with conn, conn.cursor() as cur:
        cur.execute(statement)
        return int(cur.rowcount)


def run(
    conn: Connection,
    settings: Settings,
    client: ZohoClient | None,
    *,
    dry_run: bool = False,
    allow: int | None = None,
) -> DeleteReport:
    """One delete run (see the module docstring). ``allow``: this run's cap instead of
    ``max_deletes``. Above the cap the report says ``refused`` and nothing is sent (the
    ``ordersync_deletes_over_cap`` metric alerts); ``CreditBudgetExceeded`` (nothing sent) when
    the budget cannot pay for it."""
    cap = settings.max_deletes if allow is None else allow
    with conn:
        before = plan(conn, settings, cap=cap)
    report = DeleteReport(before, dry_run=dry_run)
    if dry_run:
        return report
    if before.over_cap:
        report.refused = (
            f"{before.deletable} Zoho records to delete, above max_deletes = {cap}: nothing"
            " sent. Check the legacy deletes; then raise sync.max_deletes or run"
            f" `ordersync deletes --allow {before.deletable}` once"
        )
        log.error("deletes refused: %s", report.refused)
        return report
    if client is None:
        raise ValueError("a delete run that sends needs a Zoho client")
    left = client.credits.remaining()
    if before.credits > left:
        raise CreditBudgetExceeded(
            "CREDIT_BUDGET",
            f"deletes need {before.credits} credits, {left} are left in the 24 h budget"
            " (after the reserve)",
            {"needed": before.credits, "left": left},
        )
    dropped = _drop_needless(conn, settings)
    if dropped:
        log.info("deletes: %s tombstones needed no call (re-created or never in Zoho)", dropped)
    while _send_chunk(conn, settings, client, report):
        pass
    log.info(
        "deletes: %s deleted, %s already gone, %s refused, %s calls, %s credits (predicted %s)",
        report.deleted, report.already_gone, report.failed, report.calls,
        report.credits_spent, before.credits,
    )  # fmt: skip
    return report


def _send_chunk(
    conn: Connection, settings: Settings, client: ZohoClient, report: DeleteReport
) -> bool:
    """Lock up to 100 deletable tombstones, delete their records, record the outcome."""
    p = _parts(conn, settings)
    with conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT z.row_key, z.zoho_id FROM {z} z"
                " WHERE z.zoho_id IS NOT NULL AND z.attempts < %s AND NOT " + _REVIVED
                + " AND NOT z.row_key = ANY(%s::text[])"
                " ORDER BY z.deleted_at, z.row_key LIMIT %s FOR UPDATE OF z SKIP LOCKED"
            ).format(**p),
            (settings.max_attempts, report.tried, limits.DELETE_MAX_RECORDS),
        )
        chunk = [(str(k), str(z)) for k, z in cur.fetchall()]
        if not chunk:
            return False
        ids = [zoho_id for _, zoho_id in chunk]
        report.tried.extend(key for key, _ in chunk)
        outcomes = client.delete_records(ids)  # the rows stay locked for the call
        report.calls += 1
        report.credits_spent += limits.delete_credits(len(ids))
        done = [key for (key, _), o in zip(chunk, outcomes, strict=True) if o.gone]
        refused = [(key, o.code) for (key, _), o in zip(chunk, outcomes, strict=True)
                   if not o.gone]  # fmt: skip
        report.deleted += sum(1 for o in outcomes if o.ok)
        report.already_gone += sum(1 for o in outcomes if o.gone and not o.ok)
        report.failed += len(refused)
        for _, code in refused:
            report.errors[code] = report.errors.get(code, 0) + 1
        if done:
            cur.execute(
                sql.SQL("DELETE FROM {z} WHERE row_key = ANY(%s)").format(z=p["z"]), (done,)
            )
        if refused:
            cur.execute(
                sql.SQL(
                    "UPDATE {z} z SET attempts = z.attempts + 1, last_error = r.code"
                    " FROM unnest(%s::text[], %s::text[]) AS r(row_key, code)"
                    " WHERE z.row_key = r.row_key"
                ).format(z=p["z"]),
                ([k for k, _ in refused], [c for _, c in refused]),
            )
    return True


def retry(conn: Connection, settings: Settings) -> int:
    """Release refused tombstones (attempts back to 0); how many."""
    p = _parts(conn, settings)
    with conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("UPDATE {z} SET attempts = 0 WHERE attempts > 0").format(z=p["z"])
        )
        return int(cur.rowcount)


def explain(report: DeleteReport) -> list[str]:
    """Lines for a person: the plan, the cost before and after."""
    p = report.plan
    lines = [
        f"tombstones: {p.tombstones} ({p.revived} re-created, {p.never_sent} never in Zoho,"
        f" {p.in_flight} in flight, {p.held} held after refusals)",
        f"to delete in Zoho: {p.deletable} (max_deletes {p.cap}) in {p.calls} calls,"
        f" will spend {p.credits} credits",
    ]
    if report.dry_run:
        lines.append("dry run: nothing sent")
    elif report.refused:
        lines.append(f"refused: {report.refused}")
    else:
        lines.append(
            f"deleted {report.deleted}, already gone {report.already_gone}, refused"
            f" {report.failed}; spent {report.credits_spent} credits in {report.calls} calls"
            f" (predicted {p.credits})"
        )
        for code, count in sorted(report.errors.items()):
            lines.append(f"  {code}: {count}")
    return lines
