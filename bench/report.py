"""The report of one benchmark run: ``results.json``, ``results.md`` and PNG charts.

:func:`write_report` takes the rows (one per DESIGN.md target), the raw series the charts
are drawn from, and ``meta``, what the run was. The caller's ``meta`` keys read here:

- ``mode``: ``"quick"`` or ``"full"``;
- ``generator``: the load generator, e.g. ``"wrk"``;
- ``connections``: the concurrencies measured, e.g. ``[1, 16, 64]``;
- ``workers``: the server's worker count;
- ``pinning``: what ran on which cores, e.g. ``{"server": "0", "load generator": "1"}``;
- ``durations``: seconds by phase, e.g. ``{"warmup_s": 2, "run_s": 10, "soak_s": 600}``.

``date``, ``git_commit``, ``git_dirty`` and ``machine`` (CPU model, cores, Python,
platform) are filled in unless given. The series, each optional:

- ``latency``: ``{scenario: {connections: {"p50", "p90", "p99", "max", "rps"}}}`` (ms);
- ``tokens_stored``: ``{backend: {count: {"rps", "p50", "p99"}}}`` (ms);
- ``soak``: ``{"t": [s], "rss_bytes": [...], "open_files": [...], "tcp_connections": [...]}``.

The table holds no timestamp, so two runs' reports differ only where numbers do.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import math
import os
import platform
import shutil
import subprocess  # nosec B404  # runs git for the report header: fixed argv, no shell
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import StrMethodFormatter

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from matplotlib.axes import Axes

    from bench.model import Row

__all__ = [
    "CHARTS",
    "ReportPaths",
    "format_number",
    "format_table",
    "machine_meta",
    "result_of",
    "write_report",
]

_REPO: Final = Path(__file__).resolve().parents[1]
_PERCENTILES: Final = ("p50", "p90", "p99")
_MIB: Final = 1024 * 1024
_DPI: Final = 110
_GRID_COLUMNS: Final = 3
_GIT_TIMEOUT_S: Final = 10
_LARGE: Final = 100
_MEDIUM: Final = 10


@dataclass(frozen=True, slots=True)
class ReportPaths:
    """The files one report consists of; ``charts`` holds only the PNGs drawn."""

    json: Path
    markdown: Path
    charts: tuple[Path, ...]


def format_number(value: float) -> str:
    """A number for people: ``24,100``, ``12.3``, ``0.52``."""
    if not math.isfinite(value):
        return str(value)
    size = abs(value)
    if size >= _LARGE:
        return f"{value:,.0f}"
    if size >= _MEDIUM:
        return f"{value:.1f}"
    return f"{value:.2f}"


def result_of(row: Row) -> str:
    """``pass``, ``FAIL`` or ``not run``."""
    if row.passed is None:
        return "not run"
    return "pass" if row.passed else "FAIL"


def _cell(text: str) -> str:
    """Text safe inside one Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|") or "—"


def _ratio(row: Row) -> str:
    return "—" if row.ratio is None else f"{row.ratio:,.2f}"


def format_table(rows: Iterable[Row]) -> str:
    """The Markdown table ``| what | target | measured | ratio | result |`` of ``rows``."""
    lines = ["| what | target | measured | ratio | result |", "|---|---|---|---:|---|"]
    lines.extend(
        f"| {_cell(row.what)} | {_cell(row.target)} | {_cell(row.measured)} "
        f"| {_ratio(row)} | {result_of(row)} |"
        for row in rows
    )
    return "\n".join(lines)


# -- meta -------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or "unknown"
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in {"model name", "Model", "Hardware"} and value.strip():
            return value.strip()
    return platform.processor() or "unknown"


