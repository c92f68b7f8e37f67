"""Demo data: deterministic seeding with bad rows of the kinds Zoho rejects; churn like an app."""

from __future__ import annotations

from cli.main import main
from pipeline import demo
from pipeline.legacy.connection import connect
from pipeline.settings import Settings
from tests.legacy.helpers import query


def test_seed_is_deterministic_with_bad_rows(fresh_db: Settings) -> None:
    conn = connect(fresh_db)
    result = demo.seed(conn, fresh_db, 400, bad_rows=8, seed=5)
    conn.close()
    assert (result.first_id, result.last_id) == (1, 400)
    assert len(result.bad_rows) == 8
    assert sorted(k.value for k in result.bad_rows.values()) == sorted(
        [k.value for k in demo.BadKind] * 2
    )
    assert result.bad_rows == demo.bad_row_ids(1, 400, 8, 5)
    rows = dict(
        query(
            fresh_db,
            "SELECT id, (customer_email, customer_name, status, order_number)::text FROM orders",
        )
    )
    for row_id, kind in result.bad_rows.items():
        email, name, status, number = query(
            fresh_db,
            "SELECT customer_email, customer_name, status, order_number FROM orders WHERE id = %s",
            (row_id,),
        )[0]
        if kind is demo.BadKind.BAD_EMAIL:
            assert "@@" in email
        elif kind is demo.BadKind.LONG_NAME:
            assert len(name) > 100
        elif kind is demo.BadKind.UNKNOWN_STATUS:
            assert status not in demo.STATUSES
        else:
            assert number is None
    good = [r for r in range(1, 401) if r not in result.bad_rows]
    statuses = query(fresh_db, "SELECT DISTINCT status FROM orders WHERE id = ANY(%s)", (good,))
    assert {s for (s,) in statuses} <= set(demo.STATUSES)
    assert (
        query(
            fresh_db, "SELECT count(*) FROM orders WHERE notes LIKE '%%,%%' OR notes LIKE '%%\n%%'"
        )[0][0]
        > 0
    )
    # the same seed on a fresh table gives the same rows
    query(fresh_db, "DROP TABLE orders")
    conn = connect(fresh_db)
    demo.seed(conn, fresh_db, 400, bad_rows=8, seed=5)
    conn.close()
    again = dict(
        query(
            fresh_db,
            "SELECT id, (customer_email, customer_name, status, order_number)::text FROM orders",
        )
    )
    assert again == rows


def test_churn_mixes_mapped_and_unmapped_writes(legacy_db: Settings) -> None:
    query(legacy_db, "UPDATE orders SET synced = true")
    conn = connect(legacy_db)
    counts = demo.churn(conn, legacy_db, rate=200, seconds=1.0, seed=3)
    conn.close()
    assert set(counts) == {"insert", "mapped_update", "unmapped_update"}
    assert 20 <= sum(counts.values()) <= 210  # paced at 200/s; a busy machine does fewer
    total = query(legacy_db, "SELECT count(*) FROM orders")[0][0]
    assert total == 200 + counts["insert"]
    pending = query(legacy_db, "SELECT count(*) FROM orders WHERE NOT synced")[0][0]
    # inserts are pending; mapped updates may hit the same row or set an equal value
    assert counts["insert"] <= pending <= counts["insert"] + counts["mapped_update"]
    bumped = query(legacy_db, "SELECT count(*) FROM orders WHERE sync_version > 1")[0][0]
    assert bumped <= counts["mapped_update"]


def test_cli_seed(fresh_db: Settings, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "ordersync.toml"
    config.write_text(f'[source]\ndsn = "{fresh_db.source.dsn.reveal()}"\n')
    assert main(["--config", str(config), "demo", "seed", "--rows", "30", "--bad-rows", "4"]) == 0
    assert "seeded ids 1..30" in capsys.readouterr().out
    assert query(fresh_db, "SELECT count(*) FROM orders") == [(30,)]
    assert main(["--config", str(config), "demo", "seed", "--rows", "-1"]) == 1
