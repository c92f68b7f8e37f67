"""Things that need their own server process: CLI options, env credentials, --state, --schema."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.zohosim.helpers import Api, make_zip, order_row
from zohosim.testing import SimProcess


def test_first_line_and_urls() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "zohosim", "serve", "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("zohosim listening on http://127.0.0.1:")
        base = first.split()[-1]
        more = [proc.stdout.readline() for _ in range(3)]
        assert f"{base}/oauth/v2/token" in more[0]
        assert requests.get(f"{base}/__sim/health", timeout=5).json() == {"ok": True}
    finally:
        proc.terminate()
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()


def test_env_credentials_and_options(tmp_path: Path) -> None:
    env = {"ZOHOSIM_CLIENT_ID": "1000.OTHER", "ZOHOSIM_CLIENT_SECRET": "s3",
           "ZOHOSIM_REFRESH_TOKEN": "1000.r.t", "ZOHOSIM_ZGID": "123456"}
    with SimProcess(token_ttl=77, env=env,
                    extra_args=["--status-spelling", "INPROGRESS",
                                "--download-url-style", "relative"]) as sim:
        assert (sim.client_id, sim.client_secret, sim.refresh_token, sim.zgid) == (
            "1000.OTHER", "s3", "1000.r.t", "123456")
        api = Api(sim)
        assert api.token_response().json()["expires_in"] == 77
        assert api.get("/crm/v8/org").json()["org"][0]["zgid"] == "123456"
        cfg = sim.admin.config()
        assert (cfg["status_spelling"], cfg["download_url_style"]) == ("INPROGRESS", "relative")
        api.http.close()


def test_job_speed_option() -> None:
    with SimProcess(job_speed="realistic") as sim:
        cfg = sim.admin.config()
        assert 400 < cfg["job_rows_per_second"] < 430
        assert cfg["job_queue_seconds"] > 0
    with SimProcess(job_speed="1000") as sim:
        assert sim.admin.config()["job_rows_per_second"] == 1000


def test_state_survives_restart(tmp_path: Path) -> None:
    state = str(tmp_path / "sim.sqlite")
    with SimProcess(extra_args=["--state", state]) as sim:
        api = Api(sim)
        api.upsert([{"Name": "SO-1", "parent_id": "1", "Amount": 5}])
        job = api.run_job([order_row(2), order_row(3)])
        fid = api.file_id(make_zip([order_row(4)]))
        used = sim.admin.credits()["used_24h"]
        records = sorted(sim.admin.records(), key=lambda r: r["id"])
        api.http.close()
    assert used == 501
    with SimProcess(extra_args=["--state", state]) as sim:
        api = Api(sim)
        assert sorted(sim.admin.records(), key=lambda r: r["id"]) == records
        assert sim.admin.credits()["used_24h"] == used
        again = api.job(job["id"])
        assert again["status"] == "COMPLETED"
        assert again["resource"][0]["file"]["added_count"] == 2
        _name, rows = api.result_rows(again)
        assert [r["STATUS"] for r in rows] == ["ADDED", "ADDED"]
        assert sim.admin.stats()["uploads"] == 2
        # the upload kept from before the restart is usable, and new ids do not collide
        r = api.create_job(api.job_body(fid))
        assert r.status_code == 201
        assert api.wait_job(r.json()["details"]["id"])["status"] == "COMPLETED"
        ids = [x["id"] for x in sim.admin.records()]
        assert len(ids) == len(set(ids)) == 4
        sim.admin.reset()
        api.http.close()
    with SimProcess(extra_args=["--state", state]) as sim:
        assert sim.admin.stats()["records"]["Orders"] == 0


def test_schema_option(tmp_path: Path) -> None:
    schema = {"modules": [{"api_name": "Deals_X", "id": "5725767000000009999",
                           "system_duplicate_field": "Name",
                           "fields": [
                               {"api_name": "Name", "data_type": "text", "length": 10,
                                "system_mandatory": True},
                               {"api_name": "Code", "data_type": "text", "unique": True}]}]}
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema))
    with SimProcess(extra_args=["--schema", str(path)]) as sim:
        api = Api(sim)
        r = api.post("/crm/v8/Deals_X/upsert", json={"data": [{"Name": "x" * 11}]})
        assert r.json()["data"][0]["details"]["maximum_length"] == 10
        r = api.get("/crm/v8/settings/fields", params={"module": "Deals_X"})
        assert {f["api_name"] for f in r.json()["fields"]} >= {"Name", "Code"}
        assert api.get("/crm/v8/settings/fields", params={"module": "Orders"}).status_code == 400
        api.http.close()


def test_unfinished_job_resumes_after_restart(tmp_path: Path) -> None:
    state = str(tmp_path / "sim.sqlite")
    with SimProcess(job_speed="100", extra_args=["--state", state]) as sim:
        sim.admin.configure(job_queue_seconds=0.0)
        api = Api(sim)
        job = api.run_job_async([order_row(i) for i in range(300)])
        time.sleep(0.5)
        assert api.job(job)["status"] in ("IN PROGRESS", "ADDED")
        api.http.close()
    with SimProcess(extra_args=["--state", state]) as sim:  # instant now
        api = Api(sim)
        done = api.wait_job(job)
        assert done["status"] == "COMPLETED"
        assert done["resource"][0]["file"]["added_count"] + done["resource"][0]["file"][
            "updated_count"] == 300
        assert sim.admin.stats()["records"]["Orders"] == 300
        api.http.close()


def test_failed_start_is_reported(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="did not start"):
        SimProcess(extra_args=["--schema", str(tmp_path / "missing.json")])