def _git(*args: str) -> str | None:
    git = shutil.which("git")  # a full path, not whatever a relative PATH entry holds
    if git is None:
        return None
    try:
        done = subprocess.run(  # nosec B603  # git by its full path, fixed argv, no shell
            [git, *args],
            cwd=_REPO,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def machine_meta() -> dict[str, Any]:
    """What ran this: date, commit, CPU model, cores, Python and platform."""
    status = _git("status", "--porcelain")
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "machine": {
            "cpu_model": _cpu_model(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "platform": platform.platform(),
        },
    }


def _full_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    found = machine_meta()
    machine = {**found["machine"], **meta.get("machine", {})}
    return {**found, **meta, "machine": machine}


# -- JSON -------------------------------------------------------------------------------


def _plain(value: Any) -> Any:  # noqa: PLR0911 - one case per kind of value
    """``value`` as JSON-ready data; a non-finite float becomes ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    to_json = getattr(value, "to_json", None)
    if callable(to_json):
        return _plain(to_json())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _fields(value)
    raise TypeError(f"cannot write a {type(value).__name__} to results.json")


def _fields(instance: Any) -> dict[str, Any]:
    """A dataclass instance's fields, each made plain (a nested ``to_json`` is honoured)."""
    return {
        field.name: _plain(getattr(instance, field.name)) for field in dataclasses.fields(instance)
    }


def _row_json(row: Row) -> dict[str, Any]:
    return {**_fields(row), "result": result_of(row)}


def _write_json(
    path: Path, meta: Mapping[str, Any], rows: list[Row], series: Mapping[str, Any]
) -> None:
    document = {
        "meta": _plain(meta),
        "rows": [_row_json(row) for row in rows],
        "series": _plain(series),
    }
    path.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8")


# -- charts -----------------------------------------------------------------------------


def _by_number(mapping: Mapping[Any, Any]) -> list[tuple[int, Any]]:
    """The items of a mapping keyed by numbers (or their strings), in numeric order."""
    return sorted((int(key), value) for key, value in mapping.items())


def _positive(value: Any) -> float:
    """A value for a log axis: non-positive or missing values become gaps."""
    number = float(value) if isinstance(value, int | float) else math.nan
    return number if number > 0 else math.nan


def _save(figure: Figure, path: Path) -> None:
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=_DPI, format="png")


def _latency_panel(axes: Axes, name: str, levels: Mapping[Any, Any]) -> None:
    points = _by_number(levels)
    positions = np.arange(len(points))
    width = 0.8 / len(_PERCENTILES)
    for index, percentile in enumerate(_PERCENTILES):
        heights = [_positive(stats.get(percentile)) for _, stats in points]
        axes.bar(positions + (index - 1) * width, heights, width, label=percentile)
    axes.set_xticks(positions, [str(connections) for connections, _ in points])
    axes.set_title(name, fontsize="medium")
    axes.set_xlabel("connections")
    axes.set_yscale("log")
    axes.grid(visible=True, axis="y", which="both", alpha=0.3)


def _latency_chart(data: Mapping[str, Any], path: Path) -> None:
    scenarios = [
        (name, levels) for name, levels in data.items() if isinstance(levels, dict) and levels
    ]
    columns = min(_GRID_COLUMNS, len(scenarios))
    rows = math.ceil(len(scenarios) / columns)
    figure = Figure(figsize=(4.2 * columns, 3.4 * rows), layout="constrained")
    grid = figure.subplots(rows, columns, sharey=True, squeeze=False)
    for axes, (name, levels) in zip(grid.flat, scenarios, strict=False):
        _latency_panel(axes, name, levels)
    for axes in grid.flat[len(scenarios) :]:
        axes.set_visible(False)
    for axes in grid[:, 0]:
        axes.set_ylabel("latency (ms)")
    grid.flat[0].legend(fontsize="small")
    figure.suptitle("Latency percentiles by concurrency")
    _save(figure, path)


