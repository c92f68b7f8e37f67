"""A string that never shows itself in logs, reprs, tracebacks or task arguments."""

from __future__ import annotations


class Secret:
    """Wraps a secret value; ``str()`` and ``repr()`` are masked, ``reveal()`` returns it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself: call only where it goes on the wire."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('********')" if self._value else "Secret('')"

    def __str__(self) -> str:
        return "********" if self._value else ""

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret cannot be pickled or serialised")
