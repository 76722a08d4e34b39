"""Fuzzing the id and secret formats (gatepass_server.domain.keys) against a written model.

The model is CONTRACT.md §1 read literally: a prefix, 32 base62 characters, then the
6-character base62 CRC32 of everything before it; ids are ``mch_`` + 27 base62 and
``mt_`` + 32 lowercase hex. Any text goes in, lone surrogates and NUL included.
"""

from __future__ import annotations

import re
import zlib
from typing import Final

import pytest
from fuzz_support import ANY_TEXT, BUDGETS, mutations, run_property
from hypothesis import strategies as st

from gatepass_server.domain.keys import (
    BASE62,
    SecretKind,
    digest,
    generate_secret,
    is_machine_id,
    is_token_id,
    is_well_formed,
    kind_of,
    new_machine_id,
    new_token_id,
)

_PREFIXES: Final = {
    SecretKind.INSTANCE_TEST: "sk_test_",
    SecretKind.INSTANCE_LIVE: "sk_live_",
    SecretKind.MACHINE: "ak_",
    SecretKind.TOKEN: "mt_",
}


def _model_checksum(head: str) -> str:
    number = zlib.crc32(head.encode("ascii"))
    out = ""
    for _ in range(6):
        number, rest = divmod(number, 62)
        out = BASE62[rest] + out
    return out


def model_well_formed(text: str, kind: SecretKind) -> bool:
    """CONTRACT.md §1 for a secret of ``kind``."""
    prefix = _PREFIXES[kind]
    match = re.fullmatch(re.escape(prefix) + r"([0-9A-Za-z]{32})([0-9A-Za-z]{6})", text, re.ASCII)
    return match is not None and _model_checksum(prefix + match[1]) == match[2]


def model_kind(text: str) -> SecretKind | None:
    """The kind whose prefix ``text`` starts with."""
    return next((k for k, p in _PREFIXES.items() if text.startswith(p)), None)


def check_formats(text: str) -> None:
    """Every format check agrees with the model and raises nothing, whatever the text."""
    assert kind_of(text) == model_kind(text)
    for kind in SecretKind:
        assert is_well_formed(text, kind) == model_well_formed(text, kind), (text, kind)
    assert is_token_id(text) == (re.fullmatch(r"mt_[0-9a-f]{32}", text, re.ASCII) is not None)
    assert is_machine_id(text) == (re.fullmatch(r"mch_[0-9A-Za-z]{27}", text, re.ASCII) is not None)
    if text.isascii():
        assert len(digest(text)) == 32


_GENERATED: Final = st.one_of(
    st.builds(generate_secret, st.sampled_from(list(SecretKind))),
    st.builds(new_machine_id),
    st.builds(new_token_id),
)


@pytest.mark.parametrize("budget", BUDGETS)
def test_fuzz_key_formats_match_the_contract_model(budget: int) -> None:
    """Any text, generated keys and ids, and one-character changes of them: the model's answer."""
    strategy = st.one_of(
        ANY_TEXT,
        _GENERATED,
        _GENERATED.flatmap(lambda real: mutations(real, BASE62 + "abcdef_")),
    )
    run_property(strategy, check_formats, examples=500, budget=budget)


def check_round_trip(case: tuple[SecretKind, st.DataObject]) -> None:
    """A generated secret is recognised as its kind only; every single change is refused."""
    kind, data = case
    secret = generate_secret(kind)
    assert kind_of(secret) is kind
    assert [k for k in SecretKind if is_well_formed(secret, k)] == [kind]
    mutated = data.draw(mutations(secret, BASE62))
    # NOTE: SECURITY.md principle 7: one changed character is a different, invalid key.
    assert not any(is_well_formed(mutated, k) for k in SecretKind), (secret, mutated)
    if mutated.isascii():
        assert digest(secret) != digest(mutated)


@pytest.mark.parametrize("budget", BUDGETS)
def test_fuzz_generated_secret_round_trips_and_no_mutation_passes(budget: int) -> None:
    """Round trip of every kind, and a drawn mutation of each is rejected without a lookup."""
    strategy = st.tuples(st.sampled_from(list(SecretKind)), st.data())
    run_property(strategy, check_round_trip, examples=250, budget=budget)
