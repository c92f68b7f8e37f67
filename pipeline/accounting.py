"""Every credit accounted for: what a run will cost, what it cost, and why the two differ.

Before a run (the dry run, and :func:`forecast` stored with the run when it starts): the rows
Zoho can take (*writable*: pending, free, passing the field rules), priced claim by claim as
the run prices them (:func:`pipeline.report.initial_run_plan`), plus one credit for the org id
when it is not cached yet. The *minimum* is the proven floor for the same rows, each sent once:
``min over b of 500·b + ⌈max(0, n − 25,000·b)/10⌉`` (:func:`pipeline.planner.min_credits`).

After (``sync initial --follow``, ``status``, the demo summary): the credits the ledger charged
to the run, by API, and one line per cause of any difference (:func:`explain`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg2 import sql
from psycopg2.extensions import connection as Connection

from pipeline import planner
from pipeline.claims import initial_run_plan
from pipeline.legacy.extract import count_sendable, free_rows
from pipeline.legacy.names import Names, key_type
from pipeline.settings import Settings
from pipeline.zoho import codes
from pipeline.zoho.limits import BULK_JOB_CREDITS, DEFAULT_CALL_CREDITS


@dataclass(frozen=True)
class Forecast:
    """What an initial run would spend on the rows pending now."""

    writable: int  # rows Zoho can take: free, pending, passing the field rules
    validated_out: int  # free pending rows that break a rule: held back, never sent
    plan: planner.Plan  # as the run prices its claims
    org_call: int  # 1 when the org id is not cached yet (GET org before the first upload)

    @property
    def credits(self) -> int:
        """The credits the run will spend (its plan plus the org call)."""
        return self.plan.credits + (self.org_call if self.plan.bulk_jobs else 0)

    @property
    def minimum(self) -> int:
        """The proven floor for the writable rows, each sent once (org call excluded)."""
        return planner.min_credits(self.writable)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in ``runs.stats["forecast"]``)."""
        return {
            "writable": self.writable,
            "validated_out": self.validated_out,
            "plan": self.plan.as_dict(),
            "org_call": self.org_call if self.plan.bulk_jobs else 0,
            "credits": self.credits,
            "minimum": self.minimum,
        }


def writable_rows(conn: Connection, settings: Settings) -> tuple[int, int]:
    """(rows Zoho can take now, free pending rows that break a field rule), in the caller's
    transaction (read-only is enough)."""
    kt = key_type(conn, settings)
    with conn.cursor() as cur:
        free = free_rows(cur, settings, kt)
        if free.broken is None:
            return count_sendable(cur, settings, kt, free), 0
        # one pass, each row's rules evaluated once (by the second count)
        cur.execute(
            sql.SQL("SELECT count(*), count(*) FILTER (WHERE {broken}) FROM {table} t WHERE {free}")
            .format(broken=free.broken, table=Names(settings).table, free=free.free)
        )  # fmt: skip
        total, invalid = (int(v) for v in cur.fetchone())  # type: ignore[union-attr]
        writable = total - invalid
    return writable, invalid


def forecast(conn: Connection, settings: Settings, *, org_cached: bool | None = None) -> Forecast:
    """The forecast of an initial run on the rows pending now (``org_cached`` None: assume the
    org id must be fetched)."""
    writable, invalid = writable_rows(conn, settings)
    return Forecast(
        writable=writable,
        validated_out=invalid,
        plan=initial_run_plan(writable, settings.batch_size),
        org_call=0 if org_cached else DEFAULT_CALL_CREDITS,
    )


def org_id_cached(settings: Settings) -> bool | None:
    """Is the org id cached in Redis (so no GET org is needed)? None when Redis cannot say."""
    import redis  # only the commands that print a forecast need it

    try:
        client = redis.Redis.from_url(settings.redis_url, socket_timeout=2)
        try:
            return bool(client.exists(f"{settings.zoho.redis_prefix}:zgid"))
        finally:
            client.close()
    except redis.RedisError:
        return None


