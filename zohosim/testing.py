"""Helpers for tests: run zohosim as a real subprocess and drive its ``/__sim/`` admin API."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import requests

from zohosim.cli import DEFAULTS

TIMEOUT = 10.0
PREFIX = "zohosim listening on "


class SimAdmin:
    """Thin wrapper over the simulator's ``/__sim/`` endpoints."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = requests.Session()

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        r = self.http.request(method, f"{self.base_url}/__sim/{path}", json=body, timeout=TIMEOUT)
        r.raise_for_status()
        return r.json()

    def health(self) -> bool:
        return bool(self._call("GET", "health").get("ok"))

    def reset(self) -> None:
        self._call("POST", "reset")

    def config(self) -> dict:
        return dict(self._call("GET", "config"))

    def configure(self, **changes: Any) -> dict:
        return dict(self._call("POST", "config", changes))

    def credits(self) -> dict:
        return dict(self._call("GET", "credits"))

    def requests(self) -> dict:
        return dict(self._call("GET", "requests"))

    def in_flight(self) -> int:
        """Calls holding a concurrency slot right now."""
        return int(self._call("GET", "requests?limit=0")["in_flight"])

    def stats(self) -> dict:
        return dict(self._call("GET", "stats"))

    def records(self, module: str = "Orders") -> list[dict]:
        return list(self._call("GET", f"records/{module}")["data"])

    def fault(self, api: str, kind: str, count: int = 1, seconds: float = 0.0) -> None:
        self._call("POST", "faults", {"api": api, "kind": kind, "count": count,
                                      "seconds": seconds})

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")

    def invalidate_tokens(self) -> None:
        self._call("POST", "tokens/invalidate")

    def fail_next_job(self, count: int = 1) -> None:
        self._call("POST", "jobs/fail-next", {"count": count})

    def bulk_read_page_size(self, per_page: int) -> None:
        """Records per bulk-read page (Zoho: 200,000), smaller to test paging cheaply."""
        self._call("POST", "bulk-read", {"per_page": per_page})

    def ui_create(self, record: dict[str, Any], module: str = "Orders") -> str:
        """A record created in Zoho's UI (no unique checks): its id."""
        return str(self._call("POST", f"records/{module}", {"record": record})["id"])

    def ui_edit(self, record_id: str, values: dict[str, Any], module: str = "Orders") -> dict:
        """An edit made in Zoho's UI by another user."""
        return dict(self._call("PATCH", f"records/{module}/{record_id}", {"values": values}))

    def ui_delete(self, record_id: str, module: str = "Orders") -> None:
        """A record deleted in Zoho's UI."""
        self._call("DELETE", f"records/{module}/{record_id}")

    def close(self) -> None:
        self.http.close()


class SimProcess:
    """``python -m zohosim serve --port 0`` as a subprocess, usable as a context manager."""

    def __init__(
        self,
        *,
        job_speed: str = "instant",
        token_ttl: int = 3600,
        max_bulk_jobs: int | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        full_env = dict(os.environ)
        full_env.update(env or {})
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        self.client_id = full_env.get("ZOHOSIM_CLIENT_ID") or DEFAULTS["ZOHOSIM_CLIENT_ID"]
        self.client_secret = (full_env.get("ZOHOSIM_CLIENT_SECRET")
                              or DEFAULTS["ZOHOSIM_CLIENT_SECRET"])
        self.refresh_token = (full_env.get("ZOHOSIM_REFRESH_TOKEN")
                              or DEFAULTS["ZOHOSIM_REFRESH_TOKEN"])
        self.zgid = full_env.get("ZOHOSIM_ZGID") or DEFAULTS["ZOHOSIM_ZGID"]
        args = [sys.executable, "-m", "zohosim", "serve", "--host", "127.0.0.1", "--port", "0",
                "--job-speed", job_speed, "--token-ttl", str(token_ttl), *extra_args]
        if max_bulk_jobs is not None:  # Zoho's limit is not documented: tests pick one
            args += ["--max-bulk-jobs", str(max_bulk_jobs)]
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (lives as long as the process)
            prefix="zohosim-", suffix=".log", delete=False
        )
        self.log_path = self.log.name
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.log, env=full_env,
                                     text=True)
        first = self._first_line(timeout=30.0)
        if not first.startswith(PREFIX):
            self.stop()
            raise RuntimeError(f"zohosim did not start: {first!r}; log {self.log_path}")
        self.base_url = first[len(PREFIX):].strip()
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()
        self.admin = SimAdmin(self.base_url)
        self.initial_config: dict = self.admin.config()

    def _first_line(self, timeout: float) -> str:
        box: list[str] = []
        stdout = self.proc.stdout
        assert stdout is not None

        def read() -> None:
            try:
                box.append(stdout.readline())
            except (OSError, ValueError):  # closed by stop() after a failed start
                box.append("")

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        return box[0] if box else ""

    def _drain(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        try:
            for _line in stdout:
                pass
        except (OSError, ValueError):
            pass
        finally:
            stdout.close()

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/oauth/v2/token"

    def stop(self) -> None:
        """Stop the server process (idempotent)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        drainer = getattr(self, "_drainer", None)
        if drainer is not None:
            drainer.join(timeout=5)
        elif self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log.close()
        if hasattr(self, "admin"):
            self.admin.close()

    def read_log(self) -> str:
        """The server's stderr so far (for failing tests)."""
        with open(self.log_path, encoding="utf-8", errors="replace") as fh:
            return fh.read()

    def __enter__(self) -> SimProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
