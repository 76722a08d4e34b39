"""Property tests for ids and secret formats (CONTRACT.md §1, SECURITY.md principle 7)."""

from __future__ import annotations

import math
import re
import zlib
from collections import Counter

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gatepass_server.domain.keys import (
    BASE62,
    SecretKind,
    base62_encode,
    checksum,
    digest,
    generate_secret,
    is_machine_id,
    is_well_formed,
    kind_of,
    new_instance_id,
    new_machine_id,
    new_token_id,
)

# NOTE: Hypothesis' per-example deadline is a wall-clock threshold; the suite has none.
PROPERTY = settings(deadline=None, max_examples=100)

KINDS = st.sampled_from(list(SecretKind))
# Freshly generated secrets, and secrets built by the rule from shrinkable bodies.
SECRETS = st.one_of(
    KINDS.map(lambda kind: (kind, generate_secret(kind))),
    st.tuples(KINDS, st.text(st.sampled_from(BASE62), min_size=32, max_size=32)).map(
        lambda pair: (pair[0], pair[0].value + pair[1] + checksum(pair[0].value + pair[1]))
    ),
)
# Any character at all, lone surrogates included (they cannot even be encoded as UTF-8).
ANY_CHAR = st.one_of(st.characters(), st.characters(categories=["Cs"]))
ANY_TEXT = st.text(ANY_CHAR, max_size=300)
BASE62_CHAR = st.sampled_from(BASE62)

ID_RE = re.compile(r"(?:ins|mch)_[0-9A-Za-z]{27}", re.ASCII)
TOKEN_ID_RE = re.compile(r"mt_[0-9a-f]{32}", re.ASCII)
MACHINE_ID_RE = re.compile(r"mch_[0-9A-Za-z]{27}", re.ASCII)


def base62_decode(text: str) -> int:
    """The inverse of ``base62_encode``, written independently for the round trip."""
    number = 0
    for char in text:
        number = number * 62 + BASE62.index(char)
    return number


# -- generated secrets ------------------------------------------------------------------


@PROPERTY
@given(SECRETS)
def test_generated_secret_is_well_formed_for_its_kind(pair: tuple[SecretKind, str]) -> None:
    """A fresh secret passes the format check for its own kind and names that kind."""
    kind, secret = pair
    assert is_well_formed(secret, kind)
    assert kind_of(secret) is kind
    assert secret.startswith(kind.value)


@PROPERTY
@given(SECRETS, KINDS)
def test_generated_secret_is_not_well_formed_for_other_kinds(
    pair: tuple[SecretKind, str], other: SecretKind
) -> None:
    """A secret of one kind never passes as another kind (``sk_test_`` is not ``sk_live_``)."""
    kind, secret = pair
    assume(other is not kind)
    assert not is_well_formed(secret, other)


@pytest.mark.parametrize("kind", list(SecretKind))
def test_generated_secret_shape(kind: SecretKind) -> None:
    """Prefix, 32 base62 characters of body (>= 160 bits) and a 6-character checksum."""
    secret = generate_secret(kind)
    rest = secret[len(kind.value) :]
    assert re.fullmatch(r"[0-9A-Za-z]{38}", rest, re.ASCII)
    assert (len(rest) - 6) * math.log2(62) >= 160
    assert secret[-6:] == checksum(secret[:-6])


@pytest.mark.parametrize("kind", list(SecretKind))
def test_generated_secrets_differ(kind: SecretKind) -> None:
    """Secrets come from a CSPRNG: a bounded batch holds no repeats."""
    batch = {generate_secret(kind) for _ in range(200)}
    assert len(batch) == 200


@PROPERTY
@given(SECRETS, st.data())
def test_any_single_character_change_is_rejected(
    pair: tuple[SecretKind, str], data: st.DataObject
) -> None:
    """Changing one character anywhere (prefix, body or checksum) breaks the format check."""
    kind, secret = pair
    position = data.draw(st.integers(0, len(secret) - 1), label="position")
    replacement = data.draw(st.one_of(BASE62_CHAR, ANY_CHAR), label="replacement")
    assume(replacement != secret[position])
    changed = secret[:position] + replacement + secret[position + 1 :]
    assert not is_well_formed(changed, kind)