def _tokens_stored_chart(data: Mapping[str, Any], path: Path) -> None:
    figure = Figure(figsize=(10, 4), layout="constrained")
    rate_axes, p99_axes = figure.subplots(1, 2)
    for backend, counts in data.items():
        if not isinstance(counts, dict) or not counts:
            continue
        points = _by_number(counts)
        stored = [count for count, _ in points]
        rate_axes.plot(stored, [_positive(p.get("rps")) for _, p in points], "o-", label=backend)
        p99_axes.plot(stored, [_positive(p.get("p99")) for _, p in points], "o-", label=backend)
    rate_axes.set_title("verify throughput")
    rate_axes.set_ylabel("requests/s")
    rate_axes.set_ylim(bottom=0)
    rate_axes.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    p99_axes.set_title("verify p99 latency")
    p99_axes.set_ylabel("p99 (ms)")
    p99_axes.set_ylim(bottom=0)
    for axes in (rate_axes, p99_axes):
        axes.set_xscale("log")
        axes.set_xlabel("tokens stored")
        axes.grid(visible=True, alpha=0.3)
        axes.legend(fontsize="small")
    figure.suptitle("Verification vs tokens stored")
    _save(figure, path)


def _memory_title(rss_mib: list[float]) -> str:
    if not rss_mib:
        return "server memory"
    first, last = rss_mib[0], rss_mib[-1]
    return f"server memory: {first:,.1f} MiB at start, {last:,.1f} MiB at end"


def _soak_chart(data: Mapping[str, Any], path: Path) -> None:
    seconds = [float(t) for t in data.get("t", [])]
    figure = Figure(figsize=(10, 6), layout="constrained")
    memory_axes, handles_axes = figure.subplots(2, 1, sharex=True)
    rss = [float(value) / _MIB for value in data.get("rss_bytes", [])]
    size = min(len(seconds), len(rss))
    memory_axes.plot(seconds[:size], rss[:size], color="tab:blue")
    memory_axes.set_ylabel("RSS (MiB)")
    memory_axes.set_title(_memory_title(rss[:size]))
    for key, label in (("open_files", "open files"), ("tcp_connections", "TCP connections")):
        values = [float(value) for value in data.get(key, [])]
        size = min(len(seconds), len(values))
        if size:
            handles_axes.plot(seconds[:size], values[:size], label=label)
    handles_axes.set_ylabel("count")
    handles_axes.set_xlabel("time (s)")
    handles_axes.set_title("open files and TCP connections")
    if handles_axes.get_legend_handles_labels()[0]:
        handles_axes.legend(fontsize="small")
    for axes in (memory_axes, handles_axes):
        axes.grid(visible=True, alpha=0.3)
    figure.suptitle("Soak")
    _save(figure, path)


def _has_levels(data: Mapping[str, Any]) -> bool:
    return any(isinstance(levels, dict) and levels for levels in data.values())


def _has_soak(data: Mapping[str, Any]) -> bool:
    return bool(data.get("t")) and bool(data.get("rss_bytes"))


@dataclass(frozen=True, slots=True)
class _Chart:
    series: str
    file: str
    title: str
    draw: Callable[[Mapping[str, Any], Path], None]
    present: Callable[[Mapping[str, Any]], bool]


_CHARTS: Final = (
    _Chart(
        "latency", "latency.png", "Latency percentiles by concurrency", _latency_chart, _has_levels
    ),
    _Chart(
        "tokens_stored",
        "tokens_stored.png",
        "Verify vs tokens stored",
        _tokens_stored_chart,
        _has_levels,
    ),
    _Chart("soak", "soak_memory.png", "Soak: memory, open files, TCP", _soak_chart, _has_soak),
)
CHARTS: Final = tuple(chart.file for chart in _CHARTS)
"""The PNG files a report may hold, in the order the Markdown lists them."""


def _draw_charts(out_dir: Path, series: Mapping[str, Any]) -> dict[str, Path | None]:
    """Each chart's file name and its path, or ``None`` when its series is missing or empty.

    A skipped chart's file left by an earlier run in ``out_dir`` is removed.
    """
    drawn: dict[str, Path | None] = {}
    for chart in _CHARTS:
        data = series.get(chart.series)
        path = out_dir / chart.file
        if not isinstance(data, dict) or not chart.present(data):
            path.unlink(missing_ok=True)
            drawn[chart.file] = None
            continue
        chart.draw(data, path)
        drawn[chart.file] = path
    return drawn


