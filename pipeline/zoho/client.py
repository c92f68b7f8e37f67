"""The Zoho CRM client: one method per endpoint the sync uses (contract §0).

Every call goes through ``_call``, which in order: reserves its credits in the ledger (refused
before sending if over budget), takes a slot from the shared governor, sends with a (connect, read)
timeout and the shared access token, maps the answer with ``errors.error_from``, settles the
credits, refreshes the token once on a 401 token error, and retries transient errors at most
``max_retries`` times with exponential back-off and full jitter (sleeping without a slot).

Create one client per process (after a fork); the state shared between processes and hosts lives
in Redis (token, zgid, governor) and PostgreSQL (credits).

Creating a bulk job is the one call that is not retried once it may have reached Zoho: a read
timeout, a dropped answer or a 5xx raise ``AmbiguousJobCreation`` (see its docstring). Only a
connection never made, or a 429, is retried.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import redis
import requests

from pipeline.mapping import FieldType, Mapping
from pipeline.serialize import ZOHO_DATE_FORMAT, ZOHO_DATETIME_FORMAT
from pipeline.zoho import limits
from pipeline.zoho.auth import TokenManager
from pipeline.zoho.config import ZohoSettings
from pipeline.zoho.credits import CreditLedger, Reservation
from pipeline.zoho.endpoints import Endpoints
from pipeline.zoho.errors import (
    AmbiguousJobCreation,
    AuthenticationError,
    ConnectionFailed,
    FatalZohoError,
    RateLimited,
    ResponseLost,
    ResultFormatError,
    ServerError,
    SlotWaitTimeout,
    TokenEndpointUnavailable,
    TransientZohoError,
    ZohoError,
    error_from,
    redact,
)
from pipeline.zoho.governor import Governor
from pipeline.zoho.results import (
    BulkJob,
    DeleteOutcome,
    UpsertOutcome,
    parse_delete,
    parse_job,
    parse_upsert,
)

if TYPE_CHECKING:
    from pipeline.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")
AUTH_PREFIX = "Zoho-oauthtoken "
ZGID_TTL = 24 * 3600
_CHUNK = 256 * 1024
# Errors after which the call certainly was not charged: its reservation is released.
_NOT_CHARGED = (RateLimited, ConnectionFailed, AuthenticationError, SlotWaitTimeout)
# Transient errors the client retries itself (others, e.g. budget or slot waits, go to the caller).
_RETRIABLE = (RateLimited, ConnectionFailed, ServerError, ResponseLost, TokenEndpointUnavailable)
# Errors that prove Zoho did not process the request: safe to retry even a create-job.
_NEVER_PROCESSED = (RateLimited, ConnectionFailed)


class Api:
    """Names of the calls, as recorded in the credit ledger (and zohosim's ``by_api``)."""

    ORG = "org"
    FIELDS = "fields"
    RECORDS_GET = "records_get"
    UPLOAD = "upload"
    BULK_CREATE = "bulk_create"
    BULK_GET = "bulk_get"
    DOWNLOAD = "download"
    UPSERT = "upsert"
    DELETE = "delete"


@dataclass(frozen=True)
class RecordPage:
    """One page of ``get_records``."""

    records: list[dict[str, Any]]
    more: bool
    page: int
    next_page_token: str | None = None  # Zoho v8 pages past 2,000 records only by token


class _MultipartFile:
    """A ``multipart/form-data`` body with one ``file`` part, read from disk in chunks.

    ``requests`` streams an object with ``read`` and ``__len__``, so the zip is never held in
    memory (``files=`` would build the whole body first).
    """

    def __init__(self, path: Path, filename: str, content_type: str = "application/zip") -> None:
        self.boundary = uuid.uuid4().hex
        self._head = (
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        self._tail = f"\r\n--{self.boundary}--\r\n".encode()
        self._size = path.stat().st_size
        self._path = path
        self._parts: Iterator[bytes] | None = None
        self._fh: IO[bytes] | None = None
        self._buffer = b""

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return len(self._head) + self._size + len(self._tail)

    def _gen(self) -> Iterator[bytes]:
        yield self._head
        self._fh = self._path.open("rb")
        try:
            while chunk := self._fh.read(_CHUNK):
                yield chunk
        finally:
            self._fh.close()
        yield self._tail

    def read(self, size: int = -1) -> bytes:
        if self._parts is None:
            self._parts = self._gen()
        want = _CHUNK if size is None or size < 0 else size
        while len(self._buffer) < want:
            nxt = next(self._parts, None)
            if nxt is None:
                break
            self._buffer += nxt
        out, self._buffer = self._buffer[:want], self._buffer[want:]
        return out

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


def _json(response: requests.Response) -> dict[str, Any]:
    """The JSON object of a 2xx answer; an empty (204) answer is ``{}``."""
    if response.status_code == 204 or not response.content:
        return {}
    try:
        body = response.json()
    except ValueError:
        raise ResultFormatError(
            "RESULT_FORMAT", "expected a JSON answer", None, response.status_code
        ) from None
    if not isinstance(body, dict):
        raise ResultFormatError(
            "RESULT_FORMAT", "expected a JSON object", None, response.status_code
        )
    return body


def _success_body(response: requests.Response) -> dict[str, Any]:
    """A body whose ``status`` must be ``success`` (upload may fail with HTTP 200, §2.4)."""
    body = _json(response)
    if str(body.get("status", "")).lower() != "success":
        raise error_from(response)
    return body


def _json_text(obj: Any) -> str:
    """JSON text with ``Decimal`` values written exactly as JSON numbers (never via a float).

    ``json.dumps`` runs at C speed; each Decimal is first written as a string tagged with a
    one-off marker, and the tagged strings are then turned back into bare numbers.
    """
    marker = uuid.uuid4().hex

    def decimal(value: object) -> str:
        if isinstance(value, Decimal) and value.is_finite():
            return f"{marker}{format(value, 'f')}"
        raise TypeError(f"cannot write {type(value).__name__} as JSON")

    text = json.dumps(obj, ensure_ascii=False, default=decimal, separators=(",", ":"))
    return re.sub(f'"{marker}(-?[0-9]+(?:\\.[0-9]+)?)"', r"\1", text) if marker in text else text


def _json_request(payload: Any) -> dict[str, Any]:
    """Request kwargs for a JSON body; ``Decimal`` values are written exactly (no float)."""
    return {
        "data": _json_text(payload).encode("utf-8"),
        "headers": {"Content-Type": "application/json; charset=utf-8"},
    }


def _2xx(response: requests.Response) -> bool:
    return 200 <= response.status_code < 300


def _upsert_answer(response: requests.Response) -> bool:
    """Upsert answers 200/201/207, and 400 with per-record items when every record failed."""
    if _2xx(response):
        return True
    if response.status_code == 400:
        try:
            body = response.json()
        except ValueError:
            return False
        return isinstance(body, dict) and isinstance(body.get("data"), list)
    return False


class ZohoClient:
    """One method per Zoho endpoint, with shared auth, governor, credits, timeouts and retries."""

    def __init__(
        self,
        settings: ZohoSettings,
        *,
        redis: redis.Redis,
        credits: CreditLedger,
        session: requests.Session | None = None,
    ) -> None:
        self.settings = settings
        self.endpoints = Endpoints.from_settings(settings)
        self.redis = redis
        self.credits = credits
        self._own_session = session is None
        self.session = session or requests.Session()
        self._pid = os.getpid()
        prefix = settings.redis_prefix
        self.tokens = TokenManager(
            settings,
            self.endpoints,
            redis,
            self.session,
            prefix=prefix,
            margin=settings.token_refresh_margin,
            refresh_limit=settings.token_refresh_limit,
            lock_ttl=max(10.0, settings.connect_timeout + settings.read_timeout + 5.0),
            wait=max(10.0, settings.connect_timeout + settings.read_timeout + 5.0),
        )
        self.governor = Governor(
            redis,
            prefix,
            settings.concurrency,
            settings.sub_concurrency,
            lease_ttl=settings.lease_ttl,
            max_wait=settings.slot_wait,
        )
        self._zgid_key = f"{prefix}:zgid"
        self._zgid: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ZohoClient:
        """A client wired from the application ``Settings``: Redis at ``redis_url``, the credit
        ledger in ``source.dsn`` / ``source.ledger_schema`` with the Zoho budget and reserve.
        """
        zoho = settings.zoho
        ledger = CreditLedger(
            settings.source.dsn,
            settings.source.ledger_schema,
            budget=zoho.daily_credit_budget,
            reserve=zoho.credit_reserve,
        )
        return cls(zoho, redis=redis.Redis.from_url(settings.redis_url), credits=ledger)

    def __repr__(self) -> str:
        return f"ZohoClient(api={self.endpoints.api!r}, module={self.settings.module!r})"

    def close(self) -> None:
        """Close the HTTP session (if this client created it) and the ledger's connection."""
        if self._own_session:
            self.session.close()
        self.credits.close()

    # -- endpoints -------------------------------------------------------------------------------
    def org_zgid(self, *, run_id: int | None = None, batch_id: int | None = None) -> str:
        """The org's ``zgid`` (for ``X-CRM-ORG``): fetched once, cached in Redis for a day.

        The fetch costs one credit, charged to ``run_id``/``batch_id`` when given (the upload
        that needed it), so a run's credits include it.
        """
        if self._zgid:
            return self._zgid
        cached = self.redis.get(self._zgid_key)
        if cached:
            self._zgid = cached.decode() if isinstance(cached, bytes) else str(cached)
            return self._zgid
        body: dict[str, Any] = self._call(
            Api.ORG,
            "GET",
            self.endpoints.org_url,
            credits=limits.DEFAULT_CALL_CREDITS,
            run_id=run_id,
            batch_id=batch_id,
        )
        try:
            zgid = str(body["org"][0]["zgid"])
        except (KeyError, IndexError, TypeError):
            raise ResultFormatError("RESULT_FORMAT", "GET org carries no org[0].zgid") from None
        self.redis.set(self._zgid_key, zgid, ex=ZGID_TTL)
        self._zgid = zgid
        return zgid

    def upload(
        self, zip_path: Path | str, *, run_id: int | None = None, batch_id: int | None = None
    ) -> str:
        """Upload a zipped CSV for bulk write, streamed from disk; Zoho's ``file_id`` (a string).

        Costs ``UPLOAD_CREDITS``, plus one credit for the org id if it is not cached yet
        (:meth:`org_zgid`), charged to ``run_id``/``batch_id``.
        """
        path = Path(zip_path)
        size = path.stat().st_size
        if size > limits.BULK_FILE_MAX_BYTES:
            raise FatalZohoError(
                "FILE_TOO_LARGE", f"{path.name} is {size} bytes, over Zoho's 25 MB", {"size": size}
            )
        zgid = self.org_zgid(run_id=run_id, batch_id=batch_id)

        def request() -> dict[str, Any]:
            body = _MultipartFile(path, path.name)
            return {
                "data": body,
                "headers": {
                    "feature": "bulk-write",
                    "X-CRM-ORG": zgid,
                    "Content-Type": body.content_type,
                },
            }

        body: dict[str, Any] = self._call(
            Api.UPLOAD,
            "POST",
            self.endpoints.upload_url,
            credits=limits.UPLOAD_CREDITS,
            run_id=run_id,
            batch_id=batch_id,
            request=request,
            consume=_success_body,
        )
        try:
            file_id = str(body["details"]["file_id"])
        except (KeyError, TypeError):
            raise ResultFormatError("RESULT_FORMAT", "upload answer carries no file_id") from None
        log.info("uploaded %s (%s bytes) as file %s", path.name, size, file_id)
        return file_id

    def job_request(
        self, file_id: str, mapping: Mapping, *, callback_url: str | None = None
    ) -> dict[str, Any]:
        """The JSON body of a bulk write upsert job for ``file_id`` (pure, no I/O)."""
        field_mappings: list[dict[str, Any]] = []
        for index, spec in enumerate(mapping.fields):
            item: dict[str, Any] = {"api_name": spec.api_name, "index": index}
            if spec.type is FieldType.DATE:
                item["format"] = ZOHO_DATE_FORMAT
            elif spec.type is FieldType.DATETIME:
                item["format"] = ZOHO_DATETIME_FORMAT
            field_mappings.append(item)
        body: dict[str, Any] = {
            "operation": "upsert",
            "ignore_empty": self.settings.ignore_empty,
            "character_encoding": "UTF-8",
            "resource": [
                {
                    "type": "data",
                    "module": {"api_name": self.settings.module},
                    "file_id": str(file_id),
                    "find_by": mapping.unique_field,
                    "field_mappings": field_mappings,
                }
            ],
        }
        if callback_url:
            body["callback"] = {"url": callback_url, "method": "post"}
        return body

    def create_upsert_job(
        self,
        file_id: str,
        mapping: Mapping,
        *,
        callback_url: str | None = None,
        run_id: int | None = None,
        batch_id: int | None = None,
    ) -> str:
        """Create a bulk write upsert job over an uploaded file; the job id.

        Costs 500 credits (reserved first). Raises ``AmbiguousJobCreation`` instead of retrying
        when the request may have reached Zoho without an answer (read timeout, drop, 5xx).
        ``callback_url`` is the full URL Zoho POSTs to when the job ends (none if ``None``).
        """
        if len(mapping.fields) > limits.BULK_MAX_COLUMNS:
            raise FatalZohoError("HEADER_LIMIT_EXCEEDED", "more than 200 mapped columns")
        payload = self.job_request(file_id, mapping, callback_url=callback_url)
        try:
            body: dict[str, Any] = self._call(
                Api.BULK_CREATE,
                "POST",
                self.endpoints.bulk_write_url,
                credits=limits.BULK_JOB_CREDITS,
                run_id=run_id,
                batch_id=batch_id,
                request=lambda: _json_request(payload),
                retry_if_sent=False,
            )
        except (ResponseLost, ServerError) as exc:
            raise AmbiguousJobCreation(
                "AMBIGUOUS_JOB_CREATION",
                f"create-job for file {file_id} may have reached Zoho ({exc.code}); "
                "not retried to avoid a second job",
                {"file_id": str(file_id), "cause": exc.code},
                exc.http_status,
            ) from exc
        try:
            job_id = str(body["details"]["id"])
        except (KeyError, TypeError):
            raise ResultFormatError("RESULT_FORMAT", "create-job answer carries no id") from None
        log.info("created bulk write job %s for file %s", job_id, file_id)
        return job_id

    def get_job(self, job_id: str) -> BulkJob:
        """The job's details, state normalised (``IN PROGRESS`` == ``INPROGRESS``)."""
        body: dict[str, Any] = self._call(
            Api.BULK_GET,
            "GET",
            self.endpoints.job_url(job_id),
            credits=limits.BULK_JOB_READ_CREDITS,
        )
        return parse_job(body)

    def download_result(self, url: str, dest: Path | str) -> Path:
        """Stream a job's result zip to ``dest`` (absolute or relative URL); returns ``dest``.

        Written to ``dest.part`` and renamed, so ``dest`` is either complete or absent.
        """
        target = Path(dest)
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")

        def consume(response: requests.Response) -> Path:
            with part.open("wb") as fh:
                for chunk in response.iter_content(_CHUNK):
                    fh.write(chunk)
            part.replace(target)
            return target

        try:
            return self._call(
                Api.DOWNLOAD,
                "GET",
                self.endpoints.resolve(url),
                credits=limits.BULK_RESULT_DOWNLOAD_CREDITS,
                request=lambda: {"stream": True},
                consume=consume,
            )
        finally:
            part.unlink(missing_ok=True)

    def upsert(
        self,
        records: Sequence[dict[str, Any]],
        *,
        duplicate_check_fields: Sequence[str] | None = None,
        trigger: Sequence[str] | None = None,
        run_id: int | None = None,
        batch_id: int | None = None,
    ) -> list[UpsertOutcome]:
        """Upsert 1–100 records; one ``UpsertOutcome`` per record, in request order.

        Answers 200, 207 and 400-with-items all give outcomes; only request-level failures raise.
        Safe to repeat (matched on ``duplicate_check_fields``, default the unique field), so a
        lost answer is retried. ``trigger=None`` leaves Zoho's automation on; ``[]`` turns it off.
        """
        count = len(records)
        credits = limits.upsert_credits(count)  # raises ValueError outside 1..100
        payload: dict[str, Any] = {
            "data": list(records),
            "duplicate_check_fields": list(duplicate_check_fields or [self.settings.unique_field]),
        }
        if trigger is not None:
            payload["trigger"] = list(trigger)
        body: dict[str, Any] = self._call(
            Api.UPSERT,
            "POST",
            self.endpoints.upsert_url(self.settings.module),
            credits=credits,
            records=count,
            heavy=count >= limits.SUB_CONCURRENCY_MIN_RECORDS,
            run_id=run_id,
            batch_id=batch_id,
            request=lambda: _json_request(payload),
            accept=_upsert_answer,
        )
        return parse_upsert(body, count)

    def delete_records(
        self, record_ids: Sequence[str], *, run_id: int | None = None
    ) -> list[DeleteOutcome]:
        """Delete 1–100 records by Zoho id; one ``DeleteOutcome`` per id, in request order.

        ``DELETE /crm/v8/{module}?ids=…``. Answers 200, 207 and 400-with-items give outcomes;
        only request-level failures raise. Safe to repeat: an id already gone answers
        ``INVALID_DATA`` for itself (``DeleteOutcome.gone``), so a lost answer is retried.
        """
        ids = [str(i) for i in record_ids]
        credits = limits.delete_credits(len(ids))  # raises ValueError outside 1..100
        body: dict[str, Any] = self._call(
            Api.DELETE,
            "DELETE",
            self.endpoints.records_url(self.settings.module),
            credits=credits,
            records=len(ids),
            run_id=run_id,
            request=lambda: {"params": {"ids": ",".join(ids), "wf_trigger": "false"}},
            accept=_upsert_answer,
        )
        return parse_delete(body, ids)

    def fields(self) -> list[dict[str, Any]]:
        """Field metadata of the module (``GET /crm/v8/settings/fields?module=…``)."""
        body: dict[str, Any] = self._call(
            Api.FIELDS,
            "GET",
            self.endpoints.fields_url,
            credits=limits.DEFAULT_CALL_CREDITS,
            request=lambda: {"params": {"module": self.settings.module}},
        )
        return list(body.get("fields") or [])

    def get_records(
        self,
        page: int = 1,
        per_page: int = 200,
        *,
        fields: Sequence[str] | None = None,
        page_token: str | None = None,
    ) -> RecordPage:
        """One page of the module's records (``per_page`` ≤ 200).

        Zoho v8 requires the ``fields`` to return; by default the unique field (plus ``id``).
        ``page`` reaches only the first 2,000 records; past them, pass the previous page's
        ``next_page_token`` as ``page_token`` (:meth:`iter_records` does).
        """
        wanted = list(fields) if fields else [self.settings.unique_field]
        params: dict[str, Any] = {"per_page": min(per_page, 200), "fields": ",".join(wanted)}
        if page_token:
            params["page_token"] = page_token
        else:
            params["page"] = page
        body: dict[str, Any] = self._call(
            Api.RECORDS_GET,
            "GET",
            self.endpoints.records_url(self.settings.module),
            credits=limits.DEFAULT_CALL_CREDITS,
            request=lambda: {"params": params},
        )
        raw_info = body.get("info")
        info: dict[str, Any] = raw_info if isinstance(raw_info, dict) else {}
        token = info.get("next_page_token")
        return RecordPage(
            list(body.get("data") or []),
            bool(info.get("more_records")),
            int(info.get("page") or page),
            str(token) if token else None,
        )

    def iter_records(
        self, *, fields: Sequence[str] | None = None, per_page: int = 200
    ) -> Iterator[dict[str, Any]]:
        """Every record of the module, page after page (by token once Zoho offers one)."""
        page = self.get_records(1, per_page, fields=fields)
        yield from page.records
        number = 1
        while page.more:
            number += 1
            if page.next_page_token:
                page = self.get_records(per_page=per_page, fields=fields,
                                        page_token=page.next_page_token)  # fmt: skip
            else:
                page = self.get_records(number, per_page, fields=fields)
            yield from page.records

    def get_record(self, record_id: str) -> dict[str, Any] | None:
        """One record by id, or ``None`` if Zoho has none (204 or 404)."""
        try:
            body: dict[str, Any] = self._call(
                Api.RECORDS_GET,
                "GET",
                self.endpoints.record_url(self.settings.module, record_id),
                credits=limits.DEFAULT_CALL_CREDITS,
            )
        except FatalZohoError as exc:
            if exc.http_status == 404 and exc.code != "INVALID_URL_PATTERN":
                return None
            raise
        data = body.get("data")
        return data[0] if isinstance(data, list) and data else None

    # -- the one path every call takes ----------------------------------------------------------
    def _session(self) -> requests.Session:
        if self._own_session and self._pid != os.getpid():  # forked: a fresh pool of sockets
            self.session = requests.Session()
            self.tokens.session = self.session
            self._pid = os.getpid()
        return self.session

    def _secrets(self, token: str) -> tuple[str, ...]:
        """What an answer echoing our request must not carry on: the token and credentials."""
        s = self.settings
        return (token, s.client_secret.reveal(), s.refresh_token.reveal())

    def _call(
        self,
        api: str,
        method: str,
        url: str,
        *,
        credits: int = 0,
        records: int = 0,
        heavy: bool = False,
        run_id: int | None = None,
        batch_id: int | None = None,
        request: Callable[[], dict[str, Any]] | None = None,
        accept: Callable[[requests.Response], bool] = _2xx,
        consume: Callable[[requests.Response], T] = _json,  # type: ignore[assignment]
        retry_if_sent: bool = True,
    ) -> T:
        attempt = 0
        refreshed = False
        while True:
            token = ""
            sent = False  # True once the CRM request itself was attempted
            try:
                token = self.tokens.token()
                sent = True
                return self._attempt(
                    api, method, url, token, credits, records, heavy, run_id, batch_id,
                    request, accept, consume,
                )  # fmt: skip
            except AuthenticationError as err:
                # INVALID_TOKEN / AUTHENTICATION_FAILURE, or the upload gateway's bare 401: the
                # token may be the cause, so refresh once. A scope mismatch will not heal.
                if err.code != "OAUTH_SCOPE_MISMATCH" and not refreshed:
                    refreshed = True
                    log.info("%s: Zoho refused the token (%s); refreshing once", api, err.code)
                    self.tokens.refresh(stale=token)
                    continue
                raise
            except TransientZohoError as err:
                if not isinstance(err, _RETRIABLE) or attempt >= self.settings.max_retries:
                    raise
                if sent and not retry_if_sent and not isinstance(err, _NEVER_PROCESSED):
                    raise
                attempt += 1
                self._back_off(api, method, err, attempt)

    def _back_off(self, api: str, method: str, err: ZohoError, attempt: int) -> None:
        """Sleep (no slot held) before retry ``attempt``: full jitter, doubling, capped."""
        s = self.settings
        delay = random.uniform(0, min(s.retry_backoff_max, s.retry_backoff * 2 ** (attempt - 1)))
        log.warning(
            "%s %s failed (%s), retry %s/%s in %.2f s",
            api, method, err.code, attempt, s.max_retries, delay,
        )  # fmt: skip
        time.sleep(delay)

    def _attempt(
        self,
        api: str,
        method: str,
        url: str,
        token: str,
        credits: int,
        records: int,
        heavy: bool,
        run_id: int | None,
        batch_id: int | None,
        request: Callable[[], dict[str, Any]] | None,
        accept: Callable[[requests.Response], bool],
        consume: Callable[[requests.Response], T],
    ) -> T:
        s = self.settings
        reservation: Reservation | None = None
        if credits:
            reservation = self.credits.reserve(
                api, credits, records=records, run_id=run_id, batch_id=batch_id
            )
        remaining: int | None = None
        error: ZohoError | None = None
        kwargs = request() if request else {}
        headers = dict(kwargs.pop("headers", {}) or {})
        headers["Authorization"] = AUTH_PREFIX + token
        started = time.monotonic()
        status: int | str = "-"
        try:
            with self.governor.slot(heavy):
                try:
                    response = self._session().request(
                        method,
                        url,
                        headers=headers,
                        timeout=(s.connect_timeout, s.read_timeout),
                        **kwargs,
                    )
                    with response:
                        status = response.status_code
                        remaining = _credits_header(response)
                        if not accept(response):
                            raise error_from(response)
                        return consume(response)
                except requests.RequestException as exc:
                    raise error_from(exc) from None
        except ZohoError as exc:
            error = redact(exc, self._secrets(token))  # in place: an echoed request is masked
            raise
        finally:
            stream = kwargs.get("data")
            if isinstance(stream, _MultipartFile):
                stream.close()
            if reservation is not None:
                charged = error is None or not isinstance(error, _NOT_CHARGED)
                self.credits.settle(reservation, charged=charged, remaining=remaining)
            elif remaining is not None:
                self.credits.note_remaining(api, remaining)
            log.debug(
                "zoho %s %s -> %s in %.3f s%s",
                api,
                method,
                status,
                time.monotonic() - started,
                f" ({error.code})" if error is not None else "",
            )


def _credits_header(response: requests.Response) -> int | None:
    value = response.headers.get("X-API-CREDITS-REMAINING")
    if value is None:
        return None
    try:
        return int(float(value))
    except ValueError:
        return None
