"""The atheris harnesses (tests/fuzz/atheris_*.py), run as subprocesses.

Each harness starts from a seed corpus of real generated keys, tokens and bodies,
written to ``tmp_path``. The default run is a smoke of a few thousand inputs each; the
``long`` run fuzzes each for a fixed time. A crash (any exception escaping the target,
or a failed model check) fails the test and names the reproducer libFuzzer wrote.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Final

import pytest

HERE: Final = Path(__file__).parent
HARNESSES: Final = ("bearer", "keys", "json_form", "sdk_jwt")
SMOKE_RUNS: Final = 3000
LONG_SECONDS: Final = 60


def _seed_corpus(name: str, directory: Path) -> int:
    """Write the harness's seeds into ``directory``; return how many."""
    module = importlib.import_module(f"atheris_{name}")
    directory.mkdir()
    seeds = module.seeds()
    for seed in seeds:
        (directory / hashlib.sha256(seed).hexdigest()[:16]).write_bytes(seed)
    return len(seeds)


def _fuzz(name: str, tmp_path: Path, limit: str, timeout: float) -> None:
    corpus = tmp_path / "corpus"
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    assert _seed_corpus(name, corpus) > 0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)])}
    result = subprocess.run(
        [
            sys.executable,
            str(HERE / f"atheris_{name}.py"),
            limit,
            "-max_len=4096",
            "-timeout=20",
            "-rss_limit_mb=2048",
            f"-artifact_prefix={artifacts}/",
            str(corpus),
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    crashes = sorted(str(p) for p in artifacts.iterdir())
    output = (result.stdout + result.stderr)[-6000:]
    assert result.returncode == 0, f"atheris_{name} failed; reproducers: {crashes}\n{output}"
    assert not crashes, f"atheris_{name} wrote reproducers: {crashes}\n{output}"
    assert "Done" in output, output


@pytest.mark.parametrize("name", HARNESSES)
def test_fuzz_atheris_smoke(name: str, tmp_path: Path) -> None:
    """A few thousand coverage-guided inputs per harness, from the seed corpus."""
    _fuzz(name, tmp_path, f"-runs={SMOKE_RUNS}", timeout=300)


@pytest.mark.long
@pytest.mark.parametrize("name", HARNESSES)
def test_fuzz_atheris_long(name: str, tmp_path: Path) -> None:
    """A minute of coverage-guided fuzzing per harness."""
    _fuzz(name, tmp_path, f"-max_total_time={LONG_SECONDS}", timeout=LONG_SECONDS + 240)
