"""Rows Zoho refuses for their data, which our field rules could not know: sent once, no more.

zohosim runs here with a stricter module than the mapping expects: its ``Order_Status``
picklist lacks ``Refunded`` (the org's admin removed it), so Zoho refuses every refunded order
with ``INVALID_DATA``, a permanent code.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import MakeE2E
from zohosim.testing import SimProcess

BULK_JOB_CREDITS = 500
SCHEMA = Path(__file__).resolve().parents[2] / "zohosim" / "orders_schema.json"


@pytest.fixture(scope="module")
def strict_zohosim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    schema = json.loads(SCHEMA.read_text())
    for field in schema["modules"][0]["fields"]:
        if field["api_name"] == "Order_Status":
            field["pick_list_values"].remove("Refunded")
    path = tmp_path_factory.mktemp("schema") / "orders.json"
    path.write_text(json.dumps(schema))
    sim = SimProcess(extra_args=["--schema", str(path)])
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def zohosim(strict_zohosim: SimProcess) -> Iterator[SimProcess]:
    """``make_e2e`` against the strict server, emptied for each test."""
    strict_zohosim.admin.reset()
    yield strict_zohosim


def _refunded(world: object) -> set[str]:
    rows = world.query("SELECT id FROM orders WHERE status = 'Refunded'")  # type: ignore[attr-defined]
    return {str(r[0]) for r in rows}


def test_a_row_zoho_refuses_for_its_data_is_not_sent_again_until_it_changes(
    make_e2e: MakeE2E,
) -> None:
    world = make_e2e(rows=6_000, batch_size=6_000)
    refused = _refunded(world)
    assert 500 < len(refused) < 1_500  # a sixth of the orders
    run_id = world.start_run()
    progress = world.wait_done(run_id)

    assert progress["state"] == "done"
    assert progress["rows_skipped"] == progress["rows_held"] == len(refused)
    assert progress["rows_done"] == 6_000
    # the bulk job only: no retry round re-sends what can only be refused again
    credits = world.sim.admin.credits()
    assert credits["by_api"] == {"bulk_create": BULK_JOB_CREDITS, "org": 1}
    assert progress["credits_spent"] == BULK_JOB_CREDITS + 1
    errors = world.query(
        "SELECT row_key, code, field, attempts, quarantined FROM ordersync.row_errors"
    )
    assert {e[0] for e in errors} == refused
    assert {e[1:] for e in errors} == {("INVALID_DATA", "Order_Status", 1, True)}

    # a second run costs nothing for them
    again = world.start_run()
    assert world.wait_done(again)["state"] == "done"
    assert world.sim.admin.credits()["used_24h"] == BULK_JOB_CREDITS + 1

    # fixed in the legacy app: each is sent once, by upsert (1 credit per 10 records)
    fixed = sorted(refused, key=int)[:15]
    world.query("UPDATE orders SET status = 'Cancelled' WHERE id = ANY(%s::int[])", (fixed,))
    third = world.start_run()
    assert world.wait_done(third)["state"] == "done"
    credits = world.sim.admin.credits()
    assert credits["by_api"]["upsert"] == 2 and credits["calls_by_api"]["upsert"] == 1
    world.assert_zoho_holds_legacy(except_keys=frozenset(refused - set(fixed)))


def test_retry_force_sends_a_held_row_once_more(make_e2e: MakeE2E) -> None:
    from pipeline.legacy.connection import connect
    from pipeline.retry import retry_row_errors

    world = make_e2e(rows=300, batch_size=6_000)
    refused = _refunded(world)
    assert world.wait_done(world.start_run())["state"] == "done"
    spent = world.sim.admin.credits()["used_24h"]
    assert spent == 30  # 300 rows by upsert: 3 calls of 100
    conn = connect(world.settings)
    try:
        with conn:
            released = retry_row_errors(conn, world.settings, include_quarantined=True)
    finally:
        conn.close()
    assert released.unquarantined == len(refused)
    assert world.wait_done(world.start_run())["state"] == "done"
    # sent once more (and refused again: held again at once)
    assert world.sim.admin.credits()["used_24h"] == spent + -(-len(refused) // 10)
    assert world.wait_done(world.start_run())["state"] == "done"
    assert world.sim.admin.credits()["used_24h"] == spent + -(-len(refused) // 10)


def test_with_the_module_read_the_rows_zoho_would_refuse_are_never_sent(
    make_e2e: MakeE2E,
) -> None:
    """The checks cache the module's fields; the workers' row rules then include Zoho's
    picklist, so the refunded orders are held back before any call."""
    from pipeline import mapping_check
    from pipeline.zoho.codes import VALIDATION_CODE

    world = make_e2e(rows=6_000, batch_size=6_000)
    refused = _refunded(world)
    problems = mapping_check.against_zoho(world.settings)  # what sync initial runs first
    assert [p.key for p in problems] == ["mapping[4] (Order_Status)"]
    assert "'Refunded', which Zoho's Order_Status picklist" in problems[0].message
    assert world.sim.admin.credits()["by_api"] == {"fields": 1}
    run_id = world.start_run()
    progress = world.wait_done(run_id)

    assert progress["state"] == "done"
    assert progress["rows_validated_out"] == len(refused) and progress["rows_skipped"] == 0
    errors = world.query("SELECT row_key, code, field FROM ordersync.row_errors")
    assert {e[0] for e in errors} == refused
    assert {e[1:] for e in errors} == {(VALIDATION_CODE, "Order_Status")}
    credits = world.sim.admin.credits()
    assert credits["by_api"] == {"fields": 1, "bulk_create": BULK_JOB_CREDITS, "org": 1}
    world.assert_zoho_holds_legacy(except_keys=frozenset(refused))
