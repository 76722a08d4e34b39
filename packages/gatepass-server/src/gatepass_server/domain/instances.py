"""Instances (tenants) and their admin keys."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Instance", "InstanceKey"]


@dataclass(frozen=True, slots=True)
class Instance:
    """A tenant: every machine and token belongs to exactly one."""

    id: str
    name: str
    created_at: int


@dataclass(frozen=True, slots=True)
class InstanceKey:
    """An ``sk_`` key as stored: never the plaintext, only a hint for humans."""

    instance_id: str
    hint: str
    created_at: int
    expires_at: int | None
