"""Referee: Zoho's official Python SDK obtains and refreshes tokens against zohosim."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from tests.referee.sdkrun import obj, run_sdk, step
from zohosim.testing import SimProcess


def test_sdk_refreshes_token_and_reads_org(zohosim: Any, tmp_path: Path) -> None:
    report = run_sdk(zohosim, tmp_path, [{"op": "org"}])
    assert "init_error" not in report, report.get("init_error")
    init = report["init"]

    assert isinstance(init["access_token"], str) and init["access_token"]
    lifetime_ms = int(init["expires_in_ms"]) - init["now_ms"]
    assert 3_590_000 <= lifetime_ms <= 3_600_000, lifetime_ms  # expires_in read as seconds
    # The SDK sends every later call to the api_domain of the token answer (§13.1) and would
    # switch to a real Zoho data centre if the sim named one.
    assert init["api_domain"].rstrip("/") == zohosim.base_url.rstrip("/")
    assert init["environment_url"].rstrip("/") == zohosim.base_url.rstrip("/")
    # After the refresh the SDK reads /users?type=CurrentUser and /org to name the token (§13.8).
    signature = init["user_signature"]
    assert signature is not None, "SDK could not read the current user and org"
    email, _, zgid = signature.rpartition(":")
    assert "@" in email and zgid == str(zohosim.zgid)

    org = obj(step(report, 0))
    assert report["steps"][0]["status_code"] == 200
    assert org["$type"] == "ResponseWrapper"
    assert len(org["org"]) == 1
    assert org["org"][0]["zgid"] == str(zohosim.zgid)

    with (tmp_path / "tokens.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1
    assert rows[0]["access_token"] == init["access_token"]
    assert rows[0]["refresh_token"] == zohosim.refresh_token
    assert rows[0]["user_name"] == signature


def test_sdk_refreshes_an_expiring_token(tmp_path: Path) -> None:
    # The SDK refreshes only by its own clock, when under 5 s of validity remain (§13.11).
    with SimProcess(job_speed="instant", token_ttl=6) as sim:
        report = run_sdk(
            sim,
            tmp_path,
            [{"op": "token"}, {"op": "sleep", "seconds": 2.0}, {"op": "token"}, {"op": "org"}],
        )
    first = step(report, 0)
    second = step(report, 2)
    assert 3_000 <= int(first["expires_in_ms"]) - first["now_ms"] <= 6_000  # seconds, not ms
    assert second["access_token"] != first["access_token"]
    assert 3_000 <= int(second["expires_in_ms"]) - second["now_ms"] <= 6_000
    org = obj(step(report, 3))
    assert report["steps"][3]["status_code"] == 200
    assert org["org"][0]["zgid"] == str(sim.zgid)


def test_sdk_surfaces_token_endpoint_error(zohosim: Any, tmp_path: Path) -> None:
    # Zoho answers token errors with HTTP 200 and {"error": "..."}; the SDK reports that code.
    report = run_sdk(zohosim, tmp_path, [], client_secret="not-the-secret")
    assert "init_error" in report, report
    assert report["init_error"]["code"] == "INVALID TOKEN ERROR"
    assert report["init_error"]["message"] == "invalid_client"


def test_sdk_surfaces_refresh_throttle(zohosim: Any, tmp_path: Path) -> None:
    # At most N new access tokens per refresh token per window (§1.4): the next refresh gets
    # HTTP 200 {"error": "Access Denied", ...}, which the SDK reports by its "error" key.
    zohosim.admin.configure(refresh_limit=1)
    first = run_sdk(zohosim, tmp_path / "first", [{"op": "org"}])
    assert first["steps"][0]["status_code"] == 200
    second = run_sdk(zohosim, tmp_path / "second", [])
    assert "init_error" in second, second
    assert second["init_error"]["code"] == "INVALID TOKEN ERROR"
    assert second["init_error"]["message"] == "Access Denied"


def test_sdk_reads_legacy_expiry(zohosim: Any, tmp_path: Path) -> None:
    # v2-era answer: expires_in in ms plus expires_in_sec; the SDK then reads expires_in as ms.
    zohosim.admin.configure(token_expiry_legacy=True)
    report = run_sdk(zohosim, tmp_path, [{"op": "org"}])
    init = report["init"]
    assert 3_590_000 <= int(init["expires_in_ms"]) - init["now_ms"] <= 3_600_000
    assert step(report, 0)["status_code"] == 200
