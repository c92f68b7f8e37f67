"""The mapping against the Zoho module's field metadata, as zohosim shapes it (Zoho's shape)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.legacy import schema
from pipeline.mapping_check import check_mapping
from pipeline.settings import DEFAULT_MAPPING, Severity, load_settings
from pipeline.zoho.fields import derive_mapping, parse_fields
from zohosim.schema import load_schema
from zohosim.testing import SimProcess

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "zohosim" / "orders_schema.json"


def _disagreeing() -> dict[str, Any]:
    """The stock module, changed in each way a mapping can disagree with it."""
    schema = json.loads(SCHEMA.read_text())
    fields = schema["modules"][0]["fields"]
    by_name = {f["api_name"]: f for f in fields}
    by_name["Customer_Name"]["length"] = 50  # the mapping allows 100
    by_name["Order_Status"]["pick_list_values"].remove("Refunded")  # the mapping allows it
    by_name["Notes"]["read_only"] = True
    by_name["Amount"]["data_type"] = "date"  # a currency column cannot feed it
    by_name["parent_id"].pop("unique")  # find_by must be unique
    by_name["Email"]["api_name"] = "E_mail"  # renamed in Zoho
    fields.append({"api_name": "Region", "field_label": "Region", "data_type": "text",
                   "length": 40, "system_mandatory": True})  # fmt: skip
    return schema


def _fields(schema: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema))
    module = load_schema(path).module("Orders")
    return parse_fields([f.metadata() for f in module.fields.values()])


def test_the_stock_module_and_the_demo_mapping_agree(tmp_path: Path) -> None:
    fields = _fields(json.loads(SCHEMA.read_text()), tmp_path)
    assert check_mapping(DEFAULT_MAPPING, fields, module="Orders") == []


def test_each_disagreement_is_one_line(tmp_path: Path) -> None:
    fields = _fields(_disagreeing(), tmp_path)
    problems = check_mapping(
        DEFAULT_MAPPING,
        fields,
        module="Orders",
        distinct=lambda column: {"status": ["Lost in transit", "Paid"]}.get(column, []),
    )
    lines = [str(p) for p in problems]
    expected = [
        "error: mapping[0] (parent_id): parent_id is the unique field (find_by) but Zoho",
        "error: mapping[2] (Customer_Name): max_length 100 is above Zoho's length 50",
        "error: mapping[3] (Email): Zoho module Orders has no field 'Email' (did you mean",
        "error: mapping[4] (Order_Status): allowed lists 'Refunded', which Zoho's Order_Status",
        "warning: mapping[4] (Order_Status): the table's status holds 'Lost in transit', which",
        "error: mapping[5] (Amount): type currency cannot feed Zoho's date field",
        "error: mapping[11] (Notes): Notes is read-only: Bulk Write cannot set it",
        "error: mapping: Zoho field Region is mandatory but not mapped",
    ]
    assert len(lines) == len(expected), lines
    for start in expected:
        assert any(line.startswith(start) for line in lines), (start, lines)
    assert sum(p.severity is Severity.WARNING for p in problems) == 1  # bad rows, not mapping


def test_the_row_rules_come_from_zoho_and_the_config_only_tightens(tmp_path: Path) -> None:
    fields = _fields(_disagreeing(), tmp_path)
    rules = {s.api_name: s for s in derive_mapping(DEFAULT_MAPPING, fields).fields}
    assert rules["Customer_Name"].max_length == 50  # Zoho's is shorter: it wins
    assert rules["Name"].max_length == 120 and rules["Name"].mandatory
    assert "Refunded" not in rules["Order_Status"].allowed  # Zoho lacks it: held back
    assert rules["Currency_Code"].allowed == ("USD", "EUR", "GBP", "INR", "JPY")


@pytest.fixture(scope="module")
def disagreeing_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    path = tmp_path_factory.mktemp("schema") / "orders.json"
    path.write_text(json.dumps(_disagreeing()))
    sim = SimProcess(extra_args=["--schema", str(path)])
    try:
        yield sim
    finally:
        sim.stop()


def test_config_check_reads_the_module_over_http_and_fails(
    disagreeing_sim: SimProcess, legacy_dsn: str, tmp_path: Path
) -> None:
    example = (REPO / "ordersync.example.toml").read_text(encoding="utf-8")
    text = example.replace("http://127.0.0.1:8010", disagreeing_sim.base_url)
    text = text.replace(
        "postgresql://postgres@127.0.0.1:5432/ordersync_demo", legacy_dsn
    )  # the example's demo DSN → the test database
    path = tmp_path / "ordersync.toml"
    path.write_text(text, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERSYNC_")}
    env["ORDERSYNC_ZOHO_REDIS_PREFIX"] = f"test:mapcheck:{os.getpid()}"
    schema.install(load_settings(path, env=env))  # its credit ledger records the read
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "--config", str(path), "config", "check", "--json"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    document = json.loads(done.stdout)
    messages = [p["message"] for p in document["problems"] if p["severity"] == "error"]
    assert any("has no field 'Email'" in m for m in messages), messages
    assert any("Region is mandatory but not mapped" in m for m in messages), messages
    assert document["ok"] is False
    assert disagreeing_sim.admin.credits()["by_api"] == {"fields": 1}  # one read, 1 credit


def test_mapping_suggest_prints_a_block_that_loads(
    disagreeing_sim: SimProcess, legacy_dsn: str, tmp_path: Path
) -> None:
    example = (REPO / "ordersync.example.toml").read_text(encoding="utf-8")
    head = example.split("\n[[mapping]]")[0] + "\n"  # the example without its own mapping
    head = head.replace("http://127.0.0.1:8010", disagreeing_sim.base_url).replace(
        "postgresql://postgres@127.0.0.1:5432/ordersync_demo", legacy_dsn
    )
    config = tmp_path / "ordersync.toml"
    config.write_text(head, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERSYNC_")}
    env["ORDERSYNC_ZOHO_REDIS_PREFIX"] = f"test:suggest:{os.getpid()}"
    schema.install(load_settings(config, env=env))
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "--config", str(config), "mapping", "suggest"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert '[[mapping]]\ncolumn = "customer_name"\napi_name = "Customer_Name"' in out
    assert "max_length = 50" in out  # Zoho's length, not the demo mapping's 100
    assert 'column = "customer_email"\napi_name = "E_mail"' in out  # Zoho renamed Email
    assert "mandatory and not matched: Name, Region" in out
    assert "'Refunded'" not in out.split('column = "status"')[1].split("[[mapping]]")[0]
    config.write_text(head + out, encoding="utf-8")
    loaded = load_settings(config, env=env)  # the block is valid configuration
    assert loaded.mapping.api_names[:3] == ("parent_id", "Customer_Name", "E_mail")
