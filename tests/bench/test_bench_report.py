from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

import pytest

from bench.model import LoadResult, Row
from bench.report import CHARTS, format_number, format_table, write_report

if TYPE_CHECKING:
    from pathlib import Path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

META: dict[str, Any] = {
    "mode": "quick",
    "generator": "wrk",
    "connections": [1, 16, 64],
    "workers": 1,
    "pinning": {"server": "0", "load generator": "1"},
    "durations": {"warmup_s": 2, "run_s": 10},
}


def _rows() -> list[Row]:
    load = LoadResult("wrk", 64, 10.0, 241_000, 0, 0, {"p50": 1.0, "p99": 4.1})
    return [
        Row(
            "verify_sk_sqlite",
            "opaque verify (sk key), SQLite, 64 connections",
            "≥ 0.5 x hello-world req/s; p99 ≤ 10 ms",
            "24,100 req/s (0.52 x); p99 4.1 ms",
            ratio=0.52134,
            passed=True,
            details={"load": load},
        ),
        Row(
            "jwt_issuance",
            "JWT issuance",
            "≥ 0.8 x raw RS256 signing rate",
            "3,100 tokens/s (0.70 x)",
            ratio=0.7,
            passed=False,
            note="signing blocks the event loop:\n3,100 vs 4,430 raw",
            details={"rate": 3100.5, "nan": float("nan")},
        ),
        Row(
            "soak",
            "10-minute soak | bad tokens",
            "memory growth ≤ 5 %",
            "",
            note="quick mode: the soak runs in full mode only",
        ),
    ]


def _series() -> dict[str, Any]:
    seconds = list(range(0, 600, 10))
    return {
        "latency": {
            name: {
                connections: {"p50": 0.5 * k, "p90": k, "p99": 2.0 * k, "max": 5.0 * k, "rps": 1e4}
                for connections in (1, 16, 64)
            }
            for k, name in enumerate(["hello", "verify_sk", "verify_ak", "jwt_issue"], 1)
        },
        "tokens_stored": {
            "sqlite": {10_000: {"rps": 20_000, "p50": 1.0, "p99": 4.0}, 1_000_000: {"rps": 18_000}},
            "postgres": {"10000": {"rps": 15_000, "p50": 2.0, "p99": 6.0}},
        },
        "soak": {
            "t": seconds,
            "rss_bytes": [80e6 + 1e4 * t for t in seconds],
            "open_files": [30] * len(seconds),
            "tcp_connections": [64 + t % 3 for t in seconds],
        },
    }


def test_table_shows_results_ratios_and_escaped_cells() -> None:
    table = format_table(_rows()).splitlines()
    assert table[0] == "| what | target | measured | ratio | result |"
    assert table[2].endswith("| 24,100 req/s (0.52 x); p99 4.1 ms | 0.52 | pass |")
    assert table[3].endswith("| 0.70 | FAIL |")
    assert table[4] == "| 10-minute soak \\| bad tokens | memory growth ≤ 5 % | — | — | not run |"
    assert len(table) == 5


def test_format_number() -> None:
    assert format_number(24_100.4) == "24,100"
    assert format_number(1_234_567) == "1,234,567"
    assert format_number(12.34) == "12.3"
    assert format_number(0.5213) == "0.52"


def test_report_files(tmp_path: Path) -> None:
    paths = write_report(tmp_path / "out", rows=_rows(), series=_series(), meta=META)
    assert [path.name for path in paths.charts] == list(CHARTS)
    for chart in paths.charts:
        data = chart.read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        assert len(data) > 10_000

    markdown = paths.markdown.read_text(encoding="utf-8")
    assert "## How this was measured" in markdown
    assert "Mode **quick**" in markdown
    assert "server on core(s) 0 and load generator on core(s) 1" in markdown
    assert "wrk, closed loop at 1, 16 and 64 connections" in markdown
    assert "Durations: warmup 2 s, run 10 s." in markdown
    assert format_table(_rows()) in markdown
    assert "- **jwt_issuance**: signing blocks the event loop: 3,100 vs 4,430 raw" in markdown
    assert "- **soak**: quick mode: the soak runs in full mode only" in markdown
    assert "**verify_sk_sqlite**" not in markdown
    for name in CHARTS:
        assert f"]({name})" in markdown
    assert "not produced" not in markdown


