"""bench.loadgen against a tiny counting HTTP server running in a thread of this process."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, cast

import pytest

from bench import loadgen
from bench.loadgen import ResponseReader, encode_requests, run_load
from bench.model import LoadResult, Workload

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

DURATION = 0.5
CONNECTIONS = 4

RESPONSES = {
    "/ok": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok",
    "/missing": b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found",
    "/moved": b"HTTP/1.1 302 Found\r\nLocation: /ok\r\nContent-Length: 0\r\n\r\n",
    "/chunked": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4\r\nWiki\r\n5;note=x\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: t\r\n\r\n"
    ),
}  # any other path, "/hang" in these tests, gets no answer at all


@dataclasses.dataclass
class Counts:
    """What the server saw; written by the server thread only."""

    requests: int = 0
    open_connections: int = 0
    bodies: set[bytes] = dataclasses.field(default_factory=set)


class _CountingProtocol(asyncio.Protocol):
    def __init__(self, counts: Counts, transports: set[asyncio.Transport]) -> None:
        self._counts = counts
        self._transports = transports
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.Transport", transport)
        self._transports.add(self._transport)
        self._counts.open_connections += 1

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (head_end := self._buffer.find(b"\r\n\r\n")) >= 0:
            head = bytes(self._buffer[:head_end]).decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            end = head_end + 4 + length
            if len(self._buffer) < end:
                return
            body = bytes(self._buffer[head_end + 4 : end])
            del self._buffer[:end]
            self._counts.requests += 1
            self._counts.bodies.add(body)
            response = RESPONSES.get(head.split(" ")[1])
            if response is not None and self._transport is not None:
                self._transport.write(response)

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002
        if self._transport is not None:
            self._transports.discard(self._transport)
        self._counts.open_connections -= 1


class CountingServer:
    """An HTTP/1.1 server on 127.0.0.1 in its own thread and event loop, counting requests."""

    def __init__(self) -> None:
        self.counts = Counts()
        self._transports: set[asyncio.Transport] = set()
        self._loop = asyncio.new_event_loop()
        self._server = self._loop.run_until_complete(
            self._loop.create_server(
                lambda: _CountingProtocol(self.counts, self._transports), "127.0.0.1", 0
            )
        )
        self.port: int = self._server.sockets[0].getsockname()[1]
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The base URL of the server."""
        return f"http://127.0.0.1:{self.port}"

    def settle(self) -> Counts:
        """The counts once every client connection has ended (the generator has exited)."""
        deadline = time.monotonic() + 10
        while self.counts.open_connections and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.counts.open_connections == 0
        return self.counts

    def close(self) -> None:
        """Stop the thread and release every socket."""

        def shut() -> None:
            self._server.close()
            for transport in tuple(self._transports):
                transport.abort()

        self._loop.call_soon_threadsafe(shut)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.run_until_complete(self._server.wait_closed())
        self._loop.run_until_complete(asyncio.sleep(0))
        self._loop.close()


@pytest.fixture
def server() -> Iterator[CountingServer]:
    counting = CountingServer()
    yield counting
    counting.close()


@pytest.fixture(params=loadgen.GENERATORS)
def generator(request: pytest.FixtureRequest) -> str:
    name = cast("str", request.param)
    if not loadgen.generator_available(name):
        pytest.skip(f"{name} is not installed on this machine")
    return name


def check_result(result: LoadResult, counts: Counts, generator: str) -> None:
    """The invariants of any run against the counting server."""
    assert result.generator == generator
    assert result.connections == CONNECTIONS
    assert result.duration_s > 0
    assert result.requests > 0
    # Requests still in flight when the run ends reach the server but are not counted.
    assert counts.requests - CONNECTIONS <= result.requests <= counts.requests
    latency = result.latency_ms
    assert set(latency) == set(loadgen.LATENCY_KEYS)
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert 0 < latency["mean"] <= latency["max"]


def test_every_body_reaches_the_server(server: CountingServer, generator: str) -> None:
    bodies = [b'{"n": %d, "pad": "%s"}' % (n, b"x" * n) for n in range(50)]
    workload = Workload("POST", "/ok", (("Content-Type", "application/json"),), bodies)
    cpu = max(os.sched_getaffinity(0))
    result = run_load(
        server.url,
        workload,
        connections=CONNECTIONS,
        duration=DURATION,
        generator=generator,
        cpu=cpu,
    )
    counts = server.settle()
    check_result(result, counts, generator)
    assert counts.bodies == set(bodies)
    assert result.non_2xx == 0
    assert result.socket_errors == 0


