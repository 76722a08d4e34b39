"""AES-256-GCM sealing of machine keys at rest and the master key's text form."""

from __future__ import annotations

import base64
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatepass_server.domain.keys import SecretKind, generate_secret, new_machine_id
from gatepass_server.domain.sealing import (
    MASTER_KEY_BYTES,
    Sealer,
    SealError,
    decode_master_key,
    encode_master_key,
)

PROPERTY = settings(deadline=None, max_examples=50)
RAW_KEY = bytes(range(32))


@pytest.fixture
def sealer() -> Sealer:
    """A sealer under a fixed master key."""
    return Sealer(RAW_KEY)


@PROPERTY
@given(st.text(max_size=300), st.text(max_size=60))
def test_seal_open_round_trip(plaintext: str, context: str) -> None:
    """Whatever is sealed under a context opens to the same text under that context."""
    sealer = Sealer(RAW_KEY)
    assert sealer.open(sealer.seal(plaintext, context), context) == plaintext


def test_sealed_value_hides_the_plaintext(sealer: Sealer) -> None:
    """The stored bytes do not contain the secret, and sealing twice gives different bytes."""
    secret = generate_secret(SecretKind.MACHINE)
    machine_id = new_machine_id()
    first = sealer.seal(secret, machine_id)
    second = sealer.seal(secret, machine_id)
    assert secret.encode() not in first
    assert first != second  # a fresh nonce each time
    assert sealer.open(first, machine_id) == sealer.open(second, machine_id) == secret


def test_wrong_context_does_not_open(sealer: Sealer) -> None:
    """A ciphertext copied onto another machine's row does not open there."""
    sealed = sealer.seal(generate_secret(SecretKind.MACHINE), new_machine_id())
    with pytest.raises(SealError):
        sealer.open(sealed, new_machine_id())
    with pytest.raises(SealError):
        sealer.open(sealed, "")


def test_wrong_master_key_does_not_open(sealer: Sealer) -> None:
    """A value sealed under one master key does not open under another."""
    machine_id = new_machine_id()
    sealed = sealer.seal("ak_secret", machine_id)
    with pytest.raises(SealError):
        Sealer(os.urandom(MASTER_KEY_BYTES)).open(sealed, machine_id)


@PROPERTY
@given(st.data())
def test_any_tampered_byte_does_not_open(data: st.DataObject) -> None:
    """Flipping bits of any byte (version, nonce, ciphertext or tag) makes the value refused."""
    sealer = Sealer(RAW_KEY)
    sealed = sealer.seal("ak_" + "x" * 38, "mch_context")
    position = data.draw(st.integers(0, len(sealed) - 1), label="position")
    flip = data.draw(st.integers(1, 255), label="flip")
    tampered = sealed[:position] + bytes([sealed[position] ^ flip]) + sealed[position + 1 :]
    with pytest.raises(SealError):
        sealer.open(tampered, "mch_context")


@pytest.mark.parametrize("length", [0, 1, 12, 13, 28])
def test_truncated_sealed_values_do_not_open(sealer: Sealer, length: int) -> None:
    """Short or cut-off stored values are a ``SealError``, not an index error."""
    sealed = sealer.seal("ak_secret", "ctx")
    with pytest.raises(SealError):
        sealer.open(sealed[:length], "ctx")


def test_extended_sealed_value_does_not_open(sealer: Sealer) -> None:
    """Bytes appended to a stored value break its tag."""
    sealed = sealer.seal("ak_secret", "ctx")
    with pytest.raises(SealError):
        sealer.open(sealed + b"\x00", "ctx")


@pytest.mark.parametrize("length", [0, 16, 31, 33, 64])
def test_sealer_refuses_master_keys_of_the_wrong_size(length: int) -> None:
    """Only a 32-byte master key (AES-256) is accepted."""
    with pytest.raises(ValueError, match="32 bytes"):
        Sealer(b"k" * length)


# -- the master key's text form ----------------------------------------------------------


@PROPERTY
@given(st.binary(min_size=32, max_size=32))
def test_master_key_text_round_trips(raw: bytes) -> None:
    """``encode_master_key`` output decodes to the same 32 bytes."""
    text = encode_master_key(raw)
    assert "=" not in text
    assert decode_master_key(text) == raw


@PROPERTY
@given(st.binary(min_size=32, max_size=32))
def test_master_key_accepts_standard_and_url_safe_base64(raw: bytes) -> None:
    """Standard base64 with padding, URL-safe without, and surrounding whitespace all work."""
    assert decode_master_key(base64.b64encode(raw).decode()) == raw
    assert decode_master_key(base64.urlsafe_b64encode(raw).decode()) == raw
    assert decode_master_key(f"  {encode_master_key(raw)}\n") == raw


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("not base64 at all!", id="prose"),
        pytest.param("!" * 43, id="symbols"),
        pytest.param(encode_master_key(RAW_KEY)[:-1], id="one-char-short"),
        pytest.param(encode_master_key(RAW_KEY) + "AAAA", id="too-long"),
        pytest.param(encode_master_key(bytes(16)), id="16-bytes"),
        pytest.param(encode_master_key(bytes(33)), id="33-bytes"),
        pytest.param(encode_master_key(bytes(64)), id="64-bytes"),
        pytest.param("é" * 43, id="non-ascii"),
        pytest.param("\ud800" * 43, id="lone-surrogates"),
        pytest.param("\x00" * 43, id="nul"),
    ],
)
def test_bad_master_key_encodings_are_rejected(text: str) -> None:
    """Anything that is not base64 of exactly 32 bytes is a ``ValueError``."""
    with pytest.raises(ValueError, match="master key"):
        decode_master_key(text)


@pytest.mark.parametrize("junk", ["!", ".", "*", " ", "\n", "'", '"', "é"])
def test_master_key_with_stray_characters_is_rejected(junk: str) -> None:
    """Characters outside the base64 alphabet are an error, not silently skipped."""
    text = encode_master_key(RAW_KEY)
    with pytest.raises(ValueError, match="master key"):
        decode_master_key(text[:20] + junk + text[20:])


@pytest.mark.parametrize("padding", ["=", "===", "====="])
def test_master_key_with_wrong_padding_is_rejected(padding: str) -> None:
    """Padding in the middle or beyond the end does not decode to a key."""
    text = encode_master_key(RAW_KEY)
    with pytest.raises(ValueError, match="master key"):
        decode_master_key(text[:20] + padding + text[20:])
