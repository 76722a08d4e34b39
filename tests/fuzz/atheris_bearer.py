"""Coverage-guided fuzzing of both Authorization parsers (server and SDK) with atheris.

Input: header values separated by newlines (no value holds one once an HTTP server has
parsed it). Each value set goes to the server's ``bearer_secret`` and, in every request
shape, to the SDK's ``bearer_token``; both are compared with their grammar models
(the checks of test_fuzz_server_auth.py and test_fuzz_sdk_requests.py). Run by
test_fuzz_atheris.py; by hand: ``python tests/fuzz/atheris_bearer.py -runs=10000 DIR``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]

# Comparison feedback from str.startswith/endswith, which guard the formats. (The RegEx
# hook is left off: atheris 3.0.0 fails on the bytes patterns some dependencies compile.)
atheris.enabled_hooks.add("str")

with atheris.instrument_imports(include=["gatepass", "gatepass_server"]):
    import gatepass._requests  # noqa: F401 - instrumented before the checks import it
    import gatepass_server.web.auth  # noqa: F401 - instrumented before the checks import it

from test_fuzz_sdk_requests import SHAPES, check_shape  # noqa: E402 - imported after the instrumented modules
from test_fuzz_server_auth import check_against_model  # noqa: E402 - imported after the instrumented modules

from gatepass_server.domain.keys import SecretKind, generate_secret  # noqa: E402 - imported after the instrumented modules


def seeds() -> list[bytes]:
    """Real keys and tokens in well-formed, duplicated and near-miss headers."""
    keys = [generate_secret(kind).encode() for kind in SecretKind]
    found = [b"Bearer " + key for key in keys]
    found += [b"bearer  " + keys[0], b"Bearer " + keys[1] + b"\nBearer " + keys[2]]
    found += [b"Basic dXNlcjpwYXNz", b"Bearer", b"Bearer a,b", b"\tBearer  x= ", b""]
    return found


def test_one_input(data: bytes) -> None:
    """One input: server and SDK parsers against their models."""
    values = data.split(b"\n") if data else []
    check_against_model([(b"authorization", value) for value in values])
    texts = [value.decode("latin-1") for value in values]
    for shape in sorted(SHAPES):
        check_shape((shape, texts))


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