def test_chunked_responses_are_framed(server: CountingServer, generator: str) -> None:
    workload = Workload("GET", "/chunked")
    result = run_load(
        server.url, workload, connections=CONNECTIONS, duration=DURATION, generator=generator
    )
    check_result(result, server.settle(), generator)
    assert result.non_2xx == 0
    assert result.socket_errors == 0


@pytest.mark.parametrize(
    ("path", "counted_by"), [("/missing", ("wrk", "asyncio")), ("/moved", ("asyncio",))]
)
def test_statuses_outside_2xx_are_counted(
    server: CountingServer, generator: str, path: str, counted_by: tuple[str, ...]
) -> None:
    """The wrk generator counts statuses above 399 only; asyncio all outside 200-299."""
    result = run_load(
        server.url,
        Workload("GET", path),
        connections=CONNECTIONS,
        duration=DURATION,
        generator=generator,
    )
    check_result(result, server.settle(), generator)
    assert result.non_2xx == (result.requests if generator in counted_by else 0)


def test_a_server_that_never_answers_ends_the_run(server: CountingServer, generator: str) -> None:
    """The wrk generator waits without counting anything; asyncio counts timeouts."""
    result = run_load(
        server.url,
        Workload("GET", "/hang"),
        connections=CONNECTIONS,
        duration=DURATION,
        generator=generator,
        timeout=0.1,
    )
    counts = server.settle()
    assert result.requests == 0
    assert result.non_2xx == 0
    assert counts.requests >= CONNECTIONS
    assert result.latency_ms["max"] == 0
    if generator == "asyncio":
        assert result.socket_errors >= CONNECTIONS


def test_a_refused_connection_is_counted(generator: str) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = unused.getsockname()[1]
        result = run_load(
            f"http://127.0.0.1:{port}",
            Workload("GET", "/"),
            connections=CONNECTIONS,
            duration=DURATION,
            generator=generator,
        )
    assert result.requests == 0
    assert result.socket_errors > 0


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1:8080",
        "http://example.com",
        "http://127.0.0.2:8080",
        "http://user@127.0.0.1:8080",
        "https://127.0.0.1:8443",
    ],
)
def test_a_non_loopback_or_non_http_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match=r"loopback|http"):
        run_load(url, Workload("GET", "/"), connections=1, duration=DURATION)


