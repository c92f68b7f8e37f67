"""No default credentials: the one rule every credential we are handed must pass.

A credential is refused when it is empty, contains ``CHANGE_ME`` (our examples' placeholder,
any case), or is shorter than ``MIN_LENGTH`` characters. For ``user:password`` pairs (Flower's
``FLOWER_BASIC_AUTH``, comma-separated for several users) the rule applies to each password.
The message names the variable and how to make a good one; it never repeats the value.
"""

from __future__ import annotations

import secrets

MIN_LENGTH = 12
PLACEHOLDER = "CHANGE_ME"
HOW = (
    "make one with `ordersync secret new`"
    " (or: python -c 'import secrets; print(secrets.token_urlsafe(24))')"
)


class CredentialRefused(ValueError):
    """A credential fails the rule; ``name`` is the variable, ``reason`` why (no value)."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(name, reason)
        self.name = name
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.name} {self.reason}: {HOW}"


def new_secret() -> str:
    """A fresh random secret (32 URL-safe characters, 192 bits)."""
    return secrets.token_urlsafe(24)


def problem(value: str | None) -> str | None:
    """Why ``value`` is refused as a password or token, or None when it passes."""
    if not value:
        return "is empty"
    if PLACEHOLDER.lower() in value.lower():
        return f"is a placeholder ({PLACEHOLDER}…), not a password"
    if len(value) < MIN_LENGTH:
        return f"is shorter than {MIN_LENGTH} characters"
    return None


def require(name: str, value: str | None) -> None:
    """Raise :class:`CredentialRefused` unless ``value`` passes the rule."""
    reason = problem(value)
    if reason is not None:
        raise CredentialRefused(name, reason)


def require_basic_auth(name: str, value: str | None) -> None:
    """``user:password[,user:password…]``, each password passing the rule."""
    if not value:
        raise CredentialRefused(name, "is empty")
    for i, pair in enumerate(value.split(",")):
        user, sep, password = pair.partition(":")
        if not sep or not user:
            raise CredentialRefused(name, f"entry {i + 1} is not user:password")
        reason = problem(password)
        if reason is not None:
            raise CredentialRefused(name, f"password of {user!r} {reason}")
