"""Closed-loop HTTP/1.1 load against a loopback server: wrk when installed, else asyncio.

``run_load`` keeps ``connections`` keep-alive connections busy for ``duration`` seconds, each
sending its next request as soon as the previous response has arrived, and returns a
:class:`~bench.model.LoadResult`. Requests are encoded once, before the run, and written to
a file both generators read: each stored as its length in decimal, a newline, its bytes. The
bodies of ``Workload.bodies`` are sent in turn, cycling when the run outlasts them.

Generators:

``wrk``
    The system ``wrk`` with one thread (``-t1``), pinned with ``taskset -c`` when ``cpu`` is
    given, driven by ``bench/wrk_report.lua``. wrk takes whole seconds only: ``-d`` and
    ``--timeout`` are rounded up, and a fractional duration is ended by SIGINT, after which wrk
    stops and reports as usual.
``asyncio``
    ``python -m bench.loadgen`` in a subprocess (its own GIL), pinned with
    ``os.sched_setaffinity``, on uvloop when importable. Raw protocols, one pre-encoded request
    per body, minimal response framing (status line, Content-Length, chunked, or until close).
    Percentiles are exact nearest-rank values of every recorded latency.

Where the two differ:

* ``non_2xx``: wrk counts statuses above 399 only (it has no count of 1xx or 3xx without a
  per-response Lua callback, which slows it); asyncio counts every status outside 200-299.
* Timeouts: wrk never abandons a request. A response slower than ``--timeout`` counts as a
  completed request and a timeout error and is left out of the latency figures; a server
  that never answers yields zero requests and zero errors. asyncio aborts a request after
  ``timeout``, counts a socket error and reconnects.
* Latency: before reporting, wrk 4.1 corrects its 1 µs histogram for coordinated omission
  (adding synthetic samples for responses slower than twice the mean per-connection
  interval), so its tail can read higher than asyncio's raw samples.
* A failed connect: wrk retries at once, asyncio after ``RECONNECT_DELAY_S``.
* HEAD: wrk waits for the body a HEAD response announces and stalls, so ``run_load``
  refuses HEAD with wrk; asyncio reads no body after HEAD.

Both start the clock once their requests are loaded (the child reports ``loadgen-ready`` on
stderr) and are killed, with ``RuntimeError``, if not finished ``duration + timeout +
STOP_GRACE_S`` seconds after that.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import ipaddress
import itertools
import json
import math
import os
import select
import shutil
import signal
import socket
import subprocess  # nosec B404  # starts the load generators: fixed argv, no shell
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from bench.model import LoadResult, Workload

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

__all__ = [
    "GENERATORS",
    "LATENCY_KEYS",
    "ResponseReader",
    "auto_generator",
    "encode_requests",
    "generator_available",
    "main",
    "run_load",
]

GENERATORS = ("wrk", "asyncio")
LATENCY_KEYS = ("p50", "p90", "p99", "max", "mean")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
WRK_SCRIPT = Path(__file__).with_name("wrk_report.lua")
READY_LINE = b"loadgen-ready\n"
RESULT_PREFIX = "loadgen-result "
STARTUP_TIMEOUT_S = 120.0
STOP_GRACE_S = 5.0
INTERRUPT_RETRY_S = 0.5
RECONNECT_DELAY_S = 0.01
_BODYLESS_METHODS = frozenset({"GET", "HEAD"})
_NO_BODY_STATUSES = frozenset({101, 204, 304})
_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding"})
_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)


# --------------------------------------------------------------------------- public API


def generator_available(name: str) -> bool:
    """Whether generator ``name`` ("wrk" or "asyncio") can run on this machine."""
    if name == "wrk":
        return shutil.which("wrk") is not None
    if name == "asyncio":
        return True
    raise ValueError(f"unknown generator {name!r}; expected one of {GENERATORS}")


def auto_generator() -> str:
    """The generator ``generator="auto"`` runs: wrk when it is on PATH, else asyncio."""
    return "wrk" if generator_available("wrk") else "asyncio"


def run_load(
    base_url: str,
    workload: Workload,
    *,
    connections: int,
    duration: float,
    generator: str = "auto",
    cpu: int | None = None,
    timeout: float = 10.0,
) -> LoadResult:
    """Drive ``workload`` against ``base_url`` in a closed loop and measure it.

    ``base_url`` must name a loopback host (127.0.0.1, localhost or ::1) over plain http;
    its path, if any, prefixes ``workload.path``. ``cpu`` pins the generator to one core.
    ``timeout`` bounds one request (see the module docstring for how each generator uses it).

    Raises ``ValueError`` for a non-loopback URL or an invalid argument, and
    ``RuntimeError`` when the generator is unavailable, fails, or does not stop in time.
    """
    _check_numbers(connections=connections, duration=duration, timeout=timeout, cpu=cpu)
    target = _Target.parse(base_url)
    name = auto_generator() if generator == "auto" else generator
    if name == "wrk" and workload.method.upper() == "HEAD":
        raise ValueError("wrk waits for a body after HEAD and stalls; use generator='asyncio'")
    if not generator_available(name):
        raise RuntimeError(f"generator {name!r} is not available (wrk is not on PATH)")
    requests = encode_requests(workload, host=target.host_header, path=target.prefix)
    address = _resolve(target.hostname, target.port, timeout)
    with tempfile.TemporaryDirectory(prefix="loadgen-") as tmp:
        requests_path = Path(tmp, "requests")
        _write_requests(requests_path, requests)
        spec = _Spec(
            address=address,
            port=target.port,
            connections=connections,
            duration=duration,
            timeout=timeout,
            requests_path=str(requests_path),
            head_request=workload.method.upper() == "HEAD",
            cpu=cpu,
        )
        if name == "wrk":
            return _run_wrk(spec)
        return _run_asyncio_child(spec, Path(tmp, "spec.json"))


def encode_requests(workload: Workload, *, host: str, path: str = "") -> list[bytes]:
    """One complete HTTP/1.1 request per body of ``workload``, ``path`` prefixed to its path.

    A ``Host`` header is added unless the workload has one; ``Content-Length`` is added for
    every non-empty body and for methods other than GET and HEAD. The workload must not set
    framing headers itself.
    """
    method, target = workload.method, path.rstrip("/") + workload.path
    if not method or not set(method) <= _TOKEN_CHARS:
        raise ValueError(f"invalid method {method!r}")
    if not target.startswith("/") or any(c in target for c in " \r\n"):
        raise ValueError(f"invalid request path {target!r}")
    if not workload.bodies:
        raise ValueError("a workload needs at least one body (b'' for none)")
    lines = [f"{method} {target} HTTP/1.1"]
    names = {name.lower() for name, _ in workload.headers}
    if "host" not in names:
        lines.append(f"Host: {host}")
    for name, value in workload.headers:
        _check_header(name, value)
        lines.append(f"{name}: {value}")
    head = ("\r\n".join(lines) + "\r\n").encode("latin-1")
    always_length = method.upper() not in _BODYLESS_METHODS
    return [
        head + b"Content-Length: %d\r\n\r\n" % len(body) + body
        if body or always_length
        else head + b"\r\n"
        for body in workload.bodies
    ]


# ------------------------------------------------------------------- arguments and target


def _check_numbers(*, connections: int, duration: float, timeout: float, cpu: int | None) -> None:
    if connections < 1:
        raise ValueError(f"connections must be at least 1, not {connections}")
    if not duration > 0 or not timeout > 0:
        raise ValueError(f"duration and timeout must be positive, not {duration}, {timeout}")
    if cpu is not None and cpu not in os.sched_getaffinity(0):
        raise ValueError(f"cpu {cpu} is not among this process's cpus")


def _check_header(name: str, value: str) -> None:
    if not name or not set(name) <= _TOKEN_CHARS:
        raise ValueError(f"invalid header name {name!r}")
    if name.lower() in _FRAMING_HEADERS:
        raise ValueError(f"{name} is set by the load generator, not the workload")
    if "\r" in value or "\n" in value:
        raise ValueError(f"invalid value for header {name!r}")


@dataclass(frozen=True, slots=True)
class _Target:
    hostname: str
    port: int
    host_header: str
    prefix: str

    @classmethod
    def parse(cls, base_url: str) -> _Target:
        parts = urlsplit(base_url)
        if parts.scheme != "http":
            raise ValueError(f"only plain http is supported, not {base_url!r}")
        if parts.hostname not in LOOPBACK_HOSTS or "@" in parts.netloc:
            raise ValueError(f"refusing a non-loopback target: {base_url!r}")
        if parts.query or parts.fragment:
            raise ValueError(f"base_url takes no query or fragment: {base_url!r}")
        return cls(parts.hostname, parts.port or 80, parts.netloc, parts.path)


def _resolve(hostname: str, port: int, timeout: float) -> str:
    """A numeric address for ``hostname``: for a name, the first address that accepts."""
    try:
        return str(ipaddress.ip_address(hostname))
    except ValueError:
        pass
    infos = socket.getaddrinfo(hostname, port, type=socket.SOCK_STREAM)
    addresses = [str(info[4][0]) for info in infos]
    if not addresses or not all(ipaddress.ip_address(a).is_loopback for a in addresses):
        raise ValueError(f"{hostname} does not resolve to loopback addresses only: {addresses}")
    for address in addresses:
        try:
            with socket.create_connection((address, port), timeout=min(timeout, 1.0)):
                return address
        except OSError:
            continue
    return addresses[0]


@dataclass(frozen=True, slots=True)
class _Spec:
    """What one generator process needs, handed to the asyncio child as a JSON file."""

    address: str
    port: int
    connections: int
    duration: float
    timeout: float
    requests_path: str
    head_request: bool
    cpu: int | None


def _write_requests(path: Path, requests: Sequence[bytes]) -> None:
    with path.open("wb") as file:
        for request in requests:
            file.write(b"%d\n" % len(request))
            file.write(request)


def _read_requests(path: Path) -> list[bytes]:
    data = path.read_bytes()
    requests: list[bytes] = []
    at = 0
    while at < len(data):
        newline = data.index(b"\n", at)
        end = newline + 1 + int(data[at:newline])
        requests.append(data[newline + 1 : end])
        at = end
    if not requests:
        raise ValueError(f"no requests in {path}")
    return requests


# ------------------------------------------------------------------- running a generator


def _run_wrk(spec: _Spec) -> LoadResult:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not on PATH")
    host = f"[{spec.address}]" if ":" in spec.address else spec.address
    whole_seconds = math.ceil(spec.duration)
    command = [
        *_taskset(spec.cpu),
        wrk,
        "-t1",
        f"-c{spec.connections}",
        f"-d{whole_seconds}s",
        "--timeout",
        f"{math.ceil(spec.timeout)}s",
        "-s",
        str(WRK_SCRIPT),
        f"http://{host}:{spec.port}/",
        "--",
        spec.requests_path,
    ]
    interrupt = whole_seconds != spec.duration
    data = _run_child("wrk", command, spec, interrupt=interrupt)
    errors, latency = data["errors"], data["latency_us"]
    return LoadResult(
        generator="wrk",
        connections=spec.connections,
        duration_s=data["duration_us"] / 1e6,
        requests=data["requests"],
        non_2xx=errors["status"],
        socket_errors=errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
        latency_ms={key: latency[key] / 1000 for key in LATENCY_KEYS},
    )


def _taskset(cpu: int | None) -> list[str]:
    if cpu is None:
        return []
    taskset = shutil.which("taskset")
    if taskset is None:
        raise RuntimeError("taskset is needed to pin wrk to a cpu and is not on PATH")
    return [taskset, "-c", str(cpu)]


def _run_asyncio_child(spec: _Spec, spec_path: Path) -> LoadResult:
    spec_path.write_text(json.dumps(asdict(spec)))
    command = [sys.executable, "-m", "bench.loadgen", str(spec_path)]
    data = _run_child("asyncio", command, spec, interrupt=False)
    return LoadResult(
        generator="asyncio",
        connections=data["connections"],
        duration_s=data["duration_s"],
        requests=data["requests"],
        non_2xx=data["non_2xx"],
        socket_errors=data["socket_errors"],
        latency_ms={key: float(data["latency_ms"][key]) for key in LATENCY_KEYS},
    )


def _child_env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


def _run_child(name: str, command: list[str], spec: _Spec, *, interrupt: bool) -> dict[str, Any]:
    """Start a generator, wait for it to be ready, stop it on time, parse its result line."""
    with subprocess.Popen(  # nosec B603  # our own generator's argv, no shell
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_child_env(),
    ) as process:
        try:
            early = _await_ready(name, process, time.monotonic() + STARTUP_TIMEOUT_S)
            ready_at = time.monotonic()
            deadline = ready_at + spec.duration + spec.timeout + STOP_GRACE_S
            stop_at = ready_at + spec.duration if interrupt else None
            stdout, stderr = _collect(name, process, stop_at=stop_at, deadline=deadline)
        finally:
            if process.poll() is None:
                process.kill()
    output = stdout.decode(errors="replace")
    errors = (early + stderr).decode(errors="replace").replace(READY_LINE.decode(), "").strip()
    if process.returncode != 0:
        raise RuntimeError(f"{name} exited with status {process.returncode}: {errors}")
    for line in reversed(output.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return cast("dict[str, Any]", json.loads(line.removeprefix(RESULT_PREFIX)))
    raise RuntimeError(f"{name} printed no result line: {output.strip()} {errors}")


def _await_ready(name: str, process: subprocess.Popen[bytes], deadline: float) -> bytes:
    """Read the child's stderr up to its ready line; what it held, for error messages."""
    if process.stderr is None:
        raise RuntimeError("stderr is not a pipe")
    fd = process.stderr.fileno()
    seen = b""
    while READY_LINE not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError(f"{name} did not start within {STARTUP_TIMEOUT_S} s")
        readable, _, _ = select.select([fd], [], [], remaining)
        if not readable:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            process.wait()
            message = seen.decode(errors="replace").strip()
            raise RuntimeError(f"{name} exited ({process.returncode}) before starting: {message}")
        seen += chunk
    return seen