@PROPERTY
@given(SECRETS, st.data())
def test_swapping_two_adjacent_body_characters_is_rejected(
    pair: tuple[SecretKind, str], data: st.DataObject
) -> None:
    """A transposition typo in the body or checksum is caught without a lookup."""
    kind, secret = pair
    start = len(kind.value)
    position = data.draw(st.integers(start, len(secret) - 2), label="position")
    assume(secret[position] != secret[position + 1])
    swapped = secret[:position] + secret[position + 1] + secret[position] + secret[position + 2 :]
    assert not is_well_formed(swapped, kind)


@PROPERTY
@given(SECRETS, st.data())
def test_truncation_is_rejected(pair: tuple[SecretKind, str], data: st.DataObject) -> None:
    """Any strict prefix or suffix of a secret fails the check (keys are never truncated)."""
    kind, secret = pair
    cut = data.draw(st.integers(0, len(secret) - 1), label="cut")
    assert not is_well_formed(secret[:cut], kind)
    assert not is_well_formed(secret[len(secret) - cut :], kind)


@PROPERTY
@given(SECRETS, st.text(ANY_CHAR, min_size=1, max_size=200), st.booleans())
def test_extension_is_rejected(pair: tuple[SecretKind, str], extra: str, at_end: bool) -> None:
    """Anything appended or prepended to a secret fails the check."""
    kind, secret = pair
    extended = secret + extra if at_end else extra + secret
    assert not is_well_formed(extended, kind)


@pytest.mark.parametrize("kind", list(SecretKind))
def test_trailing_newline_is_rejected(kind: SecretKind) -> None:
    """A secret pasted with a newline is not the secret (``$`` in a regex would allow it)."""
    assert not is_well_formed(generate_secret(kind) + "\n", kind)


@PROPERTY
@given(KINDS, st.text(BASE62_CHAR, min_size=32, max_size=32))
def test_strings_built_with_the_rule_are_well_formed(kind: SecretKind, body: str) -> None:
    """The check accepts exactly prefix + 32 base62 + checksum, whoever built the string."""
    head = kind.value + body
    assert is_well_formed(head + checksum(head), kind)


@PROPERTY
@given(KINDS, st.text(BASE62_CHAR, min_size=38, max_size=38))
def test_random_base62_strings_are_rejected(kind: SecretKind, rest: str) -> None:
    """A made-up body with a checksum that does not match is refused."""
    head, check = kind.value + rest[:32], rest[32:]
    assume(checksum(head) != check)
    assert not is_well_formed(head + check, kind)


@PROPERTY
@given(ANY_TEXT, KINDS)
def test_arbitrary_text_never_raises(text: str, kind: SecretKind) -> None:
    """Non-ASCII, surrogates, NUL: the format check answers ``False``, never raises."""
    assert is_well_formed(text, kind) in {True, False}
    assert kind_of(text) in {None, *SecretKind}


@PROPERTY
@given(KINDS, st.text(ANY_CHAR, min_size=38, max_size=38))
def test_non_ascii_bodies_are_rejected(kind: SecretKind, rest: str) -> None:
    """A body of the right length with non-base62 characters never passes."""
    assume(not re.fullmatch(r"[0-9A-Za-z]+", rest, re.ASCII))
    assert not is_well_formed(kind.value + rest, kind)


@pytest.mark.parametrize("kind", list(SecretKind))
@pytest.mark.parametrize("size", [129, 10_000, 1_000_000])
def test_huge_inputs_are_rejected(kind: SecretKind, size: int) -> None:
    """Oversized strings, even ones that start like a secret, are refused without raising."""
    secret = generate_secret(kind)
    assert not is_well_formed(secret + "A" * (size - len(secret)), kind)
    assert not is_well_formed("é" * size, kind)


