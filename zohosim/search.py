"""The ``criteria`` grammar of ``GET /crm/v8/{module}/search``: ``((f:equals:v)and(g:in:a,b))``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Predicate = Callable[[dict[str, Any]], bool]
OPERATORS = ("equals", "not_equal", "starts_with", "in", "greater_than", "less_than",
             "greater_equal", "less_equal")


class CriteriaError(ValueError):
    """Criteria text we cannot parse (Zoho answers INVALID_QUERY)."""


def _norm(v: Any) -> Any:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (int, float)):
        return float(v)
    return str(v).casefold()


def _coerce(text: str, sample: Any) -> Any:
    if isinstance(sample, (int, float)) and not isinstance(sample, bool):
        try:
            return float(text)
        except ValueError:
            return text.casefold()
    return text.casefold()


def _condition(text: str) -> Predicate:
    parts = _split_unescaped(text, ":", 2)
    if len(parts) != 3 or parts[1] not in OPERATORS or not parts[0]:
        raise CriteriaError(text)
    field, op, raw = parts
    values = [_unescape(v) for v in _split_unescaped(raw, ",")] if op == "in" else [_unescape(raw)]

    def pred(rec: dict[str, Any]) -> bool:
        have = rec.get(field)
        if have is None:
            return op == "not_equal"
        h = _norm(have)
        wanted = [_coerce(v, have) for v in values]
        w = wanted[0]
        if op == "equals":
            return bool(h == w)
        if op == "not_equal":
            return bool(h != w)
        if op == "in":
            return h in wanted
        if op == "starts_with":
            return isinstance(h, str) and isinstance(w, str) and h.startswith(w)
        try:
            if op == "greater_than":
                return bool(h > w)
            if op == "less_than":
                return bool(h < w)
            if op == "greater_equal":
                return bool(h >= w)
            return bool(h <= w)
        except TypeError:
            return False

    return pred


def _unescape(s: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(s):
        if s[i] == "\\" and i + 1 < len(s):
            out.append(s[i + 1])
            i += 2
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def _split_unescaped(s: str, sep: str, maxsplit: int = -1) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(s):
        if s[i] == "\\" and i + 1 < len(s):
            cur.append(s[i : i + 2])
            i += 2
            continue
        if s[i] == sep and (maxsplit < 0 or len(parts) < maxsplit):
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(s[i])
        i += 1
    parts.append("".join(cur))
    return parts


def parse_criteria(text: str) -> Predicate:
    """Compile criteria text into a record predicate; raises CriteriaError."""
    pos = 0

    def expr() -> Predicate:
        nonlocal pos
        left = term()
        while True:
            rest = text[pos:].lower()
            if rest.startswith("and"):
                pos += 3
                right, prev = term(), left
                left = (lambda a, b: lambda r: a(r) and b(r))(prev, right)
            elif rest.startswith("or"):
                pos += 2
                right, prev = term(), left
                left = (lambda a, b: lambda r: a(r) or b(r))(prev, right)
            else:
                return left

    def term() -> Predicate:
        nonlocal pos
        if pos >= len(text) or text[pos] != "(":
            raise CriteriaError(text)
        pos += 1
        if text[pos : pos + 1] == "(":
            inner = expr()
        else:
            start = pos
            while pos < len(text) and text[pos] != ")":
                pos += 2 if text[pos] == "\\" else 1
            inner = _condition(text[start:pos])
        if pos >= len(text) or text[pos] != ")":
            raise CriteriaError(text)
        pos += 1
        return inner

    text = text.strip()
    if not text.startswith("("):
        text = f"({text})"
    result = expr()
    if pos != len(text):
        raise CriteriaError(text)
    return result
