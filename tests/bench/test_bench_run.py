"""A whole benchmark run, tiny: every DESIGN.md row is measured and reported, none errs.

The numbers of so short a run mean nothing; what is checked is that each row ran against
real servers, answered correctly (a load with wrong answers is a failed row), and landed in
the report. Needs PostgreSQL for its rows (skipped with a reason without it).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from bench.run import Plan, run

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.postgres

TINY = Plan(
    mode="smoke",
    run_s=0.4,
    warmup_s=0.0,
    verify_tokens=50,
    stored=(500, 1_000),
    probes=200,
    propagation_samples=3,
    sdk_propagation_samples=2,
    soak_s=0,
    soak_bad_tokens=0,
    micro_s=0.05,
)

ROWS = {
    "verify_sk_sqlite",
    "verify_ak_sqlite",
    "mint_opaque_sqlite",
    "mint_jwt_sqlite",
    "verify_sk_postgres",
    "verify_ak_postgres",
    "mint_opaque_postgres",
    "sdk_jwt_first_sight",
    "sdk_jwt_cached",
    "asgi_middleware",
    "tokens_stored_sqlite",
    "tokens_stored_postgres",
    "propagation_server_sqlite",
    "propagation_sdk_sqlite",
    "propagation_server_postgres",
    "propagation_sdk_postgres",
    "soak",
}


@pytest.mark.usefixtures("postgres_server_url")
def test_a_tiny_run_measures_and_reports_every_row(tmp_path: Path) -> None:
    rows = run(TINY, tmp_path)
    by_key = {row.key: row for row in rows}
    assert set(by_key) == ROWS, [(r.key, r.measured) for r in rows if r.key not in ROWS]
    for row in rows:
        assert "error" not in row.measured, (row.key, row.note)
        assert row.passed is not None or row.key == "soak"
        assert "non-2xx" not in row.note, (row.key, row.note)
    report = json.loads((tmp_path / "results.json").read_text())
    assert {r["key"] for r in report["rows"]} == ROWS
    markdown = (tmp_path / "results.md").read_text()
    assert "| what | target | measured | ratio | result |" in markdown
    assert (tmp_path / "latency.png").stat().st_size > 0
    assert (tmp_path / "tokens_stored.png").stat().st_size > 0
