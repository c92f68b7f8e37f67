"""The Zoho client's exceptions, in two families, and the one function that maps an answer to one.

::

    ZohoError(code, message, details, http_status)
    ├── TransientZohoError          worth retrying later: 429, 5xx, connection errors, timeouts
    │   ├── RateLimited             429 / TOO_MANY_REQUESTS (concurrency or Zoho's 24 h credits)
    │   ├── ServerError             5xx, INTERNAL_ERROR
    │   ├── ConnectionFailed        no connection made: the request never reached Zoho
    │   ├── ResponseLost            sent, but the answer never came (read timeout, reset, drop)
    │   ├── SlotWaitTimeout         our governor had no free slot within the wait bound
    │   ├── TokenEndpointUnavailable  the accounts server did not answer (network, 5xx)
    │   ├── TokenRefreshThrottled   refresh refused (ours or Zoho's ``Access Denied``): wait
    │   └── CreditBudgetExceeded    refused BEFORE sending: the call would break our daily budget
    └── FatalZohoError              retrying the same call will not help
        ├── AuthenticationError     401 INVALID_TOKEN / AUTHENTICATION_FAILURE / scope mismatch
        ├── TokenRefreshError       the token endpoint said no (invalid_client, invalid_code, …)
        ├── AmbiguousJobCreation    create-job sent, answer lost: a job may or may not exist
        └── ResultFormatError       an answer or result file we cannot read

Every exception passes its arguments to ``super().__init__`` so it pickles (Celery result
serialisation, multiprocessing). Messages come from Zoho's bodies or from us and never contain a
token or secret: an answer that echoes the request (a proxy's or gateway's error page, a debug
body) goes through :func:`redact` with the credentials the call used before it is raised.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import requests

# 401 codes after which the client refreshes the token once and retries (contract §1.6).
TOKEN_CODES = frozenset({"INVALID_TOKEN", "AUTHENTICATION_FAILURE", "INVALID_OAUTHTOKEN"})
RATE_LIMIT_CODES = frozenset({"TOO_MANY_REQUESTS"})
SERVER_CODES = frozenset({"INTERNAL_ERROR", "INTERNAL_SERVER_ERROR"})
_MAX_BODY_IN_MESSAGE = 300
MASK = "********"
# Zoho's OAuth tokens (access and refresh: ``1000.<hex>.<hex>``) and an Authorization header's
# value, masked wherever an answer repeats them, even when we do not know the value.
_TOKEN_PATTERNS = re.compile(
    r"\b1000\.[0-9a-f]{16,}\.[0-9a-f]{16,}\b|(?i:(?<=Zoho-oauthtoken )|(?<=Bearer ))[^\s\"',;}]+"
)


class ZohoError(Exception):
    """A failure talking to Zoho: Zoho's ``code``, ``message``, ``details``, the HTTP status."""

    def __init__(
        self,
        code: str,
        message: str = "",
        details: Mapping[str, Any] | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(code, message, details, http_status)
        self.code = code
        self.message = message
        self.details: dict[str, Any] = dict(details or {})
        self.http_status = http_status

    @property
    def transient(self) -> bool:
        """True when the same call may succeed later."""
        return isinstance(self, TransientZohoError)

    def __str__(self) -> str:
        status = f"HTTP {self.http_status} " if self.http_status is not None else ""
        text = f"{status}{self.code}: {self.message}"
        if self.details:
            shown = json.dumps(self.details, default=str, sort_keys=True)
            text += f" {shown[:_MAX_BODY_IN_MESSAGE]}"
        return text


def mask(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each of ``secrets`` (and anything shaped like a Zoho token) masked."""
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return _TOKEN_PATTERNS.sub(MASK, text)


def redact(error: ZohoError, secrets: Iterable[str]) -> ZohoError:
    """``error`` itself, its message and details masked (:func:`mask`), arguments included.

    For answers that echo the request: the access token, client secret or refresh token the
    call sent must not reach a log, a task's failure or the ledger through the error.
    """
    values = [s for s in secrets if s]
    error.message = mask(error.message, values)
    if error.details:
        error.details = json.loads(mask(json.dumps(error.details, default=str), values))
    error.args = (error.code, error.message, error.details or None, *error.args[3:])
    return error


class TransientZohoError(ZohoError):
    """The call may succeed if repeated later (rate limits, server errors, network trouble)."""


class FatalZohoError(ZohoError):
    """Repeating the same call will fail the same way (auth, validation, other 4xx)."""


class RateLimited(TransientZohoError):
    """HTTP 429 ``TOO_MANY_REQUESTS``: Zoho's concurrency, sub-concurrency or 24 h credit limit."""


class ServerError(TransientZohoError):
    """HTTP 5xx or ``INTERNAL_ERROR``."""


class ConnectionFailed(TransientZohoError):
    """No connection could be made (refused, DNS, connect timeout): the request was not sent."""


class ResponseLost(TransientZohoError):
    """The request was (possibly) sent but no complete answer came back (read timeout, drop)."""


class SlotWaitTimeout(TransientZohoError):
    """The shared concurrency governor had no free slot within the wait bound; nothing was sent."""


class TokenEndpointUnavailable(TransientZohoError):
    """The token endpoint could not be reached or answered 5xx; no CRM request was sent."""


class WaitError(TransientZohoError):
    """A transient error that knows how long to wait: ``retry_after`` seconds (the task's
    countdown), kept in ``args`` so it survives pickling."""

    default_retry_after = 0.0

    def __init__(
        self,
        code: str,
        message: str = "",
        details: Mapping[str, Any] | None = None,
        http_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(code, message, details, http_status)
        wait = self.default_retry_after if retry_after is None else retry_after
        self.args = (code, message, details, http_status, wait)
        self.retry_after = wait


class TokenRefreshThrottled(WaitError):
    """A token refresh was refused to stay within (or because of) Zoho's 10-per-10-minutes rule.

    ``retry_after`` (seconds) says when a refresh may be tried again.
    """

    default_retry_after = 600.0


class CreditBudgetExceeded(WaitError):
    """The call was refused before it was sent: it would take the rolling 24 h spend past
    ``daily_credit_budget - credit_reserve``. ``retry_after`` (seconds) is when enough credits
    will have aged out of the window. Not retried by the client.
    """


class AuthenticationError(FatalZohoError):
    """401: the token was refused even after one refresh, or lacks a scope."""


class TokenRefreshError(FatalZohoError):
    """The token endpoint refused the refresh (``invalid_client``, ``invalid_code``, …)."""


class AmbiguousJobCreation(FatalZohoError):
    """A create-job request was sent and its answer lost: Zoho may or may not have created a job.

    Not retried automatically (Zoho has no idempotency key). ``details["file_id"]`` names the
    upload. The job is an upsert on the unique field, so creating it again cannot duplicate
    records; it costs another 500 credits. A caller that must know can wait for the job's
    callback (put its batch id in the callback URL) before creating the job again.
    """


class ResultFormatError(FatalZohoError):
    """An answer or a result file does not have the shape the contract describes."""


def _body_json(response: requests.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _snippet(response: requests.Response) -> str:
    try:
        text = response.text
    except Exception:  # noqa: BLE001 - a broken body must not hide the status
        return ""
    return " ".join(text.split())[:_MAX_BODY_IN_MESSAGE]


def error_from(answer: requests.Response | requests.RequestException) -> ZohoError:
    """The one place that turns an HTTP answer (or a ``requests`` exception) into a ``ZohoError``.

    Reads Zoho's standard envelope ``{code, message, details, status}`` and the upload gateway's
    ``{ERROR_CODE, ERROR_MESSAGE, …}``; anything else keeps a short, secret-free body snippet.
    429 and ``TOO_MANY_REQUESTS`` are ``RateLimited``; 5xx are ``ServerError``; 401 token codes
    are ``AuthenticationError``; every other answer is fatal.
    """
    if isinstance(answer, requests.RequestException):
        return _from_exception(answer)
    response = answer
    status = response.status_code
    body = _body_json(response)
    code, message, details = "", "", {}
    if body is not None:
        if "code" in body or "message" in body:
            code = str(body.get("code") or "")
            message = str(body.get("message") or "")
            raw_details = body.get("details")
            details = raw_details if isinstance(raw_details, dict) else {}
        elif "ERROR_CODE" in body or "ERROR_MESSAGE" in body:
            code = str(body.get("ERROR_CODE") or "")
            message = str(body.get("ERROR_MESSAGE") or "")
            details = {
                k: body[k] for k in ("x-error", "info", "x-info", "http_status") if k in body
            }
        elif "error" in body:
            code = str(body.get("error") or "")
            message = str(body.get("error_description") or "")
    if not code:
        code = f"HTTP_{status}"
    if not message:
        message = _snippet(response) or response.reason or ""
    if status == 429 or code in RATE_LIMIT_CODES:
        return RateLimited(code, message, details, status)
    if status >= 500 or code in SERVER_CODES:
        return ServerError(code, message, details, status)
    if status == 401 or code in TOKEN_CODES:
        return AuthenticationError(code, message, details, status)
    return FatalZohoError(code, message, details, status)


def _from_exception(exc: requests.RequestException) -> ZohoError:
    # requests' messages name host and port, never headers or bodies, so they carry no token.
    name = type(exc).__name__
    text = f"{name}: {exc}"[:_MAX_BODY_IN_MESSAGE]
    if isinstance(exc, requests.ConnectTimeout):
        return ConnectionFailed("CONNECT_TIMEOUT", text)
    if isinstance(exc, requests.ReadTimeout):
        return ResponseLost("READ_TIMEOUT", text)
    if isinstance(exc, requests.ConnectionError):
        if _never_connected(exc):
            return ConnectionFailed("CONNECTION_REFUSED", text)
        return ResponseLost("CONNECTION_LOST", text)
    lost_body = requests.exceptions.ChunkedEncodingError | requests.exceptions.ContentDecodingError
    if isinstance(exc, lost_body):
        return ResponseLost("CONNECTION_LOST", text)
    return FatalZohoError("REQUEST_ERROR", text)


def _never_connected(exc: requests.ConnectionError) -> bool:
    """True when the connection was never established (so the request was not sent)."""
    reason: BaseException | None = exc
    seen = 0
    while reason is not None and seen < 8:
        seen += 1
        if isinstance(reason, ConnectionRefusedError):
            return True
        name = type(reason).__name__
        if name in {"NewConnectionError", "NameResolutionError", "ConnectTimeoutError"}:
            return True
        nxt = getattr(reason, "reason", None)
        if nxt is None and reason.args and isinstance(reason.args[0], BaseException):
            nxt = reason.args[0]
        reason = nxt if nxt is not reason else None
    return False
