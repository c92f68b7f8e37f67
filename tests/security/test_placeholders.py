"""No process starts on the env template's placeholders (``CHANGE_ME…``), nor on a DSN that
does not parse; the refusal names the setting and never repeats the value.

Every deploy path (docker-compose.yml, the systemd units, ``ordersync worker|beat|web``) runs
one of these entry points, and each loads the settings at start-up
(``pipeline.settings.load.refuse_placeholders``). Flower's and /metrics' credentials have their
own guard (``ordersync secret check``, tests/deploy; tests/cli/test_web.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.settings import ConfigError, load_settings
from tests.deploy.deployfiles import active_env

REPO = Path(__file__).resolve().parents[2]
ENTRY_POINTS = {
    "worker": ["-m", "celery", "-A", "tasks.app", "worker", "-l", "INFO"],
    "beat": ["-m", "celery", "-A", "tasks.app", "beat", "-l", "INFO"],
    "web": ["-m", "cli.web", "--port", "0"],
    "cli": ["-m", "cli.main", "status", "--json"],
}
# What the template ships (deploy/ordersync.env.example), one credential at a time.
TEMPLATE = active_env()
PLACEHOLDERS = {
    "ORDERSYNC_SOURCE_DSN": "source.dsn",
    "ORDERSYNC_ZOHO_CLIENT_ID": "zoho.client_id",
    "ORDERSYNC_ZOHO_CLIENT_SECRET": "zoho.client_secret",
    "ORDERSYNC_ZOHO_REFRESH_TOKEN": "zoho.refresh_token",
}


def _start(entry: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ORDERSYNC_")}
    return subprocess.run(
        [sys.executable, *ENTRY_POINTS[entry]],
        env={**clean, "PYTHONPATH": str(REPO), **env}, cwd=tmp_path,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_no_process_starts_on_a_placeholder_credential(entry: str, tmp_path: Path) -> None:
    # one placeholder per process (all four are tried on the CLI below): the other values real
    name = {"worker": "ORDERSYNC_ZOHO_CLIENT_SECRET", "beat": "ORDERSYNC_ZOHO_REFRESH_TOKEN",
            "web": "ORDERSYNC_SOURCE_DSN", "cli": "ORDERSYNC_ZOHO_CLIENT_ID"}[entry]  # fmt: skip
    value = TEMPLATE[name]
    assert "CHANGE_ME" in value
    done = _start(entry, {name: value}, tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-2000:]
    assert PLACEHOLDERS[name] in output and "placeholder" in output and name in output
    assert value not in output


@pytest.mark.parametrize("name", sorted(PLACEHOLDERS))
def test_the_settings_refuse_each_placeholder_of_the_template(name: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        load_settings(empty, {name: TEMPLATE[name]})
    assert refused.value.key == PLACEHOLDERS[name] and name in str(refused.value)
    assert TEMPLATE[name] not in str(refused.value)
    load_settings(empty, {name: TEMPLATE[name].replace("CHANGE_ME", "real")})


def test_a_dsn_with_a_bare_percent_stops_the_web_process_without_its_password(
    tmp_path: Path,
) -> None:
    password = "S3CRET-pw%zz-" + os.urandom(4).hex()
    dsn = f"postgresql://postgres:{password}@127.0.0.1:5432/postgres"
    done = _start("web", {"ORDERSYNC_SOURCE_DSN": dsn}, tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output[-2000:]
    assert "source.dsn" in output and "%25" in output
    assert password not in output and "S3CRET-pw" not in output
