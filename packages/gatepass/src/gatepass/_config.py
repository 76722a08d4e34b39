"""Where the SDK's keys and URL come from: arguments, then ``GATEPASS_*``, then ``CLERK_*``.

Code written for Clerk's SDKs keeps its ``CLERK_SECRET_KEY`` and ``CLERK_MACHINE_SECRET_KEY``
and points ``CLERK_API_URL`` (or ``GATEPASS_API_URL``) at Gatepass.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from gatepass._exceptions import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["DEFAULT_API_URL", "Config"]

DEFAULT_API_URL: Final = "http://127.0.0.1:8080"
_INSTANCE_PREFIXES: Final = ("sk_live_", "sk_test_")
_MACHINE_PREFIX: Final = "ak_"


@dataclass(frozen=True, slots=True)
class Config:
    """The resolved keys and base URL of one client."""

    secret_key: str | None = field(repr=False)
    machine_secret_key: str | None = field(repr=False)
    api_url: str

    @classmethod
    def resolve(
        cls,
        *,
        secret_key: str | None,
        machine_secret_key: str | None,
        api_url: str | None,
        environ: Mapping[str, str] | None = None,
    ) -> Config:
        """Fill what the arguments leave out from the environment, and check the shapes."""
        env = os.environ if environ is None else environ
        secret = secret_key or _first(env, "GATEPASS_SECRET_KEY", "CLERK_SECRET_KEY")
        machine = machine_secret_key or _first(
            env, "GATEPASS_MACHINE_SECRET_KEY", "CLERK_MACHINE_SECRET_KEY"
        )
        url = api_url or _first(env, "GATEPASS_API_URL", "CLERK_API_URL") or DEFAULT_API_URL
        # NOTE: a key of the wrong kind in the wrong slot would be sent where it fails in
        # confusing ways (an sk_ minting tokens is a 401); say so at construction instead.
        if secret is not None and not secret.startswith(_INSTANCE_PREFIXES):
            raise ConfigurationError(
                "secret_key must be an instance secret key (sk_live_…/sk_test_…)"
            )
        if machine is not None and not machine.startswith(_MACHINE_PREFIX):
            raise ConfigurationError("machine_secret_key must be a machine secret key (ak_…)")
        return cls(secret_key=secret, machine_secret_key=machine, api_url=_base_url(url))


def _first(env: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        if value := env.get(name, "").strip():
            return value
    return None


def _base_url(url: str) -> str:
    """The server's root, without ``/v1``: Clerk's Python style URLs end in it, JS ones do not."""
    if not url.startswith(("http://", "https://")):
        raise ConfigurationError("api_url must be an http:// or https:// URL")
    root = url.rstrip("/")
    return root.removesuffix("/v1")