def test_unicode_digits_are_not_base62() -> None:
    """Digits and letters outside ASCII (``str.isalnum`` accepts them) are not base62."""
    secret = generate_secret(SecretKind.MACHINE)
    for lookalike in ("\u0663", "\U0001d7d8", "\uff21", "\u00df"):
        changed = secret[:5] + lookalike + secret[6:]
        assert not is_well_formed(changed, SecretKind.MACHINE)


# -- kind_of ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("sk_test_x", SecretKind.INSTANCE_TEST),
        ("sk_live_x", SecretKind.INSTANCE_LIVE),
        ("ak_x", SecretKind.MACHINE),
        ("mt_x", SecretKind.TOKEN),
        ("sk_x", None),
        ("SK_TEST_x", None),
        ("oat_x", None),
        ("", None),
    ],
)
def test_kind_of_reads_only_the_prefix(text: str, kind: SecretKind | None) -> None:
    """The claimed kind comes from the exact, case-sensitive prefix."""
    assert kind_of(text) is kind


def test_instance_key_kinds() -> None:
    """Only the two ``sk_`` kinds are instance keys."""
    assert {k for k in SecretKind if k.is_instance_key} == {
        SecretKind.INSTANCE_TEST,
        SecretKind.INSTANCE_LIVE,
    }


# -- base62 and the checksum ------------------------------------------------------------


@PROPERTY
@given(st.integers(1, 12).flatmap(lambda w: st.tuples(st.integers(0, 62**w - 1), st.just(w))))
def test_base62_round_trips(case: tuple[int, int]) -> None:
    """Encoding at a width that fits gives that many base62 characters that decode back."""
    number, width = case
    encoded = base62_encode(number, width)
    assert len(encoded) == width
    assert set(encoded) <= set(BASE62)
    assert base62_decode(encoded) == number


@PROPERTY
@given(
    st.integers(1, 12).flatmap(lambda w: st.tuples(st.integers(62**w, 62 ** (w + 2)), st.just(w)))
)
def test_base62_rejects_overflow(case: tuple[int, int]) -> None:
    """A number that does not fit the width is an error, not silently truncated."""
    number, width = case
    with pytest.raises(ValueError, match="width"):
        base62_encode(number, width)


@PROPERTY
@given(st.integers(max_value=-1), st.integers(1, 12))
def test_base62_rejects_negative_numbers(number: int, width: int) -> None:
    """Negative numbers have no base62 form."""
    with pytest.raises(ValueError, match="non-negative"):
        base62_encode(number, width)


def test_base62_edges() -> None:
    """Zero pads with the first digit; the largest value at a width is all last digits."""
    assert base62_encode(0, 6) == "000000"
    assert base62_encode(62**6 - 1, 6) == "zzzzzz"
    assert base62_encode(61, 1) == "z"
    assert 62**6 > 2**32  # six characters hold every CRC32


@PROPERTY
@given(st.text(st.characters(max_codepoint=127), max_size=200))
def test_checksum_is_six_base62_characters_of_the_crc32(text: str) -> None:
    """The checksum is the CRC32 of the text, as exactly 6 base62 characters."""
    check = checksum(text)
    assert len(check) == 6
    assert set(check) <= set(BASE62)
    assert base62_decode(check) == zlib.crc32(text.encode("ascii"))


# -- ids --------------------------------------------------------------------------------


def test_instance_and_machine_ids_have_the_contract_shape() -> None:
    """``ins_`` and ``mch_`` + 27 base62 (a bounded batch, all distinct)."""
    instance_ids = {new_instance_id() for _ in range(200)}
    machine_ids = {new_machine_id() for _ in range(200)}
    assert len(instance_ids) == len(machine_ids) == 200
    for value in instance_ids:
        assert value.startswith("ins_")
        assert ID_RE.fullmatch(value)
    for value in machine_ids:
        assert value.startswith("mch_")
        assert ID_RE.fullmatch(value)


