"""deploy/systemd: the units run real entry points of ours with the env file, as a dedicated
user, restart on failure, stop Celery warmly, and are hardened. ``systemd-analyze verify``
checks them too where it is installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tasks.base import TIME_LIMIT
from tasks.config import Queue
from tests.deploy.deployfiles import (
    SYSTEMD_DIR,
    Invocation,
    active_env,
    invocation,
    parse_unit,
    run_help,
    unit_values,
)
from tests.fixtures.tools import requires_tool

UNITS = (
    "ordersync-worker@.service",
    "ordersync-beat.service",
    "ordersync-flower.service",
    "ordersync-web.service",
    "ordersync-listen.service",
)
ENV_FILE = "/etc/ordersync/ordersync.env"
INSTALL_BIN = "/opt/ordersync/bin/"
STATE_DIR = "/var/lib/ordersync"
WORKER_INSTANCES = ("db", "zoho")  # the documented instances: one per queue
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
}


def _exec_argv(unit: str, instance: str = "") -> list[str]:
    (command,) = unit_values(parse_unit(SYSTEMD_DIR / unit), "Service", "ExecStart")
    argv = command.replace("%i", instance).replace("%H", "host").split()
    assert argv[0].startswith(INSTALL_BIN), f"{unit}: runs {argv[0]}, not from {INSTALL_BIN}"
    return argv


@pytest.mark.parametrize("unit", UNITS)
def test_unit_settings(unit: str) -> None:
    parsed = parse_unit(SYSTEMD_DIR / unit)
    service = dict(parsed["Service"])
    assert unit_values(parsed, "Service", "EnvironmentFile") == [ENV_FILE]
    assert service["User"] == service["Group"] == "ordersync"
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"]) > 0
    for key, value in HARDENING.items():
        assert service.get(key) == value, f"{unit}: {key}={value}"
    assert service["CapabilityBoundingSet"] == "", f"{unit}: no capabilities"
    read_write = service["ReadWritePaths"].split()
    assert STATE_DIR in read_write
    work_dir = active_env()["ORDERSYNC_SYNC_WORK_DIR"]
    assert any(Path(work_dir).is_relative_to(p) for p in read_write), "work_dir is writable"
    assert "multi-user.target" in dict(parsed["Install"])["WantedBy"].split()


def test_worker_stops_warmly() -> None:
    service = dict(parse_unit(SYSTEMD_DIR / "ordersync-worker@.service")["Service"])
    # SIGTERM to the main process only; the running task may take up to the hard time limit.
    assert service["KillMode"] == "mixed"
    assert int(service["TimeoutStopSec"]) > TIME_LIMIT


def test_units_run_real_entry_points() -> None:
    calls: dict[tuple[str, ...], Invocation] = {}
    for unit in UNITS:
        instances = WORKER_INSTANCES if "@" in unit else ("",)
        for instance in instances:
            argv = _exec_argv(unit, instance)
            inv = invocation([Path(argv[0]).name, *argv[1:]])
            assert inv is not None, f"{unit}: {argv[0]} is not one of our entry points"
            calls[inv.help_argv] = inv
            if "worker" in argv:
                queues = argv[argv.index("-Q") + 1].split(",")
                assert set(queues) <= {q.value for q in Queue}, f"{unit}@{instance}: {queues}"
                assert "-E" in argv, "workers send events for Flower"
            if "beat" in argv:
                assert argv[argv.index("-S") + 1] == "redbeat.RedBeatScheduler"
            if "flower" in argv:
                assert not any("basic" in a for a in argv), "Flower credentials on the command line"
    served = {q for inv in calls.values() for q in inv.help_argv}
    assert {"worker", "beat", "flower"} <= served
    assert "cli.web" in served or "web" in served
    for inv in calls.values():
        run_help(inv)


def test_flower_refuses_to_start_without_a_real_password() -> None:
    parsed = parse_unit(SYSTEMD_DIR / "ordersync-flower.service")
    (guard,) = unit_values(parsed, "Service", "ExecStartPre")
    assert guard == "/opt/ordersync/bin/ordersync secret check FLOWER_BASIC_AUTH"
    argv = [str(Path(sys.executable).with_name("ordersync")), *guard.split()[1:]]
    for value in ("", "admin:CHANGE_ME_flower_password", "a:b", "admin:short-pw"):
        refused = subprocess.run(argv, env={"FLOWER_BASIC_AUTH": value} if value else {},
                                 capture_output=True, text=True)  # fmt: skip
        assert refused.returncode == 1 and "FLOWER_BASIC_AUTH" in refused.stderr, value
        assert "ordersync secret new" in refused.stderr
        assert not value or value.split(":")[1] not in refused.stderr  # never the value
    allowed = subprocess.run(argv, env={"FLOWER_BASIC_AUTH": "admin:" + "x7" * 8})
    assert allowed.returncode == 0


@requires_tool("systemd-analyze", "Debian: apt-get install systemd")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    """systemd's own check, with the install path pointed at this venv."""
    bin_dir = Path(sys.executable).parent
    names = []
    for unit in (*UNITS, "ordersync.target"):
        text = (SYSTEMD_DIR / unit).read_text(encoding="utf-8")
        text = text.replace(INSTALL_BIN, f"{bin_dir}/")
        name = unit.replace("@.", "@db.")
        (tmp_path / name).write_text(text, encoding="utf-8")
        names.append(f"./{name}")
    proc = subprocess.run(
        ["systemd-analyze", "verify", *names],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Unknown" not in output and "ignoring" not in output, output
