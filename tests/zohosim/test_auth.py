"""OAuth token endpoint and CRM auth checks, over HTTP against a real zohosim process."""

from __future__ import annotations

import time

import requests

from tests.zohosim.helpers import Api, T, error
from zohosim.testing import SimProcess


def test_refresh_grant_form_body(api: Api, zohosim: SimProcess) -> None:
    r = api.token_response()
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    body = r.json()
    assert body["api_domain"] == zohosim.base_url
    assert body["expires_in"] == 3600
    assert body["token_type"] == "Bearer"
    assert "refresh_token" not in body
    assert body["access_token"].startswith("1000.")


def test_refresh_grant_query_string(api: Api, zohosim: SimProcess) -> None:
    params = {"grant_type": "refresh_token", "client_id": zohosim.client_id,
              "client_secret": zohosim.client_secret, "refresh_token": zohosim.refresh_token}
    r = requests.post(f"{zohosim.base_url}/oauth/v2/token", params=params, timeout=T)
    assert "access_token" in r.json()


def test_token_errors_are_http_200(api: Api) -> None:
    cases = {
        "invalid_client": {"client_secret": "wrong"},
        "invalid_code": {"refresh_token": "1000.revoked"},
        "unsupported_grant_type": {"grant_type": "password"},
    }
    for code, params in cases.items():
        r = api.token_response(**params)
        assert r.status_code == 200
        assert r.json() == {"error": code}
    assert api.token_response(client_id="1000.OTHER").json() == {"error": "invalid_client"}


def test_expires_in_follows_config(api: Api, zohosim: SimProcess) -> None:
    zohosim.admin.configure(token_ttl=120)
    assert api.token_response().json()["expires_in"] == 120


def test_refresh_throttle(api: Api, zohosim: SimProcess) -> None:
    zohosim.admin.configure(refresh_limit=3)
    for _ in range(3):
        assert "access_token" in api.token_response().json()
    r = api.token_response()
    assert r.status_code == 200
    assert r.json() == {
        "error_description": "You have made too many requests continuously. "
                             "Please try again after some time.",
        "error": "Access Denied",
        "status": "failure",
    }
    assert zohosim.admin.stats()["tokens_issued"] == 3


def test_default_refresh_throttle_is_ten(api: Api) -> None:
    bodies = [api.token_response().json() for _ in range(11)]
    assert all("access_token" in b for b in bodies[:10])
    assert bodies[10]["error"] == "Access Denied"


def test_sixteenth_token_invalidates_the_oldest(api: Api, zohosim: SimProcess) -> None:
    zohosim.admin.configure(refresh_limit=100)
    tokens = [api.new_token() for _ in range(16)]

    def org(token: str) -> requests.Response:
        return api.get("/crm/v8/org", headers={"Authorization": f"Zoho-oauthtoken {token}"})

    assert error(org(tokens[0])) == (401, "INVALID_TOKEN")
    assert org(tokens[0]).json()["message"] == "invalid oauth token"
    assert org(tokens[1]).status_code == 200
    assert org(tokens[15]).status_code == 200


def test_missing_or_garbled_header(api: Api) -> None:
    for headers in ({}, {"Authorization": "Bearer abc"}, {"Authorization": "Zoho-oauthtoken "},
                    {"Authorization": "garbage"}):
        r = api.get("/crm/v8/org", headers=headers)
        assert error(r) == (401, "AUTHENTICATION_FAILURE")
        assert r.json() == {"code": "AUTHENTICATION_FAILURE", "details": {},
                            "message": "Authentication failed", "status": "error"}


def test_unknown_token(api: Api) -> None:
    r = api.get("/crm/v8/org", headers={"Authorization": "Zoho-oauthtoken 1000.nope.nope"})
    assert r.json() == {"code": "INVALID_TOKEN", "details": {}, "message": "invalid oauth token",
                        "status": "error"}
    assert r.status_code == 401


def test_token_expiry(api: Api, zohosim: SimProcess) -> None:
    zohosim.admin.configure(token_ttl=1)
    token = api.new_token()
    h = {"Authorization": f"Zoho-oauthtoken {token}"}
    assert api.get("/crm/v8/org", headers=h).status_code == 200
    time.sleep(1.2)
    assert error(api.get("/crm/v8/org", headers=h)) == (401, "INVALID_TOKEN")


def test_invalidate_all_tokens(api: Api, zohosim: SimProcess) -> None:
    assert api.get("/crm/v8/org").status_code == 200
    zohosim.admin.invalidate_tokens()
    assert error(api.get("/crm/v8/org")) == (401, "INVALID_TOKEN")
    assert api.get("/crm/v8/org", headers={
        "Authorization": f"Zoho-oauthtoken {api.new_token()}"}).status_code == 200


def test_auth_failures_are_not_charged(api: Api, zohosim: SimProcess) -> None:
    api.get("/crm/v8/org", headers={})
    assert zohosim.admin.credits()["used_24h"] == 0


def test_current_user(api: Api) -> None:
    r = api.get("/crm/v8/users", params={"type": "CurrentUser"})
    assert r.status_code == 200
    (user,) = r.json()["users"]
    assert user["id"].isdigit()
    assert user["email"]


def test_api_domain_follows_the_host_the_client_used(zohosim: SimProcess) -> None:
    port = zohosim.base_url.rsplit(":", 1)[1]
    r = requests.post(f"http://localhost:{port}/oauth/v2/token", timeout=T, data={
        "grant_type": "refresh_token", "client_id": zohosim.client_id,
        "client_secret": zohosim.client_secret, "refresh_token": zohosim.refresh_token})
    assert r.json()["api_domain"] == f"http://localhost:{port}"


def test_revoke_refresh_token(api: Api, zohosim: SimProcess) -> None:
    assert api.get("/crm/v8/org").status_code == 200
    url = f"{zohosim.base_url}/oauth/v2/token/revoke"
    assert requests.post(url, params={"token": "1000.other"}, timeout=T).json() == {
        "error": "invalid_token"}
    r = requests.post(url, params={"token": zohosim.refresh_token}, timeout=T)
    assert (r.status_code, r.json()) == (200, {"status": "success"})
    assert error(api.get("/crm/v8/org")) == (401, "INVALID_TOKEN")
    assert api.token_response().json() == {"error": "invalid_code"}
    zohosim.admin.reset()
    assert "access_token" in api.token_response().json()


def test_legacy_expiry_and_expired_token_code_switches(api: Api, zohosim: SimProcess) -> None:
    zohosim.admin.configure(token_expiry_legacy=True, token_ttl=1,
                            expired_token_code="AUTHENTICATION_FAILURE")
    body = api.token_response().json()
    assert (body["expires_in"], body["expires_in_sec"]) == (1000, 1)
    h = {"Authorization": f"Zoho-oauthtoken {body['access_token']}"}
    time.sleep(1.2)
    assert error(api.get("/crm/v8/org", headers=h)) == (401, "AUTHENTICATION_FAILURE")
    # an unknown token is still INVALID_TOKEN
    assert error(api.get("/crm/v8/org", headers={"Authorization": "Zoho-oauthtoken 1000.x"})
                 ) == (401, "INVALID_TOKEN")
