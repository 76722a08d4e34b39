"""Rules for text that is stored: what every database can hold unchanged."""

from __future__ import annotations

__all__ = ["text_problem"]


def text_problem(value: str) -> str | None:
    """Say why ``value`` cannot be stored, or return ``None`` if it can.

    NUL is refused by PostgreSQL; lone surrogates cannot be encoded as UTF-8 at all.
    """
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode (no lone surrogates)"
    return None
