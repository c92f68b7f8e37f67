"""``ordersync sync initial --dry-run``: the plan and the rows Zoho would refuse; writes nothing."""

from __future__ import annotations

from typing import Any

from pipeline import demo
from pipeline.legacy.connection import connect
from pipeline.settings import Settings
from tests.cli.helpers import cli_json, query, run_cli
from tests.fixtures.db import LEGACY_BAD_ROWS, LEGACY_ROWS

TABLES = (
    "orders",
    "ordersync.runs",
    "ordersync.batches",
    "ordersync.row_errors",
    "ordersync.credit_ledger",
)


def snapshot(settings: Settings) -> dict[str, tuple[int, str | None]]:
    """Row count and a digest of every row of the legacy table and the ledger."""
    return {
        table: query(
            settings,
            f"SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {table} t",
        )[0]
        for table in TABLES
    }


def test_dry_run_prints_the_plan_and_bad_rows_and_writes_nothing(legacy_db: Settings) -> None:
    bad = demo.bad_row_ids(1, LEGACY_ROWS, LEGACY_BAD_ROWS, 42)  # how the fixture seeded
    expected: dict[str, list[str]] = {}
    rule_of = {
        demo.BadKind.BAD_EMAIL: "Email.email",
        demo.BadKind.LONG_NAME: "Customer_Name.max_length",
        demo.BadKind.UNKNOWN_STATUS: "Order_Status.picklist",
        demo.BadKind.MISSING_ORDER_NUMBER: "Name.mandatory",
    }
    for row_id, kind in sorted(bad.items()):
        expected.setdefault(rule_of[kind], []).append(str(row_id))
    query(legacy_db, "INSERT INTO ordersync.credit_ledger (api, credits) VALUES ('upsert', 7)")
    before = snapshot(legacy_db)

    document = cli_json(legacy_db, "sync", "initial", "--dry-run", "--json", "--sample", "1")
    assert document["dry_run"] is True
    assert (
        document["rows"]["pending"] == LEGACY_ROWS and document["rows"]["sendable"] == LEGACY_ROWS
    )
    # the 8 bad rows are held back, never sent: 192 writable rows, by upsert (2 calls)
    assert document["rows"]["writable"] == LEGACY_ROWS - LEGACY_BAD_ROWS
    assert document["rows"]["validated_out"] == LEGACY_BAD_ROWS
    assert (document["batch_size"], document["batches"]) == (25_000, 2)
    assert document["plan"]["bulk_jobs"] == 0 and document["plan"]["rows"] == 192
    assert document["plan"]["upsert_calls"] == 2 and document["plan"]["credits"] == 20
    # no bulk job: no upload, so no GET org; predicted = minimum
    assert document["forecast"]["credits"] == document["forecast"]["minimum"] == 20
    assert document["forecast"]["org_call"] == 0
    assert document["cheapest"] == document["plan"]
    assert document["waiting_reason"] == ""
    assert document["credits"]["spent_24h"] == 7 and document["credits"]["left"] == 48_993
    assert document["running_run_ids"] == []
    found = document["validation"]
    assert (found["checked"], found["bad_rows"]) == (LEGACY_ROWS, LEGACY_BAD_ROWS)
    got = {f"{v['field']}.{v['rule']}": v for v in found["violations"]}
    assert set(got) == set(expected)
    for label, keys in expected.items():
        assert got[label]["rows"] == len(keys)
        assert got[label]["first_keys"] == keys[:1]  # --sample 1, in key order
    assert got["Name.mandatory"]["code"] == "MANDATORY_NOT_FOUND"
    assert got["Email.email"]["code"] == "INVALID_DATA"

    text = run_cli(legacy_db, "sync", "initial", "--dry-run")
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("dry run: nothing written; Zoho asked only for the module")
    assert "batches        2: 0 bulk of up to 25,000 rows, 2 upsert call(s)" in text.stdout
    assert "2 upsert call(s) (192 rows): 20 credits" in text.stdout
    assert "will spend     20 credits; minimum for these rows 20" in text.stdout
    assert "(8 more break a field rule: held back, never sent)" in text.stdout
    assert "cheapest" not in text.stdout
    assert f"{LEGACY_BAD_ROWS} of {LEGACY_ROWS} pending rows would be refused" in text.stdout
    for label, keys in expected.items():
        line = next(line for line in text.stdout.splitlines() if line.strip().startswith(label))
        assert f"{len(keys)} row(s)" in line
        assert ", ".join(keys) in text.stdout

    assert snapshot(legacy_db) == before


