"""Coverage-guided fuzzing of JSON bodies and ``Form`` validation (web.inputs) with atheris.

Input: a request body, sent as ``application/json`` in two chunks (split at the first
byte's value). ``read_json_object`` must answer an object or a body error
(test_fuzz_server_inputs.py ``check_read``); an object then goes through every ``Form``
reader (``check_form``). Run by test_fuzz_atheris.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import atheris

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]

# Comparison feedback from str.startswith/endswith, which guard the formats. (The RegEx
# hook is left off: atheris 3.0.0 fails on the bytes patterns some dependencies compile.)
atheris.enabled_hooks.add("str")

with atheris.instrument_imports(include=["gatepass_server"]):
    from gatepass_server.web.inputs import read_json_object

from test_fuzz_server_inputs import LIMIT, body_request, check_form, check_read, run_sync  # noqa: E402 - imported after the instrumented modules

_JSON = [(b"content-type", b"application/json")]


def seeds() -> list[bytes]:
    """Bodies the SDKs send, with the hazards of SECURITY.md principle 5 beside them."""
    bodies: list[object] = [
        {"name": "Email Server", "ttl": 3600, "items": ["mch_" + "a" * 27]},
        {"seconds": 60.5, "format": "jwt", "claims": {"team": "billing", "n": [1, 2.5]}},
        {"raw": "x", "ttl": 3600.0, "name": " "},
        [],
        None,
    ]
    found = [json.dumps(body).encode() for body in bodies]
    found += [
        b'{"ttl": 1e400}',
        b'{"name": "\\ud800"}',
        b"[" * 3000,
        b'{"ttl": 1' + b"0" * 30 + b"}",
    ]
    return found


def test_one_input(data: bytes) -> None:
    """One input: the body is read, and an object's fields are all read."""
    cut = data[0] % (len(data) + 1) if data else 0
    chunks = [data[:cut], data[cut:]]
    check_read((data, _JSON, chunks))
    try:
        value = run_sync(read_json_object(body_request(chunks, _JSON), LIMIT))
    except Exception:  # noqa: BLE001 - check_read has judged the exception already
        return
    check_form(value)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