@pytest.mark.parametrize(
    "arguments",
    [
        {"connections": 0, "duration": DURATION},
        {"connections": 1, "duration": 0},
        {"connections": 1, "duration": DURATION, "timeout": 0},
        {"connections": 1, "duration": DURATION, "generator": "ab"},
        {"connections": 1, "duration": DURATION, "cpu": 10_000},
    ],
)
def test_invalid_arguments_are_refused(arguments: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        run_load("http://127.0.0.1:9", Workload("GET", "/"), **arguments)


def test_auto_picks_wrk_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = "wrk" if shutil.which("wrk") else "asyncio"
    assert loadgen.auto_generator() == expected
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    assert loadgen.auto_generator() == "asyncio"
    assert not loadgen.generator_available("wrk")
    assert loadgen.generator_available("asyncio")
    with pytest.raises(RuntimeError, match="not available"):
        run_load(
            "http://127.0.0.1:9", Workload("GET", "/"), connections=1, duration=1, generator="wrk"
        )


def test_requests_are_encoded_once_per_body() -> None:
    workload = Workload("POST", "/v1/x", (("X-Key", "k"),), [b"", b"{}"])
    assert encode_requests(workload, host="127.0.0.1:1", path="/api/") == [
        b"POST /api/v1/x HTTP/1.1\r\nHost: 127.0.0.1:1\r\nX-Key: k\r\nContent-Length: 0\r\n\r\n",
        b"POST /api/v1/x HTTP/1.1\r\nHost: 127.0.0.1:1\r\nX-Key: k\r\nContent-Length: 2\r\n\r\n{}",
    ]
    assert encode_requests(Workload("GET", "/"), host="h") == [b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"]
    with pytest.raises(ValueError, match="set by the load generator"):
        encode_requests(Workload("POST", "/", (("Content-Length", "2"),), [b"{}"]), host="h")


def test_a_generator_that_does_not_stop_is_killed_at_its_deadline() -> None:
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as process:
        deadline = time.monotonic() + 0.3
        with pytest.raises(RuntimeError, match="did not stop"):
            loadgen._collect("stuck", process, stop_at=None, deadline=deadline)
        assert process.returncode is not None


def test_percentiles_are_nearest_rank_over_every_sample() -> None:
    samples_ns = [n * 1_000_000 for n in range(100, 0, -1)]  # 1..100 ms, unordered
    assert loadgen._percentiles(samples_ns) == {
        "p50": 50.0,
        "p90": 90.0,
        "p99": 99.0,
        "max": 100.0,
        "mean": 50.5,
    }
    assert loadgen._percentiles([]) == dict.fromkeys(loadgen.LATENCY_KEYS, 0.0)


def feed_bytewise(reader: ResponseReader, data: bytes) -> list[int]:
    """Feed ``data`` one byte at a time; the statuses completed, in order."""
    return [status for i in range(len(data)) if (status := reader.feed(data[i : i + 1]))]


@pytest.mark.parametrize("response", list(RESPONSES.values()))
def test_the_reader_frames_responses_split_anywhere(response: bytes) -> None:
    reader = ResponseReader()
    assert feed_bytewise(reader, response * 3) == [int(response[9:12])] * 3
    assert reader.keep_alive


def test_the_reader_skips_interim_responses_and_reads_to_close() -> None:
    reader = ResponseReader()
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    assert feed_bytewise(reader, interim + b"HTTP/1.0 200 OK\r\n\r\nbody until close") == []
    assert not reader.keep_alive
    assert reader.feed_eof() == 200


@pytest.mark.parametrize(
    ("head", "keep_alive"),
    [
        (b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n", False),
        (b"HTTP/1.0 204 No Content\r\nConnection: keep-alive\r\n\r\n", True),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", True),
    ],
)
def test_the_reader_knows_bodiless_responses(head: bytes, *, keep_alive: bool) -> None:
    reader = ResponseReader()
    assert reader.feed(head) == int(head[9:12])
    assert reader.keep_alive is keep_alive


def test_the_reader_takes_no_body_after_head_requests() -> None:
    reader = ResponseReader(head_request=True)
    assert reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n") == 200


@pytest.mark.parametrize(
    "garbage",
    [b"SSH-2.0-OpenSSH\r\n\r\n", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"],
)
def test_the_reader_refuses_malformed_framing(garbage: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - int() or the reader's own message
        ResponseReader().feed(garbage)


def test_wrk_is_refused_for_head_requests() -> None:
    with pytest.raises(ValueError, match="HEAD"):
        run_load(
            "http://127.0.0.1:9", Workload("HEAD", "/"), connections=1, duration=1, generator="wrk"
        )


def test_the_child_process_runs_on_plain_asyncio(
    server: CountingServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The ``python -m bench.loadgen`` protocol, run in-process with uvloop made unimportable."""
    monkeypatch.setitem(sys.modules, "uvloop", None)
    requests_path = tmp_path / "requests"
    requests = encode_requests(Workload("GET", "/chunked"), host=server.url.removeprefix("http://"))
    loadgen._write_requests(requests_path, requests)
    spec = loadgen._Spec(
        address="127.0.0.1",
        port=server.port,
        connections=CONNECTIONS,
        duration=DURATION,
        timeout=1.0,
        requests_path=str(requests_path),
        head_request=False,
        cpu=None,
    )
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(dataclasses.asdict(spec)))
    assert loadgen.main([str(spec_path)]) == 0
    out, err = capsys.readouterr()
    assert err == "loadgen-ready\n"
    assert out.startswith(loadgen.RESULT_PREFIX)
    data = json.loads(out.removeprefix(loadgen.RESULT_PREFIX))
    result = LoadResult(**{key: value for key, value in data.items() if key != "rps"})
    check_result(result, server.settle(), "asyncio")
    assert result.socket_errors == 0