def test_dry_run_rules_follow_the_data(legacy_db: Settings) -> None:
    # a fixed row passes; synced rows are not checked; a new defect of each rule is found
    query(legacy_db, "UPDATE orders SET synced = true WHERE id > 100")
    query(
        legacy_db,
        "UPDATE orders SET customer_email = 'ok@example.com', customer_name = 'Ann',"
        " status = 'Paid', order_number = 'SO-1' WHERE id <= 100",
    )
    query(legacy_db, "UPDATE orders SET quantity = 1234567890, amount = NULL WHERE id = 5")
    query(legacy_db, "UPDATE orders SET customer_email = 'a@b' WHERE id = 6")
    query(legacy_db, "UPDATE orders SET order_number = '' WHERE id = 7")
    query(legacy_db, "UPDATE orders SET customer_email = repeat('a', 95) || '@x.com' WHERE id = 8")
    document = cli_json(legacy_db, "sync", "initial", "--dry-run", "--json")
    got = {
        f"{v['field']}.{v['rule']}": v["first_keys"] for v in document["validation"]["violations"]
    }
    assert got == {
        "Name.mandatory": ["7"],
        "Email.max_length": ["8"],
        "Email.email": ["6"],
        "Quantity.integer_range": ["5"],
    }
    assert document["validation"]["checked"] == 100 and document["validation"]["bad_rows"] == 4


def test_dry_run_prices_claims_as_the_run_does(legacy_db: Settings) -> None:
    """Bulk batches of ``batch_size`` only where a bulk job is cheaper; the rest by upsert."""
    conn = connect(legacy_db)
    try:
        demo.seed(conn, legacy_db, 5_000, seed=7)  # 5,200 rows pending, 5,192 writable
    finally:
        conn.close()
    before = snapshot(legacy_db)

    def dry(batch_size: int) -> dict[str, Any]:
        env = {"ORDERSYNC_SYNC_BATCH_SIZE": str(batch_size)}
        document: dict[str, Any] = cli_json(
            legacy_db, "sync", "initial", "--dry-run", "--json", env=env
        )
        assert document["rows"]["sendable"] == 5_200 and document["batch_size"] == batch_size
        return document

    # batches of 5,000: one bulk job (500 credits), then 192 rows by 2 upsert calls (not a
    # second bulk batch of 192 rows, as ceil(5,192 / 5,000) = 2 batches would have it)
    plan = dry(5_000)
    assert plan["rows"]["writable"] == 5_192
    assert plan["plan"]["bulk_jobs"] == 1 and plan["plan"]["bulk_rows"] == [5_000]
    assert (plan["plan"]["upsert_calls"], plan["plan"]["upsert_rows"]) == (2, 192)
    assert plan["forecast"]["credits"] == 520 + plan["forecast"]["org_call"]
    assert plan["forecast"]["minimum"] == 500
    assert plan["plan"]["credits"] == 520 and plan["batches"] == 3
    # the cheapest mix for the same rows is one bulk job of all 5,192: said, not planned
    assert plan["cheapest"]["bulk_jobs"] == 1 and plan["cheapest"]["credits"] == 500
    # batches too small for a bulk job to pay: every row by upsert, 52 calls
    small = dry(1_000)
    assert (small["plan"]["bulk_jobs"], small["plan"]["upsert_calls"]) == (0, 52)
    assert small["plan"]["credits"] == 520 and small["batches"] == 52
    # batches of 25,000: one bulk job for everything
    whole = dry(25_000)
    assert (whole["plan"]["bulk_jobs"], whole["plan"]["upsert_calls"]) == (1, 0)
    assert whole["plan"]["credits"] == 500 and whole["batches"] == 1
    assert whole["cheapest"] == whole["plan"]

    text = run_cli(
        legacy_db, "sync", "initial", "--dry-run", env={"ORDERSYNC_SYNC_BATCH_SIZE": "5000"}
    )
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert "batches        3: 1 bulk of up to 5,000 rows, 2 upsert call(s) of up to 100" in lines
    assert (
        "plan           1 bulk job(s) (5,000 rows) + 2 upsert call(s) (192 rows): 520 credits"
        in lines
    )
    assert any(
        line.startswith("cheapest       1 bulk job(s) (5,192 rows): 500 credits") for line in lines
    )
    assert snapshot(legacy_db) == before