def _collect(
    name: str, process: subprocess.Popen[bytes], *, stop_at: float | None, deadline: float
) -> tuple[bytes, bytes]:
    """Wait for the child's output; SIGINT it from ``stop_at`` on, kill it at ``deadline``."""
    while True:
        wake = deadline if stop_at is None else min(stop_at, deadline)
        try:
            return process.communicate(timeout=max(wake - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            pass
        if stop_at is None or time.monotonic() >= deadline:
            process.kill()
            process.communicate()
            raise RuntimeError(f"{name} did not stop within its deadline and was killed")
        process.send_signal(signal.SIGINT)
        stop_at = time.monotonic() + INTERRUPT_RETRY_S


# ----------------------------------------------------------------- the asyncio generator


def _percentiles(samples_ns: list[int]) -> dict[str, float]:
    """Nearest-rank p50/p90/p99, max and mean of latencies in ns, as milliseconds."""
    if not samples_ns:
        return dict.fromkeys(LATENCY_KEYS, 0.0)
    ordered = sorted(samples_ns)
    count = len(ordered)

    def rank(percent: int) -> float:
        return ordered[max(math.ceil(percent * count / 100) - 1, 0)] / 1e6

    return {
        "p50": rank(50),
        "p90": rank(90),
        "p99": rank(99),
        "max": ordered[-1] / 1e6,
        "mean": sum(ordered) / count / 1e6,
    }


def _header(head: bytearray, needle: bytes) -> bytearray | None:
    """The value after ``needle`` (CRLF, a lower-case name, a colon) in a lower-cased head.

    The head must end with CRLF, so that every header line does.
    """
    start = head.find(needle)
    if start < 0:
        return None
    start += len(needle)
    return head[start : head.find(b"\r\n", start)].strip()


def _keeps_alive(head: bytearray) -> bool:
    """Whether a lower-cased response head lets the connection carry another request."""
    connection = _header(head, b"\r\nconnection:") or b""
    if head.startswith(b"http/1.0"):
        return b"keep-alive" in connection
    return b"close" not in connection


class ResponseReader:
    """Frames HTTP/1.1 responses that arrive in pieces, for a client with one in flight.

    ``feed`` returns the status of the response its bytes completed, or 0 while incomplete.
    Bodies are delimited by Content-Length, chunked transfer coding (extensions and trailers
    skipped), or the end of the connection (``feed_eof``); 1xx interim responses other than
    101 are skipped. ``keep_alive`` tells whether the connection can carry the next request.
    Malformed framing raises ``ValueError``.
    """

    __slots__ = ("_buffer", "_chunk_at", "_end", "_head_request", "_status", "keep_alive")

    def __init__(self, *, head_request: bool = False) -> None:
        self._head_request = head_request
        self._buffer = bytearray()
        self._status = 0
        self._end = -1
        self._chunk_at = -1
        self.keep_alive = True

    def feed(self, data: bytes) -> int:
        """Take received bytes; the status of the response they complete, else 0."""
        buffer = self._buffer
        buffer += data
        if not self._status and not self._parse_head():
            return 0
        if self._chunk_at >= 0:
            self._scan_chunks()
        end = self._end
        if end < 0 or len(buffer) < end:
            return 0
        del buffer[:end]
        status, self._status, self._end = self._status, 0, -1
        return status

    def feed_eof(self) -> int:
        """The connection ended: the status of a response it completes, else 0."""
        status = self._status
        if status and self._end < 0 and self._chunk_at < 0:
            self._buffer.clear()
            self._status = 0
            return status
        return 0

    def _parse_head(self) -> bool:
        buffer = self._buffer
        while True:
            head_end = buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return False
            if buffer[:5] != b"HTTP/" or buffer[8:9] != b" ":
                raise ValueError(f"not an HTTP/1.x status line: {bytes(buffer[:40])!r}")
            status = int(buffer[9:12])
            if not 100 <= status < 200 or status == 101:  # noqa: PLR2004 - interim responses
                break
            del buffer[: head_end + 4]
        head = buffer[: head_end + 2].lower()
        body_at = head_end + 4
        self.keep_alive = (
            b"\r\nconnection:" not in head and not head.startswith(b"http/1.0")
        ) or _keeps_alive(head)
        if self._head_request or status in _NO_BODY_STATUSES:
            self._end = body_at
        elif (_header(head, b"\r\ntransfer-encoding:") or b"").endswith(b"chunked"):
            self._chunk_at = body_at
        elif (length := _header(head, b"\r\ncontent-length:")) is not None:
            self._end = body_at + int(length)
        else:
            self.keep_alive = False
        self._status = status
        return True

    def _scan_chunks(self) -> None:
        buffer = self._buffer
        at = self._chunk_at
        while True:
            line_end = buffer.find(b"\r\n", at)
            if line_end < 0:
                break
            size = int(buffer[at:line_end].split(b";", 1)[0], 16)
            if size == 0:
                trailer_end = buffer.find(b"\r\n\r\n", line_end)
                if trailer_end >= 0:
                    self._end = trailer_end + 4
                    self._chunk_at = -1
                    return
                break
            next_at = line_end + 2 + size + 2
            if len(buffer) < next_at:
                break
            if buffer[next_at - 2 : next_at] != b"\r\n":
                raise ValueError("chunk not followed by CRLF")
            at = next_at
        self._chunk_at = at


class _Load:
    """The shared state of one asyncio run: requests to cycle, counters, live connections."""

    def __init__(self, spec: _Spec, requests: Sequence[bytes]) -> None:
        self.spec = spec
        self.requests: Iterator[bytes] = itertools.cycle(requests)
        self.timeout_ns = int(spec.timeout * 1e9)
        self.samples: list[int] = []
        self.non_2xx = 0
        self.socket_errors = 0
        self.stopping = False
        self.active: set[_Connection] = set()

    def expire(self) -> None:
        """Abort every request older than the timeout, counting each as a socket error."""
        limit = time.perf_counter_ns() - self.timeout_ns
        for connection in tuple(self.active):
            if 0 < connection.sent_at < limit:
                self.socket_errors += 1
                connection.abort()

    def stop(self) -> None:
        """End the run: no further requests; in-flight ones are dropped uncounted."""
        self.stopping = True
        for connection in tuple(self.active):
            connection.abort()


class _Connection(asyncio.Protocol):
    """One keep-alive connection sending its next request when a response completes."""

    __slots__ = ("_load", "_reader", "_transport", "closed", "sent_at")

    _transport: asyncio.Transport

    def __init__(self, load: _Load) -> None:
        self._load = load
        self._reader = ResponseReader(head_request=load.spec.head_request)
        self.sent_at = 0
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.Transport", transport)
        self._load.active.add(self)
        self._send()

    def _send(self) -> None:
        self.sent_at = time.perf_counter_ns()
        self._transport.write(next(self._load.requests))

    def data_received(self, data: bytes) -> None:
        try:
            status = self._reader.feed(data)
        except ValueError:
            self._transport.abort()
            return
        if status:
            self._complete(status)

    def eof_received(self) -> bool:
        status = self._reader.feed_eof()
        if status:
            self._complete(status)
        return False

    def _complete(self, status: int) -> None:
        load = self._load
        if load.stopping:
            return
        load.samples.append(time.perf_counter_ns() - self.sent_at)
        self.sent_at = 0
        if not 200 <= status < 300:  # noqa: PLR2004 - the 2xx range
            load.non_2xx += 1
        if self._reader.keep_alive:
            self._send()
        else:
            self._transport.close()

    def abort(self) -> None:
        """Drop the connection without counting its in-flight request."""
        self.sent_at = 0
        self._transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002 - asyncio's signature
        load = self._load
        load.active.discard(self)
        if self.sent_at and not load.stopping:
            load.socket_errors += 1
        if not self.closed.done():
            self.closed.set_result(None)


async def _keep_connected(load: _Load) -> None:
    """One connection slot: connect, run until the connection ends, reconnect."""
    loop = asyncio.get_running_loop()
    factory = functools.partial(_Connection, load)
    spec = load.spec
    while not load.stopping:
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(factory, spec.address, spec.port), spec.timeout
            )
        except (OSError, TimeoutError):
            load.socket_errors += 1
            await asyncio.sleep(RECONNECT_DELAY_S)
            continue
        await connection.closed


async def _expire_periodically(load: _Load) -> None:
    interval = min(max(load.spec.timeout / 4, 0.005), 0.25)
    while True:
        await asyncio.sleep(interval)
        load.expire()


async def _drive(load: _Load) -> float:
    """Run the closed loop for the spec's duration; the measured seconds."""
    start = time.perf_counter_ns()
    tasks = [asyncio.create_task(_keep_connected(load)) for _ in range(load.spec.connections)]
    tasks.append(asyncio.create_task(_expire_periodically(load)))
    await asyncio.sleep(load.spec.duration)
    load.stop()
    elapsed = (time.perf_counter_ns() - start) / 1e9
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return elapsed


def _event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop  # noqa: PLC0415 - optional, the fastest loop when present
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def _run_asyncio(spec: _Spec, requests: Sequence[bytes]) -> LoadResult:
    load = _Load(spec, requests)
    gc.collect()
    gc.disable()
    try:
        with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
            elapsed = runner.run(_drive(load))
    finally:
        gc.enable()
    return LoadResult(
        generator="asyncio",
        connections=spec.connections,
        duration_s=elapsed,
        requests=len(load.samples),
        non_2xx=load.non_2xx,
        socket_errors=load.socket_errors,
        latency_ms=_percentiles(load.samples),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The asyncio generator's process: ``python -m bench.loadgen SPEC_JSON``.

    Prints ``loadgen-ready`` on stderr once its requests are loaded, then, after the run, one
    ``loadgen-result {json}`` line on stdout (``LoadResult.to_json()``).
    """
    parser = argparse.ArgumentParser(
        prog="python -m bench.loadgen",
        description="The asyncio load generator of bench.loadgen.run_load (internal).",
    )
    parser.add_argument("spec", type=Path, help="JSON file written by run_load")
    args = parser.parse_args(argv)
    spec = _Spec(**json.loads(args.spec.read_text()))
    if spec.cpu is not None:
        os.sched_setaffinity(0, {spec.cpu})
    requests = _read_requests(Path(spec.requests_path))
    sys.stderr.buffer.write(READY_LINE)
    sys.stderr.flush()
    result = _run_asyncio(spec, requests)
    sys.stdout.write(RESULT_PREFIX + json.dumps(result.to_json()) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
