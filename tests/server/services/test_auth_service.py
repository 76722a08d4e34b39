"""Key authentication (services.auth) on real SQLite and PostgreSQL: input it must survive."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from gatepass_server.domain.keys import MAX_SECRET_LENGTH

if TYPE_CHECKING:
    from gatepass_server.runtime import Runtime


@pytest.mark.parametrize(
    "candidate",
    [
        pytest.param("sk\ud8d6test_4v7XpVqcNiCbWO5h9N4o5Z6Cn5Mqsq4W4NY4Kv", id="lone-surrogate"),
        pytest.param("ak_\udcff", id="surrogate-escaped-byte"),
        pytest.param("sk_test_é", id="non-ascii"),
        pytest.param("sk_test_" + "a" * MAX_SECRET_LENGTH, id="overlong"),
    ],
)
async def test_authenticate_refuses_text_no_key_can_be_without_raising(
    runtime: Runtime, sk: str, candidate: str
) -> None:
    """Fuzz finding: a lone surrogate raised UnicodeEncodeError in the digest, not "no key".

    The CLI and ``GATEPASS_BOOTSTRAP_SECRET_KEY`` hand strings here that never went
    through the header parser's ASCII check.
    """
    assert await runtime.authenticator.authenticate(sk) is not None
    assert await runtime.authenticator.authenticate(candidate) is None
