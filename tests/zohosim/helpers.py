"""Plain-``requests`` helpers for zohosim's own tests (no ordersync client here)."""

from __future__ import annotations

import csv
import io
import time
import zipfile
from collections.abc import Sequence
from typing import Any

import requests

from zohosim.testing import SimProcess

T = 10.0
HEADER = ["parent_id", "Name", "Customer_Name", "Email", "Order_Status", "Amount",
          "Currency_Code", "Quantity", "Order_Date", "Shipped_At", "Is_Gift", "Notes"]
FORMATS = {"Order_Date": "yyyy-MM-dd", "Shipped_At": "yyyy-MM-dd'T'HH:mm:ssXXX"}


def order_row(i: int, **over: str) -> list[str]:
    row = {"parent_id": str(i), "Name": f"SO-{i}", "Customer_Name": f"Customer {i}",
           "Email": f"c{i}@example.com", "Order_Status": "Paid", "Amount": f"{i}.50",
           "Currency_Code": "USD", "Quantity": "2", "Order_Date": "2024-05-01",
           "Shipped_At": "2024-05-02T10:00:00+05:30", "Is_Gift": "false", "Notes": "n"}
    row.update(over)
    return [row[h] for h in HEADER]


def make_zip(rows: Sequence[Sequence[str]], header: Sequence[str] = HEADER,
             name: str = "orders.csv", delimiter: str = ",") -> bytes:
    text = io.StringIO()
    w = csv.writer(text, delimiter=delimiter, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, text.getvalue())
    return buf.getvalue()


def mappings(header: Sequence[str] = HEADER) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, name in enumerate(header):
        m: dict[str, Any] = {"api_name": name, "index": i}
        if name in FORMATS:
            m["format"] = FORMATS[name]
        out.append(m)
    return out


class Api:
    """A tiny Zoho client over plain requests, enough to drive zohosim in tests."""

    def __init__(self, sim: SimProcess) -> None:
        self.sim = sim
        self.base = sim.base_url
        self.http = requests.Session()
        self._token: str | None = None

    def token_response(self, **params: str) -> requests.Response:
        data = {"grant_type": "refresh_token", "client_id": self.sim.client_id,
                "client_secret": self.sim.client_secret,
                "refresh_token": self.sim.refresh_token}
        data.update(params)
        return self.http.post(f"{self.base}/oauth/v2/token", data=data, timeout=T)

    def new_token(self) -> str:
        body = self.token_response().json()
        assert "access_token" in body, body
        return str(body["access_token"])

    @property
    def token(self) -> str:
        if self._token is None:
            self._token = self.new_token()
        return self._token

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Zoho-oauthtoken {self.token}", **extra}

    def get(self, path: str, **kw: Any) -> requests.Response:
        if "headers" not in kw:
            kw["headers"] = self.headers()
        return self.http.get(self.base + path, timeout=T, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        if "headers" not in kw:
            kw["headers"] = self.headers()
        return self.http.post(self.base + path, timeout=T, **kw)

    def upsert(self, records: list[dict[str, Any]], **body: Any) -> requests.Response:
        return self.post("/crm/v8/Orders/upsert", json={"data": records, **body})

    def upload(self, data: bytes, *, feature: str = "bulk-write", org: str | None = None,
               filename: str = "orders.zip", content_type: str | None = "application/zip"
               ) -> requests.Response:
        headers = self.headers(feature=feature, **{"X-CRM-ORG": org or self.sim.zgid})
        part: tuple[Any, ...] = (filename, data, content_type) if content_type else (filename,
                                                                                     data)
        return self.post("/crm/v8/upload", headers=headers, files={"file": part})

    def file_id(self, data: bytes) -> str:
        r = self.upload(data)
        assert r.status_code == 200, r.text
        return str(r.json()["details"]["file_id"])

    def job_body(self, file_id: str, operation: str = "upsert", find_by: str | None = "parent_id",
                 field_mappings: list[dict[str, Any]] | None = None, **top: Any
                 ) -> dict[str, Any]:
        res: dict[str, Any] = {"type": "data", "module": {"api_name": "Orders"},
                               "file_id": file_id,
                               "field_mappings": mappings() if field_mappings is None
                               else field_mappings}
        if find_by is not None:
            res["find_by"] = find_by
        return {"operation": operation, "resource": [res], **top}

    def create_job(self, body: dict[str, Any]) -> requests.Response:
        return self.post("/crm/bulk/v8/write", json=body)

    def job(self, job_id: str) -> dict[str, Any]:
        r = self.get(f"/crm/bulk/v8/write/{job_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    def wait_job(self, job_id: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            j = self.job(job_id)
            if j["status"] in ("COMPLETED", "FAILED"):
                return j
            time.sleep(0.02)
        raise AssertionError(f"job {job_id} did not finish")

    def run_job_async(self, rows: Sequence[Sequence[str]], **kw: Any) -> str:
        """Upload ``rows`` and create a job; its id."""
        body = self.job_body(self.file_id(make_zip(rows)), **kw)
        r = self.create_job(body)
        assert r.status_code == 201, r.text
        return str(r.json()["details"]["id"])

    def run_job(self, rows: Sequence[Sequence[str]], **kw: Any) -> dict[str, Any]:
        return self.wait_job(self.run_job_async(rows, **kw))

    def result_rows(self, job: dict[str, Any]) -> tuple[str, list[dict[str, str]]]:
        r = self.http.get(job["result"]["download_url"], headers=self.headers(), timeout=T)
        assert r.status_code == 200, r.text
        zf = zipfile.ZipFile(io.BytesIO(r.content))
        (name,) = zf.namelist()
        return name, list(csv.DictReader(io.StringIO(zf.read(name).decode())))


def error(r: requests.Response) -> tuple[int, str]:
    """(HTTP status, code) of a request-level error answer."""
    assert r.headers["Content-Type"].startswith("application/json")
    return r.status_code, r.json()["code"]
