"""Fixtures for zohosim's own tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.zohosim.helpers import Api
from zohosim.testing import SimProcess


@pytest.fixture
def api(zohosim: SimProcess) -> Iterator[Api]:
    a = Api(zohosim)
    yield a
    a.http.close()