# -- Markdown ---------------------------------------------------------------------------


def _seconds(value: Any) -> str:
    return f"{value:g} s" if isinstance(value, int | float) else str(value)


def _phase(name: str) -> str:
    return name.removesuffix("_s").replace("_", " ")


def _and(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _how_measured(meta: Mapping[str, Any]) -> str:
    machine = meta.get("machine", {})
    commit = str(meta.get("git_commit") or "unknown")[:12]
    dirty = " (with uncommitted changes)" if meta.get("git_dirty") else ""
    when = meta.get("date", "an unknown date")
    cpu = machine.get("cpu_model", "unknown CPU")
    sentences = [
        f"Mode **{meta.get('mode', 'unknown')}**, run on {when} at commit `{commit}`{dirty}.",
        f"Machine: {cpu}, {machine.get('cores', '?')} cores, Python {machine.get('python', '?')}.",
    ]
    pinning = meta.get("pinning")
    if isinstance(pinning, dict) and pinning:
        placed = [f"{what} on core(s) {cores}" for what, cores in pinning.items()]
        sentences.append(f"Pinned: {_and(placed)}.")
    load = f"Load generator: {meta.get('generator', 'unknown')}"
    connections = meta.get("connections")
    if isinstance(connections, list | tuple) and connections:
        load += f", closed loop at {_and([str(c) for c in connections])} connections"
    if meta.get("workers") is not None:
        load += f", against {meta['workers']} server worker(s)"
    sentences.append(load + ".")
    durations = meta.get("durations")
    if isinstance(durations, dict) and durations:
        phases = [f"{_phase(name)} {_seconds(value)}" for name, value in durations.items()]
        sentences.append(f"Durations: {', '.join(phases)}.")
    sentences.append(
        "Ratios compare with a hello-world app on the same server stack, worker count and "
        "load generator in the same run; micro-benchmarks ran in a process pinned to one core."
    )
    return " ".join(sentences)


def _notes(rows: list[Row]) -> list[str]:
    noted = [row for row in rows if row.note.strip()]
    if not noted:
        return []
    return [
        "",
        "### Notes",
        "",
        *(f"- **{row.key}**: {' '.join(row.note.split())}" for row in noted),
    ]


def _chart_lines(drawn: Mapping[str, Path | None]) -> list[str]:
    lines = ["", "## Charts", ""]
    for chart in _CHARTS:
        if drawn.get(chart.file) is None:
            lines.append(
                f"- `{chart.file}` was not produced: no `{chart.series}` series in this run."
            )
        else:
            lines.append(f"- [{chart.title}]({chart.file})")
    embedded = [chart for chart in _CHARTS if drawn.get(chart.file) is not None]
    for chart in embedded:
        lines.extend(["", f"![{chart.title}]({chart.file})"])
    return lines


def _markdown(meta: Mapping[str, Any], rows: list[Row], drawn: Mapping[str, Path | None]) -> str:
    lines = [
        "# Gatepass benchmark results",
        "",
        "## How this was measured",
        "",
        _how_measured(meta),
        "",
        "## Results",
        "",
        format_table(rows),
        *_notes(rows),
        *_chart_lines(drawn),
    ]
    return "\n".join(lines).rstrip() + "\n"


def write_report(
    out_dir: Path, *, rows: list[Row], series: dict[str, Any], meta: dict[str, Any]
) -> ReportPaths:
    """Write ``results.json``, ``results.md`` and the charts whose series are present."""
    out_dir.mkdir(parents=True, exist_ok=True)
    full_meta = _full_meta(meta)
    json_path = out_dir / "results.json"
    markdown_path = out_dir / "results.md"
    _write_json(json_path, full_meta, rows, series)
    drawn = _draw_charts(out_dir, series)
    markdown_path.write_text(_markdown(full_meta, rows, drawn), encoding="utf-8")
    charts = tuple(path for path in drawn.values() if path is not None)
    return ReportPaths(json=json_path, markdown=markdown_path, charts=charts)
