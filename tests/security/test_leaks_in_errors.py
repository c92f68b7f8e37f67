"""No secret in the errors of failed calls, even when the answer repeats our request.

zohosim's ``401-echo`` / ``500-echo`` faults answer with a body that holds the whole request:
the ``Authorization`` header (the access token zohosim issued), the query and the body (for the
token endpoint: the client secret and the refresh token). Whatever the client raises from such
an answer (its text, repr, arguments, pickled form, traceback) and whatever it logs at DEBUG
must hold none of them. A DSN with a bare ``%`` in its password does not parse, and libpq
quotes the unparsable part (the password) in its error: ours names the problem only.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import cast

import psycopg2
import pytest
import redis

from pipeline.legacy.connection import connect_dsn
from pipeline.secret import Secret
from pipeline.settings import ConfigError, Settings
from pipeline.zoho.client import ZohoClient
from pipeline.zoho.errors import AuthenticationError, ServerError, TokenRefreshError, ZohoError
from pipeline.zoho.results import parse_job
from tests.fixtures.services import REDIS_URL, delete_keys
from tests.fixtures.sim_settings import FAST_RETRIES, sim_zoho
from tests.security.conftest import Sentinels, with_password
from zohosim.testing import SimProcess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def client(
    legacy_db: Settings, sentinel_sim: SimProcess, sentinels: Sentinels
) -> Iterator[tuple[ZohoClient, str]]:
    """A client wired as the workers wire it (``from_settings``), the DSN with a password."""
    prefix = f"test:security:{uuid.uuid4().hex}"
    dsn = with_password(legacy_db.source.dsn.reveal(), sentinels.dsn_password)
    settings = replace(
        legacy_db,
        source=replace(legacy_db.source, dsn=Secret(dsn)),
        zoho=sim_zoho(sentinel_sim, prefix, **FAST_RETRIES),
        redis_url=REDIS_URL,
    )
    made = ZohoClient.from_settings(settings)
    try:
        yield made, prefix
    finally:
        made.close()
        delete_keys(prefix)


def _everything_about(exc: BaseException) -> str:
    """The ways an exception reaches a person: str, repr, args, pickle, a traceback."""
    return "\n".join(
        [
            str(exc),
            repr(exc),
            repr(exc.args),
            pickle.dumps(exc).decode("latin-1"),
            str(pickle.loads(pickle.dumps(exc))),
            "".join(traceback.format_exception(exc)),
        ]
    )


def _access_tokens(prefix: str) -> list[str]:
    cache = redis.Redis.from_url(REDIS_URL)
    try:
        raw = cast(bytes | None, cache.get(f"{prefix}:token"))
    finally:
        cache.close()
    return [str(json.loads(raw)["access_token"])] if raw else []


@pytest.mark.parametrize(
    ("api", "kind", "count", "expected"),
    [
        ("org", "401-echo", 2, AuthenticationError),  # refused, refreshed once, refused again
        ("org", "500-echo", FAST_RETRIES["max_retries"] + 1, ServerError),  # every retry too
        ("token", "401-echo", 1, TokenRefreshError),  # the form: client secret, refresh token
    ],
)
def test_an_answer_echoing_the_request_raises_no_secret(
    client: tuple[ZohoClient, str],
    sentinel_sim: SimProcess,
    sentinels: Sentinels,
    caplog: pytest.LogCaptureFixture,
    api: str,
    kind: str,
    count: int,
    expected: type[ZohoError],
) -> None:
    zoho, prefix = client
    if api != "token":
        zoho.tokens.token()  # a real access token, the one the echo will repeat
    sentinel_sim.admin.fault(api, kind, count=count)
    with caplog.at_level(logging.DEBUG), pytest.raises(expected) as raised:
        zoho.org_zgid()
    exc = raised.value
    assert exc.message, "the error says nothing"
    assert "request refused" in exc.message or exc.code == "invalid_client"  # the echo arrived
    tokens = _access_tokens(prefix)
    assert tokens or api == "token", "no access token was issued"
    text = _everything_about(exc) + "\n" + caplog.text
    values = sentinels.named() | {f"access token {i}": t for i, t in enumerate(tokens)}
    for what, value in values.items():
        assert value not in text, f"the {what} is in the error or the log"
    assert "Zoho-oauthtoken 1000." not in text
    assert sentinel_sim.admin.config() is not None  # the simulator itself is still fine


def test_a_dsn_that_does_not_parse_is_refused_without_its_password(
    legacy_db: Settings, sentinels: Sentinels
) -> None:
    password = f"{sentinels.dsn_password}%zz"  # a bare % (it must be written %25 in a URL)
    dsn = with_password(legacy_db.source.dsn.reveal(), password)
    with pytest.raises(psycopg2.ProgrammingError) as raw:  # what libpq itself says
        psycopg2.connect(dsn)
    assert sentinels.dsn_password in str(raw.value)  # the reason we wrap it
    with pytest.raises(ConfigError) as raised:
        connect_dsn(Secret(dsn))
    assert raised.value.key == "source.dsn"
    assert "percent" in str(raised.value) and "%25" in str(raised.value)
    assert sentinels.dsn_password not in _everything_about(raised.value)

    # The same through the CLI an operator runs, and the web process's health check
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERSYNC_")}
    env["ORDERSYNC_SOURCE_DSN"] = dsn
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "status", "--json"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "source.dsn" in done.stdout + done.stderr
    assert sentinels.dsn_password not in done.stdout + done.stderr


def test_a_connection_error_masks_the_password(sentinels: Sentinels) -> None:
    dsn = f"postgresql://postgres:{sentinels.dsn_password}@127.0.0.1:1/postgres"
    with pytest.raises(psycopg2.OperationalError) as raised:  # still transient for the tasks
        connect_dsn(Secret(dsn), connect_timeout=2)
    assert sentinels.dsn_password not in _everything_about(raised.value)


def test_a_bulk_jobs_repr_hides_its_callback_token() -> None:
    token = "S3CRET-callback-token-" + uuid.uuid4().hex
    job = parse_job(
        {
            "data": [
                {
                    "id": "42",
                    "status": "COMPLETED",
                    "callback": {"url": f"https://ordersync.example/zoho/callback/{token}"},
                }
            ]
        }
    )
    assert job.callback_url and token in job.callback_url  # still there for the code
    assert token not in repr(job) and token not in str(job)
