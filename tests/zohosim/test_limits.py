"""Credits, concurrency, sub-concurrency, fault injection and the admin API."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from tests.zohosim.helpers import Api, error, make_zip, order_row
from zohosim.testing import SimProcess

TOO_MANY_KEYS = {"code", "details", "message", "status"}


def _many(api: Api, n: int, call: Any) -> list[requests.Response]:
    token = api.token
    barrier = threading.Barrier(n)

    def one(_: int) -> requests.Response:
        with requests.Session() as s:
            barrier.wait(5)
            return call(s, {"Authorization": f"Zoho-oauthtoken {token}"})

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def _wait_in_flight(sim: SimProcess, n: int) -> None:
    deadline = time.monotonic() + 5
    while sim.admin.in_flight() != n:
        assert time.monotonic() < deadline, "the call never reached the server"
        time.sleep(0.01)


def test_credit_budget_refuses_without_charging(api: Api, zohosim: SimProcess) -> None:
    zohosim.admin.configure(credit_limit=3)
    for _ in range(3):
        assert api.get("/crm/v8/org").status_code == 200
    r = api.get("/crm/v8/org")
    assert error(r) == (429, "TOO_MANY_REQUESTS")
    assert set(r.json()) == TOO_MANY_KEYS
    assert r.json()["details"] == {}
    assert r.json()["status"] == "error"
    assert "Retry-After" not in r.headers
    c = zohosim.admin.credits()
    assert (c["used_24h"], c["limit"]) == (3, 3)
    assert c["calls_by_api"]["org"] == 4
    # zero-cost calls still go through
    assert api.get(f"/crm/bulk/v8/write/{'5725767000000000042'}").status_code == 404


def test_bulk_job_needs_500_credits(api: Api, zohosim: SimProcess) -> None:
    zohosim.admin.configure(credit_limit=499)
    fid = api.file_id(make_zip([order_row(1)]))
    assert error(api.create_job(api.job_body(fid))) == (429, "TOO_MANY_REQUESTS")
    assert zohosim.admin.stats()["jobs"]["total"] == 0
    zohosim.admin.configure(credit_limit=500)
    assert api.create_job(api.job_body(fid)).status_code == 201


def test_credits_remaining_header_after_half(api: Api, zohosim: SimProcess) -> None:
    zohosim.admin.configure(credit_limit=10)
    seen = []
    for _ in range(6):
        seen.append(api.get("/crm/v8/org").headers.get("X-API-CREDITS-REMAINING"))
    assert seen == [None, None, None, None, "5", "4"]


def test_credit_costs_are_configurable(api: Api, zohosim: SimProcess) -> None:
    zohosim.admin.configure(credit_costs={"org": 0, "bulk_get": 2})
    api.get("/crm/v8/org")
    api.get("/crm/bulk/v8/write/5725767000000000042")  # 404: not charged
    assert zohosim.admin.credits()["used_24h"] == 0
    job_id = api.create_job(api.job_body(api.file_id(make_zip([order_row(1)])))
                            ).json()["details"]["id"]
    api.wait_job(job_id)
    assert zohosim.admin.credits()["by_api"]["bulk_get"] >= 2


def test_rolling_window_releases_credits(api: Api, zohosim: SimProcess) -> None:
    zohosim.admin.configure(credit_limit=2, credit_window_seconds=1)
    api.get("/crm/v8/org")
    api.get("/crm/v8/org")
    assert api.get("/crm/v8/org").status_code == 429
    time.sleep(1.1)
    assert api.get("/crm/v8/org").status_code == 200


def test_concurrency_limit(api: Api, zohosim: SimProcess) -> None:
    zohosim.admin.configure(concurrency=3, latency_ms=600)
    rs = _many(api, 8, lambda s, h: s.get(f"{api.base}/crm/v8/org", headers=h, timeout=10))
    codes = sorted(r.status_code for r in rs)
    assert codes.count(200) >= 3
    assert codes.count(429) >= 1
    assert set(codes) == {200, 429}
    assert all(r.json()["code"] == "TOO_MANY_REQUESTS" for r in rs if r.status_code == 429)
    log = zohosim.admin.requests()
    assert log["max_concurrent"] == 3
    assert zohosim.admin.credits()["used_24h"] == codes.count(200)


def test_sub_concurrency_counts_big_upserts_only(api: Api, zohosim: SimProcess) -> None:
    zohosim.admin.configure(sub_concurrency=2, latency_ms=600)
    big = [{"Name": f"SO-{i}", "parent_id": str(i)} for i in range(11)]
    rs = _many(api, 5, lambda s, h: s.post(f"{api.base}/crm/v8/Orders/upsert",
                                           json={"data": big}, headers=h, timeout=10))
    codes = [r.status_code for r in rs]
    assert codes.count(429) >= 1
    assert 1 <= codes.count(200) <= 5
    assert zohosim.admin.requests()["max_concurrent_sub"] == 2
    small = big[:10]
    rs = _many(api, 5, lambda s, h: s.post(f"{api.base}/crm/v8/Orders/upsert",
                                           json={"data": small}, headers=h, timeout=10))
    assert [r.status_code for r in rs] == [200] * 5


def test_request_log(api: Api, zohosim: SimProcess) -> None:
    zohosim.admin.configure(latency_ms=50)
    api.get("/crm/v8/org")
    zohosim.admin.stats()  # admin calls are not logged
    log = zohosim.admin.requests()
    (tok, org) = log["requests"]
    assert tok["api"] == "token"
    assert (org["api"], org["method"], org["path"], org["status"]) == (
        "org", "GET", "/crm/v8/org", 200)
    assert org["end"] - org["start"] >= 0.05
    assert log["max_concurrent"] == 1


@pytest.mark.parametrize(("kind", "status", "code"), [
    ("500", 500, "INTERNAL_ERROR"), ("503", 503, None), ("429", 429, "TOO_MANY_REQUESTS")])
def test_error_faults(api: Api, zohosim: SimProcess, kind: str, status: int,
                      code: str | None) -> None:
    api.get("/crm/v8/org")
    zohosim.admin.fault("org", kind, count=2)
    for _ in range(2):
        r = api.get("/crm/v8/org")
        assert r.status_code == status
        assert r.headers["Content-Type"] == "application/json"
        if code:
            assert r.json()["code"] == code
    assert api.get("/crm/v8/org").status_code == 200
    assert zohosim.admin.credits()["used_24h"] == 2  # faulted calls are not charged


def test_drop_fault(api: Api, zohosim: SimProcess) -> None:
    zohosim.admin.fault("upsert", "drop")
    with pytest.raises(requests.ConnectionError):
        api.upsert([{"Name": "x"}])
    assert api.upsert([{"Name": "x"}]).status_code == 200
    statuses = [r["status"] for r in zohosim.admin.requests()["requests"] if r["api"] == "upsert"]
    assert statuses == [0, 200]


def test_stall_fault_then_normal_answer(api: Api, zohosim: SimProcess) -> None:
    api.get("/crm/v8/org")
    zohosim.admin.fault("org", "stall", seconds=0.5)
    start = time.monotonic()
    r = api.get("/crm/v8/org")
    assert time.monotonic() - start >= 0.5
    assert r.status_code == 200
    with pytest.raises(requests.Timeout):
        zohosim.admin.fault("org", "stall", seconds=1.5)
        api.http.get(f"{api.base}/crm/v8/org", headers=api.headers(), timeout=0.5)


def test_wildcard_fault_and_clear(api: Api, zohosim: SimProcess) -> None:
    zohosim.admin.fault("*", "503", count=5)
    assert api.token_response().status_code == 503
    assert api.get("/crm/v8/org", headers={}).status_code == 503
    zohosim.admin.clear_faults()
    assert api.get("/crm/v8/org").status_code == 200


def test_fault_on_token_and_upload(api: Api, zohosim: SimProcess) -> None:
    zohosim.admin.fault("token", "500")
    assert api.token_response().status_code == 500
    zohosim.admin.fault("upload", "429")
    assert api.upload(make_zip([order_row(1)])).status_code == 429
    assert api.upload(make_zip([order_row(1)])).status_code == 200


def test_admin_validation(zohosim: SimProcess) -> None:
    base = zohosim.base_url
    r = requests.post(f"{base}/__sim/faults", json={"api": "nope", "kind": "500"}, timeout=5)
    assert r.status_code == 400
    r = requests.post(f"{base}/__sim/config", json={"bogus": 1}, timeout=5)
    assert r.status_code == 400
    r = requests.post(f"{base}/__sim/config", json={"status_spelling": "WIP"}, timeout=5)
    assert r.status_code == 400
    assert requests.get(f"{base}/__sim/nothing", timeout=5).status_code == 404
    assert zohosim.admin.health()


def test_config_round_trip(zohosim: SimProcess) -> None:
    cfg = zohosim.admin.config()
    for key in ("token_ttl", "refresh_limit", "max_live_tokens", "credit_limit", "concurrency",
                "sub_concurrency", "job_rows_per_second", "status_spelling",
                "download_url_style", "latency_ms"):
        assert key in cfg
    assert (cfg["credit_limit"], cfg["concurrency"], cfg["sub_concurrency"]) == (
        5_000_000, 20, 10)
    new = zohosim.admin.configure(concurrency=5, status_spelling="INPROGRESS")
    assert (new["concurrency"], new["status_spelling"]) == (5, "INPROGRESS")


def test_reset_clears_everything_but_config(api: Api, zohosim: SimProcess) -> None:
    zohosim.admin.configure(concurrency=7)
    api.upsert([{"Name": "x"}])
    api.run_job([order_row(1)])
    zohosim.admin.fault("org", "500", count=3)
    zohosim.admin.fail_next_job()
    stats = zohosim.admin.stats()
    assert stats["records"]["Orders"] == 2
    assert stats["uploads"] == 1
    assert stats["jobs"] == {"total": 1, "by_status": {"COMPLETED": 1}}
    assert stats["tokens_issued"] == 1
    zohosim.admin.reset()
    assert zohosim.admin.stats() == {"records": {"Orders": 0}, "uploads": 0,
                                     "jobs": {"total": 0, "by_status": {}}, "tokens_issued": 0}
    assert zohosim.admin.credits()["used_24h"] == 0
    assert zohosim.admin.requests()["requests"] == []
    assert zohosim.admin.config()["concurrency"] == 7
    api._token = None
    assert error(api.get("/crm/v8/org", headers={
        "Authorization": "Zoho-oauthtoken x"})) == (401, "INVALID_TOKEN")
    assert api.get("/crm/v8/org").status_code == 200  # fault cleared, new token works
    assert api.run_job([order_row(1)])["status"] == "COMPLETED"  # fail-next cleared


def test_reset_during_a_call_keeps_counters_sane(api: Api, zohosim: SimProcess) -> None:
    zohosim.admin.configure(latency_ms=1000, concurrency=1)
    api.token  # noqa: B018  (fetch the token before the reset... then fetch a new one)
    box: list[int] = []
    t = threading.Thread(target=lambda: box.append(api.get("/crm/v8/org").status_code))
    t.start()
    _wait_in_flight(zohosim, 1)
    zohosim.admin.reset()
    t.join(5)
    assert box == [200]
    zohosim.admin.configure(latency_ms=0)
    api._token = None
    assert api.get("/crm/v8/org").status_code == 200  # the slot was given back
    assert zohosim.admin.credits()["used_24h"] == 1  # only the call after the reset


def test_a_stalled_call_holds_a_concurrency_slot(api: Api, zohosim: SimProcess) -> None:
    zohosim.admin.configure(concurrency=1)
    api.get("/crm/v8/org")
    zohosim.admin.fault("org", "stall", seconds=1.0)
    box: list[int] = []
    t = threading.Thread(target=lambda: box.append(api.get("/crm/v8/org").status_code))
    t.start()
    _wait_in_flight(zohosim, 1)
    with requests.Session() as s:
        r = s.get(f"{api.base}/crm/v8/users", headers=api.headers(), timeout=5)
    t.join(5)
    assert (box, r.status_code) == ([200], 429)


def test_request_log_limit_and_in_flight(api: Api, zohosim: SimProcess) -> None:
    for _ in range(3):
        api.get("/crm/v8/org")
    r = requests.get(f"{api.base}/__sim/requests", params={"limit": 2}, timeout=5).json()
    assert [x["api"] for x in r["requests"]] == ["org", "org"]
    assert zohosim.admin.in_flight() == 0


def _running_jobs_limit(api: Api, zohosim: SimProcess) -> None:
    """With ``max_bulk_jobs`` set to 1: a job past it is refused, uncharged; a slot reopens."""
    zohosim.admin.configure(job_rows_per_second=1)  # a 5-row job runs for ~5 s
    zohosim.admin.fail_next_job()
    rows = [order_row(i) for i in range(5)]
    ended = api.create_job(api.job_body(api.file_id(make_zip(rows))))
    assert ended.status_code == 201, ended.text
    assert api.wait_job(ended.json()["details"]["id"])["status"] == "FAILED"
    running = api.create_job(api.job_body(api.file_id(make_zip(rows))))
    assert running.status_code == 201, running.text  # the ended job holds no slot
    assert api.job(running.json()["details"]["id"])["status"] != "COMPLETED"
    used = zohosim.admin.credits()["used_24h"]
    r = api.create_job(api.job_body(api.file_id(make_zip(rows))))
    assert error(r) == (429, "TOO_MANY_REQUESTS")
    assert set(r.json()) == TOO_MANY_KEYS and r.json()["details"] == {}
    assert "Retry-After" not in r.headers
    assert zohosim.admin.credits()["used_24h"] == used  # not charged
    assert zohosim.admin.stats()["jobs"]["total"] == 2  # and nothing created


def test_max_bulk_jobs_refuses_a_job_beyond_it(api: Api, zohosim: SimProcess) -> None:
    assert zohosim.initial_config["max_bulk_jobs"] == 0  # unlimited unless configured
    zohosim.admin.configure(max_bulk_jobs=1)
    _running_jobs_limit(api, zohosim)


def test_max_bulk_jobs_option() -> None:
    with SimProcess(max_bulk_jobs=1) as sim:
        assert sim.admin.config()["max_bulk_jobs"] == 1
        api = Api(sim)
        try:
            _running_jobs_limit(api, sim)
        finally:
            api.http.close()


def test_unlimited_bulk_jobs_by_default(api: Api, zohosim: SimProcess) -> None:
    zohosim.admin.configure(job_rows_per_second=1)
    rows = [order_row(i) for i in range(5)]
    for _ in range(4):
        r = api.create_job(api.job_body(api.file_id(make_zip(rows))))
        assert r.status_code == 201, r.text
    by_status = zohosim.admin.stats()["jobs"]["by_status"]
    assert by_status.get("ADDED", 0) + by_status.get("IN_PROGRESS", 0) == 4, by_status
