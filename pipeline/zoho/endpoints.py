"""Where a Zoho CRM org lives: accounts, API and upload hosts (contract §1.1)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urljoin

from pipeline.zoho.config import ZohoSettings

API_VERSION = "v8"

# data centre -> (accounts server, CRM API domain, bulk upload host), contract §1.1.
DATA_CENTRES: dict[str, tuple[str, str, str]] = {
    "us": ("https://accounts.zoho.com", "https://www.zohoapis.com", "https://content.zohoapis.com"),
    "eu": ("https://accounts.zoho.eu", "https://www.zohoapis.eu", "https://content.zohoapis.eu"),
    "in": ("https://accounts.zoho.in", "https://www.zohoapis.in", "https://content.zohoapis.in"),
    "au": (
        "https://accounts.zoho.com.au",
        "https://www.zohoapis.com.au",
        "https://content.zohoapis.com.au",
    ),
    "jp": ("https://accounts.zoho.jp", "https://www.zohoapis.jp", "https://content.zohoapis.jp"),
    "cn": (
        "https://accounts.zoho.com.cn",
        "https://www.zohoapis.com.cn",
        "https://content.zohoapis.com.cn",
    ),
    "ca": (
        "https://accounts.zohocloud.ca",
        "https://www.zohoapis.ca",
        "https://upload.zohocloud.ca",
    ),
    "sa": ("https://accounts.zoho.sa", "https://www.zohoapis.sa", "https://files.zoho.sa"),
}


def _base(url: str) -> str:
    return url.rstrip("/")


@dataclass(frozen=True)
class Endpoints:
    """The three Zoho hosts of one org, and the URL of every call the client makes."""

    accounts: str
    api: str
    upload: str

    @classmethod
    def for_data_centre(
        cls,
        name: str,
        *,
        accounts: str | None = None,
        api: str | None = None,
        upload: str | None = None,
    ) -> Endpoints:
        """Hosts of data centre ``name`` (us, eu, in, au, jp, cn, ca, sa); explicit URLs win.

        Each override replaces only its own host; the others keep the data centre's default.
        """
        key = name.strip().lower()
        if key not in DATA_CENTRES:
            known = ", ".join(sorted(DATA_CENTRES))
            raise ValueError(f"unknown Zoho data centre {name!r}: expected one of {known}")
        dc_accounts, dc_api, dc_upload = DATA_CENTRES[key]
        return cls(
            accounts=_base(accounts or dc_accounts),
            api=_base(api or dc_api),
            upload=_base(upload or dc_upload),
        )

    @classmethod
    def from_settings(cls, settings: ZohoSettings) -> Endpoints:
        """Hosts from ``ZohoSettings`` (data_centre plus the url overrides)."""
        return cls.for_data_centre(
            settings.data_centre,
            accounts=settings.accounts_url,
            api=settings.api_url,
            upload=settings.upload_url,
        )

    # -- URLs --------------------------------------------------------------------------------
    @property
    def token_url(self) -> str:
        """``POST`` here to refresh an access token."""
        return f"{self.accounts}/oauth/v2/token"

    @property
    def org_url(self) -> str:
        return f"{self.api}/crm/{API_VERSION}/org"

    @property
    def upload_url(self) -> str:
        return f"{self.upload}/crm/{API_VERSION}/upload"

    @property
    def bulk_write_url(self) -> str:
        return f"{self.api}/crm/bulk/{API_VERSION}/write"

    def job_url(self, job_id: str) -> str:
        """``GET`` the details of bulk write job ``job_id``."""
        return f"{self.bulk_write_url}/{quote(str(job_id), safe='')}"

    def upsert_url(self, module: str) -> str:
        return f"{self.api}/crm/{API_VERSION}/{quote(module, safe='')}/upsert"

    @property
    def fields_url(self) -> str:
        return f"{self.api}/crm/{API_VERSION}/settings/fields"

    def records_url(self, module: str) -> str:
        return f"{self.api}/crm/{API_VERSION}/{quote(module, safe='')}"

    def record_url(self, module: str, record_id: str) -> str:
        return f"{self.records_url(module)}/{quote(str(record_id), safe='')}"

    def resolve(self, url: str) -> str:
        """An absolute URL for ``url``: a relative download URL is resolved against the API domain.

        Zoho has sent both ``https://download-accl.zoho.com/...`` and ``/v7/crm/org…/….zip``
        (contract §4.4).
        """
        if url.startswith(("http://", "https://")):
            return url
        return urljoin(self.api + "/", url.lstrip("/"))
