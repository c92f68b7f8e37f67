"""Run one SDK scenario (sdk_driver.py) in a fresh interpreter and decode its answer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Any

DRIVER = Path(__file__).with_name("sdk_driver.py")


def sim_credentials(sim: Any) -> dict[str, str]:
    """The connection facts the driver needs, from a SimProcess (or the fixture's handle)."""
    return {
        "base_url": sim.base_url,
        "client_id": sim.client_id,
        "client_secret": sim.client_secret,
        "refresh_token": sim.refresh_token,
        "zgid": str(sim.zgid),
    }


def run_sdk(
    sim: Any,
    workdir: Path,
    steps: list[dict[str, Any]],
    *,
    tz: str = "UTC",
    timeout: float = 120.0,
    **overrides: Any,
) -> dict[str, Any]:
    """Run ``steps`` through the official SDK against ``sim``; return the driver's JSON report."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec = {**sim_credentials(sim), "workdir": str(workdir), "steps": steps, **overrides}
    spec_path = workdir / "spec.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    env = {**os.environ, "TZ": tz, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(DRIVER), str(spec_path)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(workdir),
        env=env,
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise AssertionError(
            f"SDK driver failed (rc={proc.returncode})\nstdout:\n{proc.stdout[-4000:]}\n"
            f"stderr:\n{proc.stderr[-4000:]}"
        )
    report: dict[str, Any] = json.loads(lines[-1])
    return report


def step(report: dict[str, Any], index: int) -> dict[str, Any]:
    """The output of step ``index``; fails loudly with the SDK log tail when the step broke."""
    assert "init_error" not in report, f"SDK initialisation failed: {report['init_error']}"
    out = report["steps"][index]
    problems = {k: out[k] for k in ("sdk_error", "error", "traceback", "log_tail") if k in out}
    assert not ({"sdk_error", "error"} & problems.keys()), f"step {out['op']} raised: {problems}"
    assert out.get("response", True) is not None, (
        f"SDK returned no response for {out['op']} (it could not parse the answer): "
        f"{out.get('log_tail')}"
    )
    return out


def obj(out: dict[str, Any]) -> dict[str, Any]:
    """The parsed response object of a step."""
    parsed = out.get("object")
    assert isinstance(parsed, dict), f"SDK parsed no object for {out.get('op')}: {out}"
    return parsed


def plain(value: Any) -> Any:
    """Decode the driver's typed encoding back to Python values (date, datetime, str for Choice)."""
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        if "$date" in value:
            return date.fromisoformat(value["$date"])
        if "$datetime" in value:
            return datetime.fromisoformat(value["$datetime"])
        if "$choice" in value:
            return plain(value["$choice"])
        return {k: plain(v) for k, v in value.items()}
    return value


def choice(value: str) -> dict[str, str]:
    """Spec encoding for a picklist value (sent as an SDK Choice)."""
    return {"$choice": value}


def typed_date(value: date) -> dict[str, str]:
    return {"$date": value.isoformat()}


def typed_datetime(value: datetime) -> dict[str, str]:
    assert value.tzinfo is not None
    return {"$datetime": value.isoformat()}


def assert_same_value(field: str, parsed: Any, sent: Any) -> None:
    """Assert the SDK parsed back exactly the value (and Python type) that was sent."""
    if isinstance(sent, dict) and "$datetime" in sent:
        assert isinstance(parsed, dict) and "$datetime" in parsed, (
            f"{field}: {parsed!r} not a datetime"
        )
        assert parsed["$aware"], f"{field}: parsed datetime has no offset"
        got = datetime.fromisoformat(parsed["$datetime"])
        want = datetime.fromisoformat(sent["$datetime"])
        assert got == want, f"{field}: instant {got.isoformat()} != sent {want.isoformat()}"
        return
    assert parsed == sent, f"{field}: SDK parsed {parsed!r}, expected {sent!r}"
    assert type(parsed) is type(sent), (
        f"{field}: SDK parsed a {type(parsed).__name__}, expected {type(sent).__name__}"
    )


def assert_record_matches(parsed: dict[str, Any], sent: dict[str, Any]) -> None:
    """Every field that was sent comes back with the same value and type."""
    assert parsed.get("$type") == "Record", parsed
    for field, value in sent.items():
        assert field in parsed, (
            f"field {field} missing from the record the SDK parsed: {sorted(parsed)}"
        )
        assert_same_value(field, parsed[field], value)
