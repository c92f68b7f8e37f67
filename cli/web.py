"""The ``web`` process: Zoho's bulk-job callback receiver and a health check (stdlib WSGI).

Routes::

    GET  /healthz               200 {"status": "ok", "checks": {…}}, or 503 naming what failed
    GET  /metrics               Prometheus metrics read from the ledger (``pipeline.metrics``)
    POST /zoho/callback/<token> 200 {"status": "accepted"} and the batch's poll task is enqueued;
                                404 for any token that is not a live batch's

Each create-job attempt gets its own callback token (``pipeline.initial_sync.fresh_token``, 256
random bits) in the callback URL it gives Zoho (``callback_path``). The body Zoho posts is never
read as data: the token only says which batch to look at, and the poll task then asks Zoho for
the job's state with a GET. A forged or replayed callback therefore costs one early poll and
nothing else (that poll asks for no next one: the batch's own polls go on). Tokens never
appear in the access log (the path is redacted).

Hooks for the batch work: :func:`enqueue_poll` (sends ``ordersync.poll`` with
``batch_id=<id>``) and :func:`lookup_batch_by_token` (the ledger keeps only the token's
sha256, ``batches.callback_digest``). :func:`make_wsgi_app` takes both as callables, so tests
inject their own.
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import re
import socketserver
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from celery import Celery
from kombu import Connection

from pipeline import credentials, ledger
from pipeline.initial_sync import CALLBACK_PREFIX, record_job_hint, token_digest
from pipeline.legacy.connection import connect_dsn
from pipeline.secret import Secret

logger = logging.getLogger(__name__)

BatchId = int | str
TokenLookup = Callable[[str], BatchId | None]
Enqueue = Callable[[BatchId], None]
HealthCheck = Callable[[], None]  # returns when healthy, raises otherwise
StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

POLL_TASK = "ordersync.poll"
CHECK_TIMEOUT = 3.0  # seconds, per health check
MAX_DRAINED_BODY = 1 << 20  # we read (and drop) at most this much of a callback body
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{32,128}")
_CALLBACK_RE = re.compile(re.escape(CALLBACK_PREFIX) + r"([^/]*)")
_JOB_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
HintRecorder = Callable[[BatchId, str], None]


def enqueue_poll(batch_id: BatchId, *, celery_app: Celery | None = None) -> None:
    """Wake the batch's poll task now (it goes to ``Queue.ZOHO`` by ``tasks.config.ROUTES``):
    one early look (``by_callback``), which leaves the batch's own chain of polls alone."""
    if celery_app is None:
        from tasks.app import app

        celery_app = app
    celery_app.send_task(POLL_TASK, kwargs={"batch_id": batch_id, "by_callback": True})


def lookup_batch_by_token(dsn: str | Secret, ledger_schema: str, token: str) -> BatchId | None:
    """The unfinished batch whose callback token this is (found by the token's digest), or None.

    The ledger stores only the digest (``pipeline.initial_sync.token_digest``) of each token
    (``batches.callback_digest``, set by ``pipeline.initial_sync.create_job``).
    """
    conn = connect_dsn(
        _secret(dsn), connect_timeout=int(CHECK_TIMEOUT), application_name="ordersync.web"
    )
    try:
        with conn, conn.cursor() as cur:
            return ledger.batch_by_callback_digest(cur, ledger_schema, token_digest(token))
    finally:
        conn.close()


def job_id_in(body: bytes) -> str | None:
    """The job id a callback body names (``id`` or ``data[0].id``), if it looks like one.

    Only a hint: the poll task keeps it only after a GET shows that job calls back with the
    batch's token.
    """
    try:
        parsed = json.loads(body.decode("utf-8")) if body else None
    except (UnicodeDecodeError, ValueError):
        return None
    if isinstance(parsed, dict) and isinstance(parsed.get("data"), list) and parsed["data"]:
        parsed = parsed["data"][0]
    job_id = parsed.get("id") if isinstance(parsed, dict) else None
    text = str(job_id) if isinstance(job_id, str | int) else ""
    return text if _JOB_ID_RE.fullmatch(text) else None