def run_spending(conn: Connection, settings: Settings, run_id: int) -> dict[str, Any]:
    """What the credit ledger charged to a run: credits and calls by API, and the causes of
    extra spending recorded in its batches (stale rows, transient retries, extra jobs)."""
    n = Names(settings)
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT api, coalesce(sum(credits), 0), count(*) FROM {} WHERE run_id = %s"
                " AND credits > 0 GROUP BY api ORDER BY api"
            ).format(n.ledger_table("credit_ledger")),
            (run_id,),
        )
        by_api = {str(a): (int(c), int(k)) for a, c, k in cur.fetchall()}
        cur.execute(
            sql.SQL(
                "SELECT coalesce(sum((stats->>'stale')::bigint), 0),"
                " coalesce(sum((stats->>'retry')::bigint), 0)"
                " FROM {} WHERE run_id = %s"
            ).format(n.ledger_table("batches")),
            (run_id,),
        )
        stale, retried = (int(v) for v in cur.fetchone())  # type: ignore[union-attr]
        cur.execute(
            sql.SQL(
                "SELECT count(*) FROM {} e JOIN {} b ON b.id = e.batch_id"
                " WHERE b.run_id = %s AND e.code <> %s"
            ).format(n.ledger_table("row_errors"), n.ledger_table("batches")),
            (run_id, codes.VALIDATION_CODE),
        )
        refused = int(cur.fetchone()[0])  # type: ignore[index]
    return {
        "credits": sum(c for c, _ in by_api.values()),
        "by_api": {a: c for a, (c, _) in by_api.items()},
        "calls_by_api": {a: k for a, (_, k) in by_api.items()},
        "stale_rows": stale,
        "transient_retries": retried,
        "refused_rows": refused,
    }


def explain(spent: dict[str, Any], predicted: dict[str, Any] | None) -> list[str]:
    """One line each: spent, predicted, minimum, and the causes of any difference."""
    by_api = spent["by_api"]
    parts = []
    jobs = spent["calls_by_api"].get("bulk_create", 0)
    if jobs:
        parts.append(f"{jobs} bulk job(s) {by_api['bulk_create']:,}")
    if "upsert" in by_api:
        parts.append(f"{spent['calls_by_api']['upsert']} upsert call(s) {by_api['upsert']:,}")
    if "org" in by_api:
        parts.append(f"GET org {by_api['org']} (the org id, fetched once a day)")
    others = {a: c for a, c in by_api.items() if a not in ("bulk_create", "upsert", "org")}
    parts.extend(f"{a} {c:,}" for a, c in others.items())
    lines = [f"credits spent  {spent['credits']:,}" + (f" = {' + '.join(parts)}" if parts else "")]
    if predicted is None:
        return lines
    lines.append(
        f"predicted      {predicted['credits']:,} for {predicted['writable']:,} writable rows"
        f" ({predicted['validated_out']:,} held back by the field rules, 0 credits)"
    )
    lines.append(
        f"minimum        {predicted['minimum']:,} (+{predicted['org_call']} org call): every"
        " writable row sent once, by the cheapest mix"
    )
    difference = spent["credits"] - predicted["credits"]
    if difference == 0:
        lines.append("difference     none: spent as predicted")
        return lines
    causes = []
    planned_jobs = predicted["plan"]["bulk_jobs"]
    if jobs > planned_jobs:
        causes.append(
            f"{jobs - planned_jobs} extra bulk job(s) ({BULK_JOB_CREDITS} each: a FAILED job,"
            " or one created again after an unknown outcome)"
        )
    if spent["stale_rows"]:
        causes.append(f"{spent['stale_rows']:,} row(s) edited while in flight, sent again")
    if spent["transient_retries"]:
        causes.append(
            f"{spent['transient_retries']:,} row(s) Zoho skipped for the moment, sent again"
        )
    if "org" in by_api and not predicted["org_call"]:
        causes.append("the org id had expired from the cache (GET org)")
    if "org" not in by_api and predicted["org_call"]:
        causes.append("the org id was cached after all (no GET org)")
    if not causes:
        causes.append("rows that changed or arrived after the forecast")
    lines.append(f"difference     {difference:+,}: " + "; ".join(causes))
    return lines
