"""Machines, their scopes and the rules on them (CONTRACT.md §3, §4)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final

__all__ = [
    "DEFAULT_LIST_LIMIT",
    "DEFAULT_TOKEN_TTL",
    "MAX_LIST_LIMIT",
    "MAX_NAME_LENGTH",
    "MAX_PREVIOUS_TOKEN_TTL",
    "MAX_SCOPED_MACHINES",
    "MAX_TOKEN_TTL",
    "MIN_TOKEN_TTL",
    "Machine",
    "MachineListQuery",
    "MachineScope",
    "MachineSummary",
    "OrderBy",
    "OrderField",
    "parse_order_by",
]

MAX_NAME_LENGTH: Final = 255
MIN_TOKEN_TTL: Final = 1
MAX_TOKEN_TTL: Final = 315_360_000  # ten years, in seconds
DEFAULT_TOKEN_TTL: Final = 3600
MAX_SCOPED_MACHINES: Final = 150
MAX_PREVIOUS_TOKEN_TTL: Final = 28_800  # eight hours, in seconds
DEFAULT_LIST_LIMIT: Final = 10
MAX_LIST_LIMIT: Final = 500


@dataclass(frozen=True, slots=True)
class MachineSummary:
    """A machine as it appears inside another machine's ``scoped_machines``."""

    id: str
    instance_id: str
    name: str
    default_token_ttl: int
    created_at: int
    updated_at: int


@dataclass(frozen=True, slots=True)
class Machine(MachineSummary):
    """A service identity inside one instance, with the machines it may call."""

    scoped_machines: tuple[MachineSummary, ...] = ()


@dataclass(frozen=True, slots=True)
class MachineScope:
    """``from_machine_id`` may call ``to_machine_id``."""

    from_machine_id: str
    to_machine_id: str
    created_at: int


class OrderField(Enum):
    """The columns a machine list may be ordered by (an allowlist)."""

    NAME = "name"
    CREATED_AT = "created_at"


@dataclass(frozen=True, slots=True)
class OrderBy:
    """A list order: one allowed field and a direction."""

    field: OrderField
    descending: bool


DEFAULT_ORDER: Final = OrderBy(OrderField.CREATED_AT, descending=True)


def parse_order_by(text: str) -> OrderBy | None:
    """Parse ``name``, ``+name``, ``-created_at``…; ``None`` for anything else."""
    descending = text.startswith("-")
    bare = text[1:] if text[:1] in {"+", "-"} else text
    try:
        return OrderBy(OrderField(bare), descending=descending)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class MachineListQuery:
    """Paging, filtering and ordering of ``GET /machines``."""

    limit: int = DEFAULT_LIST_LIMIT
    offset: int = 0
    query: str | None = None
    order_by: OrderBy = DEFAULT_ORDER
