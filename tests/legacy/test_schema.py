"""db install / uninstall / status on a real database: idempotent, complete, no rewrite."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cli.main import main
from pipeline import demo
from pipeline.legacy import schema
from pipeline.legacy.connection import connect
from pipeline.mapping import Mapping
from pipeline.settings import Settings
from tests.legacy.helpers import query


def _columns(settings: Settings) -> set[str]:
    return {
        r[0]
        for r in query(
            settings,
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'orders'",
        )
    }


def test_install_twice_uninstall_twice(fresh_db: Settings) -> None:
    conn = connect(fresh_db)
    demo.seed(conn, fresh_db, 50)
    conn.close()
    before = query(fresh_db, "SELECT pg_relation_filenode('orders')")[0][0]

    first = schema.install(fresh_db)
    assert first == ["sync columns", "ledger", "triggers", "pending index"]
    assert schema.install(fresh_db) == ["sync columns", "ledger"]  # nothing new to build
    report = schema.status(fresh_db)
    assert report["installed"] and report["trigger_current"]
    assert report["counts"]["pending"] == 50 and report["counts"]["synced"] == 0
    assert {"synced", "sync_version", "zoho_id"} <= _columns(fresh_db)
    # adding the columns did not rewrite the table
    assert query(fresh_db, "SELECT pg_relation_filenode('orders')")[0][0] == before

    schema.uninstall(fresh_db)
    schema.uninstall(fresh_db)
    report = schema.status(fresh_db)
    assert not report["installed"]
    assert report["triggers"] == [] and report["pending_index"] == "missing"
    assert report["ledger_tables"] == []
    assert not {"synced", "sync_version", "zoho_id"} & _columns(fresh_db)
    assert query(fresh_db, "SELECT count(*) FROM orders")[0][0] == 50  # data untouched
    assert (
        query(
            fresh_db,
            "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE n.nspname = 'ordersync'",
        )[0][0]
        == 0
    )

    assert schema.install(fresh_db)[-1] == "pending index"  # installs again after removal
    assert schema.status(fresh_db)["installed"]


def test_install_creates_ledger_tables(legacy_db: Settings) -> None:
    report = schema.status(legacy_db)
    assert {"runs", "batches", "batch_rows", "row_errors", "claim_lock"} <= set(
        report["ledger_tables"]
    )
    assert report["pending_index"] == "valid"
    assert report["triggers"] == ["orders_ordersync_ins", "orders_ordersync_upd"]


def test_configured_names_are_used(fresh_db: Settings) -> None:
    settings = dataclasses.replace(
        fresh_db,
        source=dataclasses.replace(
            fresh_db.source,
            synced_column="zs_done",
            version_column="zs_ver",
            zoho_id_column="zs_crm_id",
            ledger_schema="zsync",
        ),
    )
    conn = connect(settings)
    demo.seed(conn, settings, 5)
    conn.close()
    schema.install(settings)
    assert {"zs_done", "zs_ver", "zs_crm_id"} <= _columns(settings)
    assert schema.status(settings)["counts"]["pending"] == 5
    schema.uninstall(settings)
    assert not {"zs_done", "zs_ver", "zs_crm_id"} & _columns(settings)


def test_new_mapping_regenerates_trigger(legacy_db: Settings) -> None:
    narrower = Mapping(
        fields=tuple(f for f in legacy_db.mapping.fields if f.column != "notes"),
        key_column="id",
        unique_field="parent_id",
    )
    settings = dataclasses.replace(legacy_db, mapping=narrower)
    assert not schema.status(settings)["trigger_current"]
    assert "triggers" in schema.install(settings)
    assert schema.status(settings)["trigger_current"]
    query(settings, "UPDATE orders SET synced = true")
    query(settings, "UPDATE orders SET notes = 'now unmapped' WHERE id = 1")
    assert query(settings, "SELECT synced, sync_version FROM orders WHERE id = 1")[0] == (True, 1)
    query(
        settings,
        "UPDATE orders SET status = CASE WHEN status = 'Paid' THEN 'New' ELSE 'Paid' END"
        " WHERE id = 1",
    )
    assert query(settings, "SELECT synced FROM orders WHERE id = 1")[0] == (False,)


def test_cli_db_status_and_install(legacy_db: Settings, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "ordersync.toml"
    config.write_text(f'[source]\ndsn = "{legacy_db.source.dsn.reveal()}"\n')
    assert main(["--config", str(config), "db", "install"]) == 0
    assert main(["--config", str(config), "db", "status"]) == 0
    out = capsys.readouterr().out
    assert "installed        yes" in out and "pending          200" in out
    assert legacy_db.source.dsn.reveal() not in out
    assert main(["--config", str(config), "db", "uninstall", "--yes"]) == 0
    assert main(["--config", str(config), "db", "status"]) == 2
