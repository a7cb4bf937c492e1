"""Fixtures: the servers that client_test.go started (TO_URL, with an
encryption key; TO_URL_NO_SECRETS, without), a fresh pool name per test, and
a small proxy in front of the server that can lose, refuse or withhold
answers, or go away for a while."""

from __future__ import annotations

import http.server
import os
import select
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Set, Tuple

import httpx
import pytest
import pytest_asyncio

from tokenorchestrator import AsyncClient, Client, RetryPolicy


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run these tests with go test ./clients/python, which starts the servers")
    return value


@pytest.fixture(scope="session")
def url() -> str:
    return _env("TO_URL")


@pytest.fixture(scope="session")
def no_secrets_url() -> str:
    return _env("TO_URL_NO_SECRETS")


@pytest.fixture(scope="session")
def lease_ttl() -> float:
    """The server's LEASE_TTL in seconds."""
    return float(_env("TO_LEASE_TTL"))


# Short backoffs keep the tests of retries quick.
FAST_RETRY = RetryPolicy(attempts=5, min_backoff=0.05, max_backoff=2.0)

# The outages that leases ride out: the window opens with the lease's first
# keep-alive, the worst moment for it (a third of the lease has passed
# without one), and lasts about half the lease. Its 503s ask for a
# Retry-After longer than the lease has left; its silent requests are held
# unanswered, which a keep-alive must give up on in time for another.
RIDE_LEASE_TTL = 2.0
RIDE_WINDOW = 0.45 * RIDE_LEASE_TTL


@pytest.fixture
def client(url: str) -> Iterator[Client]:
    with Client(url, retry=FAST_RETRY) as c:
        yield c


@pytest_asyncio.fixture
async def aclient(url: str):  # type: ignore[no-untyped-def]
    async with AsyncClient(url, retry=FAST_RETRY) as c:
        yield c


@pytest.fixture
def pool() -> str:
    """A pool of this test's own."""
    return "py-" + uuid.uuid4().hex[:12]


@dataclass
class Seen:
    method: str
    path: str
    headers: Dict[str, str]
    at: float
    # The status passed on from the server, or the fault met: "503", "cut",
    # "refused" (the request that stopped the listener), "silent"; "" while
    # forwarding.
    outcome: str = ""


@dataclass
class Proxy:
    """Forwards every request to the server, except that the next requests
    matching a rule get what the rule says: "drop" forwards the request but
    cuts the connection instead of answering, "503" answers 503
    database_unavailable with Retry-After without forwarding.

    ``outage()`` arms a window instead: it begins with the first request
    that matches and lasts so many seconds, and every request meanwhile
    gets its fault: "503", "cut" (the connection closed without an answer,
    nothing forwarded), "refused" (the proxy stops listening and closes
    every connection, then listens again on its port when the window
    ends) or "silent" (the request is held and nothing answered, as a
    network that drops every packet does, until the client gives up and
    closes its connection; nothing forwarded)."""

    url: str
    seen: List[Seen] = field(default_factory=list)
    # (method, path prefix, action, how many times; -1: always)
    rules: List[List[object]] = field(default_factory=list)
    retry_after: str = "1"
    lock: threading.Lock = field(default_factory=threading.Lock)
    # (method, path prefix, fault, seconds), and when it began (monotonic).
    window: Optional[Tuple[str, str, str, float]] = None
    window_began: Optional[float] = None
    # Set by the fixture: stops listening until the monotonic time given.
    stop_listening: Callable[[float], None] = lambda until: None

    def add(self, method: str, path_prefix: str, action: str, times: int = 1) -> None:
        with self.lock:
            self.rules.append([method, path_prefix, action, times])

    def clear(self) -> None:
        with self.lock:
            self.rules.clear()

    def outage(self, method: str, path_prefix: str, fault: str, seconds: float) -> None:
        """Arms a window of the fault, which the first request to match begins."""
        with self.lock:
            self.window = (method, path_prefix, fault, seconds)
            self.window_began = None

    def window_end(self) -> Optional[float]:
        """When the window ended or will end (monotonic); None before it began."""
        with self.lock:
            if self.window is None or self.window_began is None:
                return None
            return self.window_began + self.window[3]

    def fault(self, method: str, path: str, now: float) -> Optional[str]:
        """The fault the request meets, opening the window if it matches."""
        with self.lock:
            if self.window is None:
                return None
            w_method, w_prefix, fault, seconds = self.window
            if self.window_began is None and method == w_method and path.startswith(w_prefix):
                self.window_began = now
                if fault == "refused":
                    self.stop_listening(now + seconds)
            if self.window_began is not None and now < self.window_began + seconds:
                return fault
        return None

    def action(self, method: str, path: str) -> Optional[str]:
        with self.lock:
            for rule in self.rules:
                if rule[0] == method and path.startswith(str(rule[1])) and rule[3] != 0:
                    if isinstance(rule[3], int) and rule[3] > 0:
                        rule[3] -= 1
                    return str(rule[2])
        return None

    def requests(self, method: str, path: str) -> List[Seen]:
        with self.lock:
            return [s for s in self.seen if s.method == method and s.path == path]


