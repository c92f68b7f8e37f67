"""``ordersync config check`` as a subprocess against a real database it must not change."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.settings.conftest import snapshot

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = (REPO / "ordersync.example.toml").read_text(encoding="utf-8")
DEMO_DSN = "postgresql://postgres@127.0.0.1:5432/ordersync_demo"
SECRETS = ("Pw-DSN-5b1c", "cs-SECRET-41d2", "rt-SECRET-93aa")


def config_text(dsn: str, extra: str = "") -> str:
    """The example configuration pointed at ``dsn``, with recognisable secrets."""
    with_password = dsn.replace("postgres@", f"postgres:{SECRETS[0]}@")  # trust auth ignores it
    text = EXAMPLE.replace(DEMO_DSN, with_password)
    text = text.replace('"zohosim-secret"', f'"{SECRETS[1]}"')
    text = text.replace('"1000.zohosim.refresh"', f'"{SECRETS[2]}"')
    assert all(secret in text for secret in SECRETS)
    return text + extra


def run_check(tmp_path: Path, text: str, *args: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "ordersync.toml"
    path.write_text(text, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERSYNC_")}
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "--config", str(path), "config", "check", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    for secret in SECRETS:
        assert secret not in result.stdout + result.stderr
    return result


def test_good_config_passes_and_prints_masked_settings(legacy_dsn: str, tmp_path: Path) -> None:
    before = snapshot(legacy_dsn)
    result = run_check(tmp_path, config_text(legacy_dsn))
    assert result.returncode == 0, result.stderr
    shown = tomllib.loads(result.stdout)  # the printed configuration is itself TOML
    assert shown["source"]["dsn"] == "********"
    assert shown["zoho"]["client_secret"] == "********"
    assert shown["sync"]["batch_size"] == 25_000
    assert len(shown["mapping"]) == 12
    assert "configuration OK" in result.stderr
    assert snapshot(legacy_dsn) == before


def test_json_output(legacy_dsn: str, tmp_path: Path) -> None:
    result = run_check(tmp_path, config_text(legacy_dsn), "--json")
    document = json.loads(result.stdout)
    assert result.returncode == 0
    # no zohosim on the example's port here: the Zoho part is skipped, saying so
    assert document["ok"] is True
    assert [(p["severity"], p["key"]) for p in document["problems"]] == [("warning", "zoho")]
    assert document["settings"]["zoho"]["refresh_token"] == "********"


def test_unreachable_database(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run_check(tmp_path, config_text(f"postgresql://postgres@127.0.0.1:{port}/nowhere"))
    assert result.returncode == 1
    assert "error: source.dsn: cannot connect to the database" in result.stderr


def missing_column(text: str) -> str:
    return text + '\n[[mapping]]\ncolumn = "discount"\napi_name = "Discount"\ntype = "decimal"\n'


def incompatible_type(text: str) -> str:
    return text + '\n[[mapping]]\ncolumn = "legacy_date"\napi_name = "Legacy"\ntype = "date"\n'


def hostile_table(text: str) -> str:
    return text.replace('table = "orders"', 'table = "orders; DROP TABLE orders; --"')


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (hostile_table, "error: source.table: table public.orders; DROP TABLE orders; -- does not"),
        (missing_column, "error: mapping[12].column: table public.orders has no column 'discount'"),
        (incompatible_type, "error: mapping[12].type: column 'legacy_date' is text"),
        (lambda t: t.replace("max_attempts = 3", "max_atempts = 3"), "error: sync.max_atempts"),
        (lambda t: t.replace("batch_size = 25000", "batch_size = 50000"), "error: sync.batch_size"),
        (lambda t: t.replace('client_id = "1000.ZOHOSIMCLIENT"', ""), "error: zoho.client_id"),
    ],
)
def test_bad_configs_fail_naming_the_key(
    legacy_dsn: str, tmp_path: Path, change: object, expected: str
) -> None:
    before = snapshot(legacy_dsn)
    result = run_check(tmp_path, change(config_text(legacy_dsn)))  # type: ignore[operator]
    assert result.returncode == 1
    assert expected in result.stderr
    assert snapshot(legacy_dsn) == before


def test_a_warning_does_not_fail_the_check(legacy_dsn: str, tmp_path: Path) -> None:
    extra = '\n[[mapping]]\ncolumn = "weight"\napi_name = "Weight"\ntype = "decimal"\n'
    result = run_check(tmp_path, config_text(legacy_dsn, extra))
    assert result.returncode == 0
    assert "warning: mapping[12].type: column 'weight' is double precision" in result.stderr


def test_show_prints_toml_without_touching_the_database(tmp_path: Path) -> None:
    path = tmp_path / "ordersync.toml"
    path.write_text(config_text("postgresql://postgres@127.0.0.1:1/none"), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERSYNC_")}
    env["ORDERSYNC_SYNC_BATCH_SIZE"] = "777"
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "--config", str(path), "config", "show"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert tomllib.loads(result.stdout)["sync"]["batch_size"] == 777  # environment applied
    assert not any(secret in result.stdout for secret in SECRETS)