def record_callback_hint(settings: Any, batch_id: BatchId, job_id: str) -> None:
    """Keep a callback's job id on its batch (see ``pipeline.initial_sync.record_job_hint``)."""
    if record_job_hint(settings, int(batch_id), job_id):
        logger.info("callback named job %s for batch %s (to be verified)", job_id, batch_id)


def check_database(dsn: str | Secret) -> None:
    """Connect and run ``SELECT 1``; raises if the database is not reachable."""
    conn = connect_dsn(
        _secret(dsn), connect_timeout=int(CHECK_TIMEOUT), application_name="ordersync.web"
    )
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
    finally:
        conn.close()


def _secret(dsn: str | Secret) -> Secret:
    return dsn if isinstance(dsn, Secret) else Secret(dsn)


def check_broker(celery_app: Celery) -> None:
    """Open a connection to the app's broker; raises if it is not reachable."""
    options = dict(celery_app.conf.broker_transport_options or {})
    options.setdefault("socket_connect_timeout", CHECK_TIMEOUT)
    with Connection(
        celery_app.conf.broker_url, connect_timeout=CHECK_TIMEOUT, transport_options=options
    ) as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, timeout=CHECK_TIMEOUT)


def bearer_matches(environ: Mapping[str, Any], token: str) -> bool:
    """Does the request carry ``Authorization: Bearer <token>``? (constant-time comparison)"""
    header = str(environ.get("HTTP_AUTHORIZATION") or "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def _json(start_response: StartResponse, status: str, body: Mapping[str, Any]) -> list[bytes]:
    data = json.dumps(body, sort_keys=True).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]


def _drain(environ: Mapping[str, Any]) -> bytes:
    """Read the request body (bounded) so the client sees a clean answer; the first 64 KiB."""
    try:
        length = min(int(environ.get("CONTENT_LENGTH") or 0), MAX_DRAINED_BODY)
    except ValueError:
        return b""
    stream = environ["wsgi.input"]
    kept = bytearray()
    while length > 0:
        chunk = stream.read(min(length, 65536))
        if not chunk:
            break
        if len(kept) < 65536:
            kept += chunk[: 65536 - len(kept)]
        length -= len(chunk)
    return bytes(kept)


