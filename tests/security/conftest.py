"""Fixtures of the security tests: a zohosim that accepts only distinctive credentials.

The values are long, unique per test and contain ``S3CRET``, so finding one anywhere (a log
line, a task message, an error) is a leak and never a coincidence.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

# The end-to-end world of tests/e2e (a seeded database, zohosim, the callback receiver over
# HTTP, workers), for the forged-callback tests.
from tests.e2e.conftest import make_e2e  # noqa: F401
from zohosim.testing import SimProcess


@dataclass(frozen=True)
class Sentinels:
    """This test's secret values: Zoho's client secret and refresh token, a DSN password."""

    client_secret: str
    refresh_token: str
    dsn_password: str

    def named(self) -> dict[str, str]:
        return {
            "client secret": self.client_secret,
            "refresh token": self.refresh_token,
            "DSN password": self.dsn_password,
        }


@pytest.fixture
def sentinels() -> Sentinels:
    marker = secrets.token_hex(8)
    return Sentinels(
        client_secret=f"S3CRET-client-{marker}",
        refresh_token=f"1000.S3CRET-refresh-{marker}",
        dsn_password=f"S3CRET-dsn-{marker}",
    )


@pytest.fixture
def sentinel_sim(sentinels: Sentinels) -> Iterator[SimProcess]:
    """A zohosim of its own that accepts only this test's credentials (jobs take ~0.2 s)."""
    sim = SimProcess(
        env={
            "ZOHOSIM_CLIENT_SECRET": sentinels.client_secret,
            "ZOHOSIM_REFRESH_TOKEN": sentinels.refresh_token,
        }
    )
    try:
        sim.admin.configure(job_rows_per_second=1_000)
        yield sim
    finally:
        sim.stop()


def with_password(dsn: str, password: str) -> str:
    """``postgresql://user@host/db`` with ``password`` in it (the test server trusts local
    connections, so any password works: what matters is that it travels through the code)."""
    scheme, _, rest = dsn.partition("://")
    user, _, host = rest.partition("@")
    return f"{scheme}://{user}:{password}@{host}"