@pytest.fixture
def proxy(url: str) -> Iterator[Proxy]:
    upstream = httpx.Client(base_url=url, timeout=70)
    state: Dict[str, Proxy] = {}
    # The connections open to the proxy, closed when it stops listening.
    conns: Set[socket.socket] = set()
    conns_lock = threading.Lock()
    done = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            with conns_lock:
                conns.add(self.connection)

        def finish(self) -> None:
            with conns_lock:
                conns.discard(self.connection)
            try:
                super().finish()
            except OSError:
                pass  # closed when the proxy stopped listening

        def log_message(self, *args: object) -> None:
            pass

        def _wait_for_hang_up(self) -> None:
            """Returns once the client closed the connection (or sent more,
            or the proxy stopped)."""
            while not done.is_set():
                try:
                    readable, _, _ = select.select([self.connection], [], [], 0.05)
                    if readable:
                        self.connection.recv(1, socket.MSG_PEEK)
                        return
                except (OSError, ValueError):
                    return

        def _handle(self) -> None:
            p = state["proxy"]
            path = self.path.split("?", 1)[0]
            now = time.monotonic()
            seen = Seen(self.command, path, {k.lower(): v for k, v in self.headers.items()}, now)
            with p.lock:
                p.seen.append(seen)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            fault = p.fault(self.command, path, now)
            if fault in ("cut", "refused"):
                # No answer: the connection closes (with the others when the
                # proxy stopped listening).
                seen.outcome = fault
                self.close_connection = True
                return
            if fault == "silent":
                seen.outcome = fault
                self._wait_for_hang_up()
                self.close_connection = True
                return
            action = fault or p.action(self.command, path)
            if action == "503":
                seen.outcome = "503"
                payload = (
                    b'{"type":"about:blank","title":"Service Unavailable","status":503,'
                    b'"code":"database_unavailable","detail":"the proxy says so"}'
                )
                self.send_response(503)
                self.send_header("Content-Type", "application/problem+json")
                self.send_header("Retry-After", p.retry_after)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection", "content-length")}
            resp = upstream.request(self.command, self.path, headers=headers, content=body)
            if action == "drop":
                # The server did the work; its answer never arrives.
                self.close_connection = True
                return
            seen.outcome = str(resp.status_code)
            self.send_response(resp.status_code)
            for k, v in resp.headers.items():
                if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(resp.content)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(resp.content)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    servers: List[http.server.ThreadingHTTPServer] = []
    servers_lock = threading.Lock()

    def listen(port: int) -> int:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        server.daemon_threads = True
        with servers_lock:
            servers.append(server)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return int(server.server_address[1])

    def stop() -> None:
        with servers_lock:
            stopping = list(servers)
            servers.clear()
        for server in stopping:
            server.shutdown()
            server.server_close()
        with conns_lock:
            for conn in list(conns):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    port = listen(0)

    def stop_listening(until: float) -> None:
        # From a handler's thread: shutdown() waits for serve_forever, which
        # runs in a thread of its own.
        def run() -> None:
            stop()
            if not done.wait(max(0.0, until - time.monotonic())):
                listen(port)

        threading.Thread(target=run, daemon=True).start()

    state["proxy"] = Proxy(f"http://127.0.0.1:{port}", stop_listening=stop_listening)
    try:
        yield state["proxy"]
    finally:
        done.set()
        stop()
        upstream.close()


def wait_until(check, timeout: float, interval: float = 0.02) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return bool(check())


def one_key_pool(client: Client, pool: str) -> Tuple[str, str]:
    """A pool with one key holding a secret; its id and secret."""
    secret = "sk-" + uuid.uuid4().hex
    result = client.import_keys([{"secret": secret}], pool)
    return result.keys[0].key_id, secret
