"""Coverage-guided fuzzing of the key, token and id formats (domain.keys) with atheris.

Input: any bytes, read as UTF-8 (lone surrogates kept) or else latin-1, so the checks
see every kind of text. Each string goes through the model comparison of
test_fuzz_server_keys.py. Run by test_fuzz_atheris.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]

# Comparison feedback from str.startswith/endswith, which guard the formats. (The RegEx
# hook is left off: atheris 3.0.0 fails on the bytes patterns some dependencies compile.)
atheris.enabled_hooks.add("str")

with atheris.instrument_imports(include=["gatepass_server"]):
    from gatepass_server.domain.keys import (
        SecretKind,
        generate_secret,
        new_instance_id,
        new_machine_id,
        new_token_id,
    )

from test_fuzz_server_keys import check_formats  # noqa: E402 - imported after the instrumented modules


def seeds() -> list[bytes]:
    """Freshly generated secrets of every kind, ids, and a near miss of each."""
    real = [generate_secret(kind) for kind in SecretKind]
    real += [new_instance_id(), new_machine_id(), new_token_id()]
    found = [text.encode() for text in real]
    found += [text[:-1].encode() + b"0" for text in real]
    return found


def test_one_input(data: bytes) -> None:
    """One input: every format check against the model."""
    try:
        text = data.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    check_formats(text)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