def test_token_ids_are_mt_and_32_lowercase_hex() -> None:
    """Token ids are ``mt_`` + 32 lowercase hex, never a well-formed ``mt_`` secret."""
    token_ids = {new_token_id() for _ in range(200)}
    assert len(token_ids) == 200
    for value in token_ids:
        assert TOKEN_ID_RE.fullmatch(value)
        assert not is_well_formed(value, SecretKind.TOKEN)


def test_new_machine_ids_are_machine_ids() -> None:
    """Generated machine ids pass ``is_machine_id``; instance and token ids do not."""
    assert is_machine_id(new_machine_id())
    assert not is_machine_id(new_instance_id())
    assert not is_machine_id(new_token_id())
    assert not is_machine_id(generate_secret(SecretKind.MACHINE))


@PROPERTY
@given(ANY_TEXT)
def test_is_machine_id_matches_the_contract_pattern(text: str) -> None:
    """``is_machine_id`` is exactly ``mch_`` + 27 ASCII base62, for any text; never raises."""
    assert is_machine_id(text) == bool(MACHINE_ID_RE.fullmatch(text))


@PROPERTY
@given(st.text(BASE62_CHAR, min_size=27, max_size=27), st.data())
def test_is_machine_id_rejects_near_misses(body: str, data: st.DataObject) -> None:
    """A valid id with a wrong length, prefix or alphabet is not a machine id."""
    valid = "mch_" + body
    assert is_machine_id(valid)
    assert not is_machine_id(valid[:-1])
    assert not is_machine_id(valid + data.draw(BASE62_CHAR))
    assert not is_machine_id(valid + "\n")
    assert not is_machine_id("MCH_" + body)
    assert not is_machine_id("ins_" + body)
    position = data.draw(st.integers(4, 30), label="position")
    odd = data.draw(ANY_CHAR.filter(lambda c: c not in BASE62), label="odd")
    assert not is_machine_id(valid[:position] + odd + valid[position + 1 :])


# -- digests ----------------------------------------------------------------------------


@PROPERTY
@given(SECRETS)
def test_digest_is_stable_sha256(pair: tuple[SecretKind, str]) -> None:
    """The lookup digest is 32 bytes and the same for the same secret every time."""
    _, secret = pair
    first = digest(secret)
    assert len(first) == 32
    assert digest(secret) == first


def test_digest_known_answer() -> None:
    """The digest is plain SHA-256 of the UTF-8 text: stored rows stay valid across releases."""
    assert digest("abc").hex() == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


@PROPERTY
@given(SECRETS, st.data())
def test_digest_changes_with_any_character(
    pair: tuple[SecretKind, str], data: st.DataObject
) -> None:
    """One changed character is a different key: its digest differs (no truncation)."""
    _, secret = pair
    position = data.draw(st.integers(0, len(secret) - 1), label="position")
    replacement = data.draw(BASE62_CHAR.filter(lambda c: c != secret[position]))
    changed = secret[:position] + replacement + secret[position + 1 :]
    assert digest(changed) != digest(secret)


@PROPERTY
@given(st.text(max_size=500))
def test_digest_accepts_any_encodable_text(text: str) -> None:
    """Non-ASCII text digests without raising."""
    assert len(digest(text)) == 32


def test_secret_characters_are_uniform_over_base62() -> None:
    """Each of the 62 characters is drawn equally often: no modulo bias.

    With 640,000 draws each count is 10,323 ± 101 (one standard deviation); a plain
    ``byte % 62`` would draw the first eight characters 25% more often.
    """
    counts = Counter("".join(generate_secret(SecretKind.TOKEN)[3:35] for _ in range(20_000)))
    assert set(counts) == set(BASE62)
    assert all(abs(n - 10_323) < 1_000 for n in counts.values()), counts