def test_json_round_trips(tmp_path: Path) -> None:
    rows = _rows()
    paths = write_report(tmp_path, rows=rows, series=_series(), meta=META)
    document = json.loads(paths.json.read_text(encoding="utf-8"))

    meta = document["meta"]
    assert {key: meta[key] for key in META} == META
    assert {"date", "git_commit", "git_dirty"} <= set(meta)
    assert {"cpu_model", "cores", "python"} <= set(meta["machine"])
    assert meta["machine"]["cores"] >= 1

    names = [field.name for field in dataclasses.fields(Row)]
    restored = [Row(**{name: row[name] for name in names}) for row in document["rows"]]
    assert [row.key for row in restored] == [row.key for row in rows]
    assert restored[1] == dataclasses.replace(rows[1], details={"rate": 3100.5, "nan": None})
    assert restored[2] == rows[2]
    assert restored[0].details["load"]["rps"] == 24_100
    assert [row["result"] for row in document["rows"]] == ["pass", "FAIL", "not run"]

    assert document["series"]["latency"]["hello"]["16"]["p99"] == 2.0
    assert document["series"]["soak"]["open_files"][0] == 30


def test_given_meta_wins_over_what_is_found(tmp_path: Path) -> None:
    meta = {**META, "date": "2025-01-01", "machine": {"cpu_model": "Test CPU"}}
    paths = write_report(tmp_path, rows=[], series={}, meta=meta)
    document = json.loads(paths.json.read_text(encoding="utf-8"))
    assert document["meta"]["date"] == "2025-01-01"
    assert document["meta"]["machine"]["cpu_model"] == "Test CPU"
    assert "python" in document["meta"]["machine"]
    assert "Machine: Test CPU" in paths.markdown.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "series",
    [
        {},
        {"latency": {}, "tokens_stored": {}, "soak": {}},
        {"latency": {"hello": {}}, "tokens_stored": {"sqlite": {}}, "soak": {"t": []}},
    ],
)
def test_missing_series_skip_their_charts(tmp_path: Path, series: dict[str, Any]) -> None:
    paths = write_report(tmp_path, rows=_rows(), series=series, meta=META)
    assert paths.charts == ()
    assert not list(tmp_path.glob("*.png"))
    markdown = paths.markdown.read_text(encoding="utf-8")
    for name in CHARTS:
        assert f"`{name}` was not produced" in markdown


def test_one_missing_series_skips_only_its_chart(tmp_path: Path) -> None:
    write_report(tmp_path, rows=_rows(), series=_series(), meta=META)
    series = _series()
    del series["soak"]
    paths = write_report(tmp_path, rows=_rows(), series=series, meta=META)
    assert [path.name for path in paths.charts] == ["latency.png", "tokens_stored.png"]
    assert not (tmp_path / "soak_memory.png").exists()
    markdown = paths.markdown.read_text(encoding="utf-8")
    assert "`soak_memory.png` was not produced: no `soak` series in this run." in markdown
    assert "](latency.png)" in markdown


def test_zero_and_missing_values_draw_without_warnings(tmp_path: Path) -> None:
    series = {
        "latency": {"hello": {"1": {"p50": 0.0, "p99": 1.0}, "64": {"p50": 2.0}}},
        "soak": {"t": [0, 1, 2], "rss_bytes": [1e8, 1e8, 1e8]},
    }
    paths = write_report(tmp_path, rows=[], series=series, meta={})
    assert [path.name for path in paths.charts] == ["latency.png", "soak_memory.png"]
    assert "Mode **unknown**" in paths.markdown.read_text(encoding="utf-8")


def test_two_runs_differ_only_in_numbers() -> None:
    first = format_table(_rows())
    rows = _rows()
    rows[0].measured = "25,000 req/s (0.54 x); p99 4.0 ms"
    rows[0].ratio = 0.54
    second = format_table(rows)
    changed = [
        (a, b) for a, b in zip(first.splitlines(), second.splitlines(), strict=True) if a != b
    ]
    assert len(changed) == 1