def make_wsgi_app(
    *,
    lookup: TokenLookup,
    enqueue: Enqueue,
    checks: Mapping[str, HealthCheck],
    record_hint: HintRecorder | None = None,
    metrics: WsgiApp | None = None,
    metrics_token: str | None = None,
) -> WsgiApp:
    """The WSGI application: ``lookup`` maps a token to a batch id, ``enqueue`` wakes its poll.

    ``metrics_token``, if given, is the bearer token ``/metrics`` requires (401 without it).

    ``record_hint(batch_id, job_id)``, if given, keeps the job id the body names for a batch that
    sent create-job without learning the id (verified by the poll task with a GET).
    """

    def healthz(start_response: StartResponse) -> list[bytes]:
        results: dict[str, str] = {}
        for name, check in checks.items():
            try:
                check()
            except Exception as exc:  # noqa: BLE001 - any failure means "not healthy"
                logger.warning("health check %s failed: %s", name, type(exc).__name__)
                results[name] = f"error: {type(exc).__name__}"
            else:
                results[name] = "ok"
        healthy = all(value == "ok" for value in results.values())
        status = "200 OK" if healthy else "503 Service Unavailable"
        body = {"status": "ok" if healthy else "unavailable", "checks": results}
        return _json(start_response, status, body)

    def callback(environ: dict[str, Any], start_response: StartResponse, token: str) -> list[bytes]:
        body = _drain(environ)
        batch_id = lookup(token) if _TOKEN_RE.fullmatch(token) else None
        if batch_id is None:
            return _json(start_response, "404 Not Found", {"error": "not found"})
        job_id = job_id_in(body) if record_hint is not None else None
        # the body is never logged: Zoho's callback repeats the job, its callback URL included
        logger.debug("callback for batch %s: %d bytes, job id %s", batch_id, len(body), job_id)
        if record_hint is not None and job_id is not None:
            try:
                record_hint(batch_id, job_id)
            except Exception:  # noqa: BLE001 - a hint is optional; the poll still runs
                logger.exception("could not keep the job id of batch %s's callback", batch_id)
        enqueue(batch_id)
        logger.info("callback for batch %s: poll enqueued", batch_id)
        return _json(start_response, "200 OK", {"status": "accepted"})

    def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        try:
            if path == "/healthz":
                if method not in ("GET", "HEAD"):
                    return _json(start_response, "405 Method Not Allowed", {"error": "use GET"})
                return healthz(start_response)
            if path == "/metrics" and metrics is not None:  # pipeline.metrics: read the ledger
                if metrics_token and not bearer_matches(environ, metrics_token):
                    start_response(
                        "401 Unauthorized",
                        [("Content-Type", "application/json"),
                         ("WWW-Authenticate", 'Bearer realm="ordersync metrics"')],
                    )  # fmt: skip
                    return [b'{"error": "unauthorized"}']
                return metrics(environ, start_response)
            match = _CALLBACK_RE.fullmatch(path)
            if match:
                if method != "POST":
                    return _json(start_response, "405 Method Not Allowed", {"error": "use POST"})
                return callback(environ, start_response, match.group(1))
            return _json(start_response, "404 Not Found", {"error": "not found"})
        except Exception:
            logger.exception("%s %s failed", method, redact(path))
            return _json(start_response, "503 Service Unavailable", {"error": "unavailable"})

    return application


def redact(path: str) -> str:
    """``path`` with any callback token replaced by ``***`` (for logs)."""
    return _CALLBACK_RE.sub(CALLBACK_PREFIX + "***", path)


class _QuietHandler(WSGIRequestHandler):
    """Access log through ``logging``, tokens redacted."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        logger.info(
            "%s %s %s %s", self.address_string(), self.command, redact(self.path), code
        )

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        logger.info("%s %s", self.address_string(), redact(format % args))


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    """One thread per request, so a slow health check does not hold up a callback."""

    daemon_threads = True


def make_http_server(app: WsgiApp, host: str = "127.0.0.1", port: int = 0) -> WSGIServer:
    """A threading HTTP server for ``app`` (port 0: a free port, see ``server.server_port``)."""
    return make_server(
        host, port, app, server_class=ThreadingWSGIServer, handler_class=_QuietHandler
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``ordersync web``: serve the callback receiver and /healthz until interrupted."""
    from pipeline.metrics import wsgi_app as metrics_app
    from pipeline.settings import ConfigError, load_settings

    parser = argparse.ArgumentParser(prog="ordersync web", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    parser.add_argument(
        "--log-level", default="INFO", type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default INFO",
    )  # fmt: skip
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = load_settings()  # refuses a DSN that does not parse, a CHANGE_ME credential
    except ConfigError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    from tasks.app import app as celery_app

    metrics_token = settings.metrics_token.reveal() or None
    if metrics_token is not None:
        try:
            credentials.require("ORDERSYNC_SYNC_METRICS_TOKEN", metrics_token)
        except credentials.CredentialRefused as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return 2
    dsn = settings.source.dsn
    application = make_wsgi_app(
        lookup=partial(lookup_batch_by_token, dsn, settings.source.ledger_schema),
        enqueue=partial(enqueue_poll, celery_app=celery_app),
        checks={"db": partial(check_database, dsn), "broker": partial(check_broker, celery_app)},
        record_hint=partial(record_callback_hint, settings),
        metrics=metrics_app(settings),
        metrics_token=metrics_token,
    )
    server = make_http_server(application, args.host, args.port)
    logger.info("listening on http://%s:%s", args.host, server.server_port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
