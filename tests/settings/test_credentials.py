"""The rule every credential passes (pure)."""

from __future__ import annotations

import pytest

from pipeline.credentials import (
    MIN_LENGTH,
    CredentialRefused,
    new_secret,
    require,
    require_basic_auth,
)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "is empty"),
        (None, "is empty"),
        ("CHANGE_ME_flower_password", "placeholder"),
        ("my-change_me-token-123", "placeholder"),
        ("x" * (MIN_LENGTH - 1), f"shorter than {MIN_LENGTH}"),
    ],
)
def test_weak_credentials_are_refused_naming_the_variable(value: str | None, reason: str) -> None:
    with pytest.raises(CredentialRefused) as refused:
        require("ORDERSYNC_SYNC_METRICS_TOKEN", value)
    text = str(refused.value)
    assert text.startswith("ORDERSYNC_SYNC_METRICS_TOKEN ") and reason in text
    assert "ordersync secret new" in text and "secrets.token_urlsafe" in text
    assert not value or value not in text


def test_a_new_secret_passes_and_is_new_each_time() -> None:
    first, second = new_secret(), new_secret()
    require("X", first)
    assert first != second and len(first) >= 32


def test_basic_auth_checks_every_password() -> None:
    require_basic_auth("FLOWER_BASIC_AUTH", f"admin:{new_secret()},ops:{new_secret()}")
    for value in ("admin", ":pw-long-enough-1", f"admin:{new_secret()},ops:short"):
        with pytest.raises(CredentialRefused, match="FLOWER_BASIC_AUTH"):
            require_basic_auth("FLOWER_BASIC_AUTH", value)
