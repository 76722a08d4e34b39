"""The SDK's public surface: one sorted ``__all__``, documented, typed (PEP 561), mypy-clean."""

from __future__ import annotations

import importlib.metadata
import inspect
import os
import subprocess
import sys
from pathlib import Path
from typing import Final

import pytest

import gatepass
import gatepass._http

ROOT: Final = Path(__file__).resolve().parents[2]
SDK_SOURCE: Final = ROOT / "packages" / "gatepass" / "src"

EXPECTED: Final = [
    "APIConnectionError",
    "APIError",
    "APIResponseError",
    "APITimeoutError",
    "AsyncGatepass",
    "AsyncM2MTokens",
    "AsyncMachines",
    "AsyncTokenProvider",
    "AuthReason",
    "AuthenticationError",
    "BadRequestError",
    "ConfigurationError",
    "ConflictError",
    "DeletedMachine",
    "DeletedMachineScope",
    "Gatepass",
    "GatepassError",
    "M2MToken",
    "M2MTokenAuth",
    "M2MTokenList",
    "M2MTokens",
    "Machine",
    "MachineList",
    "MachineScope",
    "MachineSecretKey",
    "Machines",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestState",
    "Revocation",
    "RevocationPage",
    "ScopedMachine",
    "ServerError",
    "ServiceUnavailableError",
    "TokenProvider",
    "TokenType",
    "TokenVerificationError",
    "VerificationOptions",
    "__version__",
]
"""The public names, written out: adding or removing one is a decision, made here too."""

PUBLIC: Final = [name for name in EXPECTED if name != "__version__"]


def test_all_is_exactly_the_expected_names() -> None:
    """``__all__`` lists what is public, no more and no less."""
    assert gatepass.__all__ == EXPECTED


def test_all_is_sorted_without_duplicates() -> None:
    """One sorted ``__all__`` (STYLE.md), so a diff shows each change on its own line."""
    assert gatepass.__all__ == sorted(gatepass.__all__)
    assert len(set(gatepass.__all__)) == len(gatepass.__all__)


def test_every_name_is_importable() -> None:
    """``from gatepass import *`` works and binds every listed name."""
    namespace: dict[str, object] = {}
    exec("from gatepass import *", namespace)  # noqa: S102 - the statement under test
    assert set(namespace) - {"__builtins__"} == set(gatepass.__all__)
    for name in gatepass.__all__:
        assert getattr(gatepass, name) is namespace[name]


def test_public_names_are_not_private_modules_leaking() -> None:
    """What is public lives in a private module and is re-exported, never the module itself."""
    for name in PUBLIC:
        obj = getattr(gatepass, name)
        assert not inspect.ismodule(obj), name
        assert obj.__module__.startswith("gatepass._"), (name, obj.__module__)


def _own_doc(obj: object) -> str | None:
    """The docstring written for ``obj``, not one a dataclass or a base made up."""
    doc = obj.__dict__.get("__doc__") if isinstance(obj, type) else obj.__doc__
    if not isinstance(doc, str) or not doc.strip():
        return None
    if isinstance(obj, type) and doc.startswith(f"{obj.__name__}("):
        return None  # the signature dataclasses put in when there is no docstring
    return doc


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_object_is_documented(name: str) -> None:
    """Each public class and its public methods and properties carry a docstring."""
    obj = getattr(gatepass, name)
    assert _own_doc(obj), name
    for attribute, member in vars(obj).items():
        if attribute.startswith("_") or not (
            inspect.isfunction(member) or isinstance(member, (property, classmethod))
        ):
            continue
        target = member.__func__ if isinstance(member, classmethod) else member
        assert _own_doc(target), f"{name}.{attribute}"


def test_version_is_the_distributions() -> None:
    """``__version__``, the installed metadata and the User-Agent agree."""
    assert gatepass.__version__ == importlib.metadata.version("gatepass")
    assert gatepass.__version__ == gatepass._http._VERSION


def test_py_typed_marker_ships() -> None:
    """PEP 561: the package says it is typed, in the source tree and where it is imported."""
    assert (SDK_SOURCE / "gatepass" / "py.typed").is_file()
    assert (Path(gatepass.__file__).parent / "py.typed").is_file()


def test_public_api_type_checks_under_mypy_strict() -> None:
    """``typing_check.py`` uses the API as a customer would; ``mypy --strict`` accepts it.

    Imports are followed silently, as for an installed package: the SDK's own strictness
    is ``make lint``'s job; this pins the types a customer sees.
    """
    target = Path(__file__).with_name("typing_check.py")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--cache-dir",
            os.devnull,
            "--follow-imports",
            "silent",
            str(target.relative_to(ROOT)),
        ],
        cwd=ROOT,
        env={**os.environ, "MYPYPATH": str(SDK_SOURCE)},
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("Success: no issues found in 1 source file"), result.stdout
