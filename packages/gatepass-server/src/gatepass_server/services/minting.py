"""Minting secrets for storage: the plaintext once, the digest and sealed copy to keep."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gatepass_server.domain.keys import SecretKind, digest, generate_secret
from gatepass_server.services.interfaces import NewSecret

if TYPE_CHECKING:
    from gatepass_server.domain.sealing import Sealer

__all__ = ["hint_of", "mint_secret"]


def hint_of(secret: str) -> str:
    """A recognisable, non-secret fragment: prefix and the last four characters."""
    kind_prefix = secret[: secret.index("_", 3) + 1] if secret.startswith("sk_") else secret[:3]
    return f"{kind_prefix}…{secret[-4:]}"


def mint_secret(
    kind: SecretKind,
    *,
    sealer: Sealer | None = None,
    context: str = "",
) -> tuple[str, NewSecret]:
    """Generate a secret; seal a copy under the master key when ``sealer`` is given."""
    plaintext = generate_secret(kind)
    sealed = sealer.seal(plaintext, context) if sealer is not None else b""
    return plaintext, NewSecret(digest=digest(plaintext), sealed=sealed, hint=hint_of(plaintext))
