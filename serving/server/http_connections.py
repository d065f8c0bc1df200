"""The REST port's connections: one ``selectors`` loop reads every request, workers answer.

As TF Serving's libevent server does, one thread accepts connections and reads
each request in full (headers and body) without blocking; only a complete
request goes to a worker thread (``--rest_api_num_threads``). A connection that
is idle, slow or silent therefore holds no thread, and the number of threads
stays fixed however many connections are open.

What a connection may hold is bounded (not in TF Serving):

* at most ``max_connections`` are open (``--rest_api_max_connections``). At the
  cap, a new connection closes the oldest idle one, or else the oldest one still
  sending its headers; when every open connection is sending a body or being
  answered, the new one gets 503 (``Connection: close``) at once;
* an idle connection (fresh, or kept alive after an answer) is closed after
  ``idle_timeout`` seconds (``--rest_api_idle_timeout_in_ms``; libevent's own
  default read timeout is 50 s);
* the headers of a request must all arrive within ``header_timeout`` seconds
  of its first byte (``--rest_api_header_timeout_in_ms``), however slowly they
  trickle in; past it: 408. Headers larger than :data:`MAX_HEADER_BYTES`: 431;
* the body must arrive within ``body_timeout`` seconds of the headers (the REST
  timeout, ``--rest_api_timeout_in_ms``), in total: past it, 408;
* the body's bytes come out of the shared :class:`ByteBudget` as they are read
  (before each read of up to 1 MiB): a request that cannot get them within the
  budget wait gets 429. Announcing a large body without sending it holds nothing.

Every closing for these reasons is counted in the metrics
(``:keras_vit:serving:rest:connections_closed{reason=...}``), and the open
connections are a gauge (``:keras_vit:serving:rest:open_connections``).
"""

from __future__ import annotations

import email.utils
import errno
import http.client
import io
import itertools
import math
import queue
import selectors
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus

from serving.server.json_tensor import error_body
from serving.server.logs import get_logger

log = get_logger()

# Request line plus headers, at most (libevent sets no limit; TF Serving none either).
MAX_HEADER_BYTES = 64 * 1024
# An oversized body is still read (and dropped) up to this size so that the client
# gets the 413 answer instead of a broken pipe; past it the answer is sent at once.
DRAIN_LIMIT = 1024**3
# After an error answer, what the client still sends is read and dropped for this long,
# so that closing the socket does not reset the connection before the client reads it.
LINGER_SECONDS = 2.0
METHODS = frozenset({"GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"})
_HEAD_READ = 64 * 1024
_BODY_READ = 1024 * 1024
_ACCEPTS_PER_EVENT = 1024  # a burst is taken off the backlog before it overflows
_EVICTION_SCAN = 64
# Refused connections read (and drop) the request they send for a moment, so that the
# client gets the 503 instead of a reset; at most this many at once.
_REFUSED_LINGERING = 64

# Connection states.
IDLE, HEADERS, BODY, BUDGET, BUSY, LINGER = "idle", "headers", "body", "budget", "busy", "linger"
# Where the loop looks for a connection to close when it is at the cap, in order.
_EVICTABLE = (LINGER, IDLE, HEADERS)


class BodyTooLarge(Exception):
    """The request body is over the configured limit."""


class OverBudget(Exception):
    """The bytes in flight did not make room for this request in time."""


class ByteBudget:
    """A counting limit on bytes held by requests in progress."""

    def __init__(self, limit: int) -> None:
        self.limit = max(limit, 1)
        self.used = 0
        self._cond = threading.Condition()
        self.on_release: Callable[[], None] | None = None

    def acquire(self, count: int, timeout: float, held: int = 0) -> int:
        """Takes ``count`` more bytes for a request holding ``held``; raises :class:`OverBudget`.

        One request may hold at most the whole budget (it then runs alone).
        """
        count = min(max(count, 0), max(self.limit - held, 0))
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.used + count > self.limit:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise OverBudget(count)
                self._cond.wait(remaining)
            self.used += count
        return count

    def release(self, count: int) -> None:
        if count:
            with self._cond:
                self.used -= count
                self._cond.notify_all()
            if self.on_release is not None:
                self.on_release()


@dataclass
class Request:
    """A request read in full, handed to a worker."""

    head: bytes  # request line and headers, up to the blank line
    body: bytes
    held: int  # bytes of the budget it holds (the worker releases them)
    complete_at: float  # time.monotonic() when its last byte arrived


def reason_phrase(code: int) -> str:
    if code == 499:
        return "Client Closed Request"
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Unknown"


def response_bytes(code: int, headers: list, body: bytes, head_only: bool = False) -> bytes:
    """Status line, headers (plus ``Date`` and ``Content-Length``) and body, as one write."""
    lines = [
        f"HTTP/1.1 {code} {reason_phrase(code)}",
        f"Date: {email.utils.formatdate(usegmt=True)}",
    ]
    lines += [f"{name}: {value}" for name, value in headers]
    lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + body


# libevent's ERR_FORMAT.
_ERROR_PAGE = (
    "<HTML><HEAD>\n<TITLE>{code} {reason}</TITLE>\n</HEAD><BODY>\n<H1>{reason}</H1>\n"
    "</BODY></HTML>\n"
)


def error_page(code: int) -> bytes:
    reason = reason_phrase(code)
    return _ERROR_PAGE.format(code=code, reason=reason).encode("latin-1")


def _has_pending_bytes(sock: socket.socket) -> bool:
    """True if ``sock`` (non-blocking) has bytes waiting to be read."""
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except OSError:  # BlockingIOError: nothing waiting; others: closed or reset
        return False


def _header_end(buffer: bytearray, start: int) -> int:
    """The index just past the blank line that ends the headers, or -1."""
    ends = []
    for marker in (b"\r\n\r\n", b"\n\n"):
        found = buffer.find(marker, max(start - len(marker), 0))
        if found >= 0:
            ends.append(found + len(marker))
    return min(ends) if ends else -1


class Connection:
    """One client connection and the request it is sending."""

    def __init__(self, sock: socket.socket, address, now: float) -> None:
        self.sock = sock
        self.address = address
        self.buffer = bytearray()
        self.state = IDLE
        self.deadline = math.inf
        self.registered = False
        self.held = 0
        self.new_request()

    def new_request(self) -> None:
        self.head = b""
        self.method = ""
        self.parts: list[bytes] = []
        self.size = 0  # body bytes so far (chunked: declared by the chunk sizes)
        self.remaining = 0  # Content-Length bytes still to come
        self.credit = 0  # bytes of the budget taken for body bytes not yet received
        self.chunked = False
        self.chunk_left = 0  # > 0: data bytes to come; -1: the CRLF after the data
        self.trailer = False
        self.discard = False  # over the body limit: read and drop, then 413
        self.declared = 0
        self.body_deadline = math.inf
        self.budget_deadline = math.inf
        self.wanted = 0
        self.scanned = 0  # header bytes already searched for the blank line


class ConnectionLoop:
    """Accepts and reads connections in one thread; calls ``dispatch`` per full request.

    ``dispatch(connection, request)`` runs in the loop thread and must hand the
    request to a worker quickly; the worker calls :meth:`give_back` when done.
    """

    def __init__(
        self,
        listener: socket.socket,
        dispatch: Callable[[Connection, Request], None],
        budget: ByteBudget,
        budget_wait: Callable[[], float],
        metrics,
        *,
        max_connections: int,
        idle_timeout: float,
        header_timeout: float,
        body_timeout: float,
        max_body_bytes: int,
    ) -> None:
        self.listener = listener
        self.dispatch = dispatch
        self.budget = budget
        self.budget_wait = budget_wait
        self.metrics = metrics
        self.max_connections = max(max_connections, 1)
        self.idle_timeout = idle_timeout
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.max_body_bytes = max_body_bytes
        self.draining = False
        self._stopping = False
        self._connections: dict[int, Connection] = {}
        self._by_state: dict[str, OrderedDict] = {
            state: OrderedDict() for state in (IDLE, HEADERS, BUDGET, LINGER)
        }
        self._returns: queue.SimpleQueue = queue.SimpleQueue()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        listener.setblocking(False)
        self._selector.register(listener, selectors.EVENT_READ, None)
        self._refused: OrderedDict[socket.socket, float] = OrderedDict()
        self._accept_paused_until = 0.0
        self._listening = True
        self._next_deadline = math.inf
        self._empty = threading.Condition()
        budget.on_release = self._on_budget_release

    # ------------------------------------------------------------------ other threads

    def give_back(self, connection: Connection, close: bool) -> None:
        """A worker is done with ``connection``: keep it alive (or close it) in the loop."""
        self._returns.put((connection, close))
        self.wake()

    def wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:  # full (the loop is awake anyway) or closed
            pass

    def _on_budget_release(self) -> None:
        if self._by_state[BUDGET]:
            self.wake()

    def start_draining(self) -> None:
        """Stops accepting; closes idle connections; lets requests in progress finish."""
        self.draining = True
        self.wake()

    def wait_empty(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._empty:
            while self._connections:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._empty.wait(min(remaining, 0.1))
        return True

    def busy_count(self) -> int:
        return len(self._connections)

    def stop(self) -> None:
        self._stopping = True
        self.wake()

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        try:
            while not self._stopping:
                self._tick()
                if self.draining and not self._connections:
                    break
        finally:
            self._close_everything()

    def _tick(self) -> None:
        now = time.monotonic()
        timeout = min(max(self._next_deadline - now, 0.0), 1.0)
        if self._refused:
            timeout = min(timeout, max(next(iter(self._refused.values())) - now, 0.0))
        if self._by_state[BUDGET]:
            timeout = min(timeout, 0.05)
        if not self._listening and not self.draining:
            timeout = min(timeout, max(self._accept_paused_until - now, 0.0))
        events = self._selector.select(timeout)
        now = time.monotonic()
        for key, _ in events:
            if key.data is None:
                self._accept(now)
            elif key.data == "refused":
                self._drop_refused(key.fileobj, now)
            elif key.data == "wake":
                try:
                    while self._wake_r.recv(4096):
                        pass
                except OSError:
                    pass
            else:
                self._guarded(self._on_readable, key.data, now)
        self._take_returns(now)
        while self._refused and (
            next(iter(self._refused.values())) <= now or len(self._refused) > _REFUSED_LINGERING
        ):
            self._drop_refused(next(iter(self._refused)), now, force=True)
        for connection in list(self._by_state[BUDGET]):
            self._guarded(self._retry_budget, connection, now)
        if now >= self._next_deadline:
            self._expire(now)
        if not self._listening and not self.draining and now >= self._accept_paused_until:
            self._selector.register(self.listener, selectors.EVENT_READ, None)
            self._listening = True
        if self.draining:
            self._drain_idle()

    def _guarded(self, step, connection: Connection, now: float) -> None:
        try:
            step(connection, now)
        except Exception:  # noqa: BLE001 - one connection's bug must not stop the loop
            log.exception("HTTP connection from %s failed", connection.address)
            self._close(connection)

    # ------------------------------------------------------------------ accept

    def _accept(self, now: float) -> None:
        for _ in range(_ACCEPTS_PER_EVENT):
            try:
                sock, address = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of file descriptors: make room and stop accepting for a moment
                    # (the listener would otherwise wake the loop in a busy spin).
                    log.warning("Cannot accept HTTP connections: %s", error.strerror)
                    self._evict(now)
                    self._pause_accepting(now)
                return  # ECONNABORTED and the like: the client went away
            if self.draining:
                sock.close()
                continue
            if len(self._connections) >= self.max_connections and not self._evict(now):
                self._refuse(sock)
                continue
            sock.setblocking(False)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            connection = Connection(sock, address, now)
            self._connections[sock.fileno()] = connection
            self._enter(connection, IDLE, now + self.idle_timeout)
            self._register(connection)
            self._count_open()

    def _pause_accepting(self, now: float) -> None:
        if self._listening:
            self._selector.unregister(self.listener)
            self._listening = False
        self._accept_paused_until = now + 0.1

    def _evict(self, now: float) -> bool:
        """Closes the oldest lingering, idle or header-sending connection, if any.

        An idle connection whose request is already waiting to be read is not idle:
        it is passed over (among the oldest :data:`_EVICTION_SCAN`)."""
        for state in _EVICTABLE:
            for victim in itertools.islice(self._by_state[state], _EVICTION_SCAN):
                if state == IDLE and _has_pending_bytes(victim.sock):
                    continue
                self._close(victim, "evicted" if state != LINGER else None)
                return True
        return False

    def _refuse(self, sock: socket.socket) -> None:
        message = (
            f"The server has {len(self._connections)} HTTP connections open, its limit "
            "(--rest_api_max_connections), all of them sending or waiting for an answer; "
            "try again later"
        )
        headers = [("Content-Type", "application/json"), ("Connection", "close")]
        self.metrics.rest_connections_closed.increment("refused")
        try:
            sock.setblocking(False)
            sock.send(response_bytes(503, headers, error_body(message)))
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            sock.close()
            return
        self._selector.register(sock, selectors.EVENT_READ, "refused")
        self._refused[sock] = time.monotonic() + 1.0
        self._next_deadline = min(self._next_deadline, time.monotonic() + 1.0)

    def _drop_refused(self, sock: socket.socket, now: float, force: bool = False) -> None:
        """Reads and drops what a refused client sends; closes it at its EOF or deadline."""
        if not force:
            try:
                if sock.recv(_HEAD_READ):
                    return
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                pass
        self._refused.pop(sock, None)
        self._selector.unregister(sock)
        sock.close()

    # ------------------------------------------------------------------ reading

    def _on_readable(self, connection: Connection, now: float) -> None:
        size = _HEAD_READ
        if connection.state == BODY:
            size = min(_BODY_READ, connection.remaining) if not connection.chunked else _HEAD_READ
            size = max(size, 1)
            if not connection.discard and connection.credit < size:
                if not self._reserve(connection, size - connection.credit, now):
                    return  # read again once the budget has room
        try:
            data = connection.sock.recv(size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client closed (or reset) the connection
            self._close(connection)
            return
        if connection.state == LINGER:
            return  # read and dropped
        if connection.state == BODY:
            connection.credit = max(connection.credit - len(data), 0)
        connection.buffer += data
        self._advance(connection, now)

    def _advance(self, connection: Connection, now: float) -> None:
        if connection.state in (IDLE, HEADERS) and not self._read_head(connection, now):
            return
        if connection.state == BODY:
            self._read_body(connection, now)

    def _read_head(self, connection: Connection, now: float) -> bool:
        """Moves to BODY when the headers are complete (True), else waits for more."""
        buffer = connection.buffer
        if connection.state == IDLE:
            # RFC 9112 2.2: empty lines before a request line are ignored.
            skip = 0
            while skip < len(buffer) and buffer[skip] in (10, 13):
                skip += 1
            del buffer[:skip]
            if not buffer:
                return False
            self._enter(connection, HEADERS, now + self.header_timeout)
        end = _header_end(buffer, connection.scanned)
        if end < 0:
            connection.scanned = len(buffer)
            if len(buffer) > MAX_HEADER_BYTES:
                code = 431 if b"\n" in buffer else 414
                self._answer(connection, code, None, now, "header_too_large")
            return False
        connection.head = bytes(buffer[:end])
        del buffer[:end]
        return self._frame(connection, now)

    def _frame(self, connection: Connection, now: float) -> bool:
        """Reads the body's framing from the headers; True when a body is to be read."""
        first, _, rest = connection.head.partition(b"\n")
        words = first.rstrip(b"\r").split()
        method = words[0].decode("latin-1") if words else ""
        connection.method = method
        headers = None
        if len(words) == 3 and method in METHODS and words[2].startswith(b"HTTP/"):
            try:
                headers = http.client.parse_headers(io.BytesIO(rest))
            except (http.client.HTTPException, ValueError):
                headers = None
        if headers is None:
            # A protocol error: the worker answers it as libevent does, without a body.
            self._dispatch(connection, b"", now)
            return False
        connection.body_deadline = now + self.body_timeout
        if "chunked" in headers.get("Transfer-Encoding", "").lower():
            connection.chunked = True
        else:
            try:
                length = int(headers.get("Content-Length") or 0)
                if length < 0:
                    raise ValueError(f"negative Content-Length: {length}")
            except ValueError as error:
                self._answer(connection, 400, f"Could not read the request body: {error}", now)
                return False
            if length > self.max_body_bytes:
                if length > DRAIN_LIMIT:
                    self._answer_too_large(connection, length, now)
                    return False
                connection.discard = True
                connection.declared = length
            connection.remaining = length
        expects_body = connection.chunked or connection.remaining > 0
        if (
            expects_body
            and words[2] >= b"HTTP/1.1"
            and headers.get("Expect", "").lower() == "100-continue"
        ):
            self._send(connection, b"HTTP/1.1 100 Continue\r\n\r\n")
        self._enter(connection, BODY, connection.body_deadline)
        return True

    def _reserve(self, connection: Connection, count: int, now: float) -> bool:
        """Takes ``count`` bytes of the budget, or waits for them in the BUDGET state."""
        try:
            taken = self.budget.acquire(count, 0, connection.held)
            connection.held += taken
            connection.credit += taken
        except OverBudget:
            if connection.state != BUDGET:
                connection.wanted = count
                connection.budget_deadline = min(now + self.budget_wait(), connection.body_deadline)
                self._unregister(connection)
                self._enter(connection, BUDGET, connection.budget_deadline)
            return False
        if connection.state == BUDGET:
            self._enter(connection, BODY, connection.body_deadline)
            self._register(connection)
        return True

    def _retry_budget(self, connection: Connection, now: float) -> None:
        self._reserve(connection, connection.wanted, now)

    def _read_body(self, connection: Connection, now: float) -> None:
        if connection.chunked:
            self._read_chunked(connection, now)
            return
        buffer = connection.buffer
        take = min(connection.remaining, len(buffer))
        if take:
            if not connection.discard:
                connection.parts.append(bytes(buffer[:take]))
            del buffer[:take]
            connection.remaining -= take
        if connection.remaining == 0:
            if connection.discard:
                self._answer_too_large(connection, connection.declared, now)
            else:
                self._dispatch(connection, b"".join(connection.parts), now)

    def _read_chunked(self, connection: Connection, now: float) -> None:
        buffer = connection.buffer
        while True:
            if connection.chunk_left > 0:
                take = min(connection.chunk_left, len(buffer))
                if not take:
                    return
                if not connection.discard:
                    connection.parts.append(bytes(buffer[:take]))
                del buffer[:take]
                connection.chunk_left -= take
                if connection.chunk_left == 0:
                    connection.chunk_left = -1
                continue
            end = buffer.find(b"\n")
            if end < 0:
                if len(buffer) > 65536:
                    self._answer(connection, 400, "Could not read the request body: a chunk "
                                 "size line is longer than 65536 bytes", now)  # fmt: skip
                return
            line = bytes(buffer[: end + 1])
            if connection.chunk_left == -1:  # the line end after a chunk's data
                del buffer[: end + 1]
                connection.chunk_left = 0
                continue
            if connection.trailer:
                del buffer[: end + 1]
                if line in (b"\r\n", b"\n"):
                    break
                continue
            try:
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size < 0:
                    raise ValueError(f"negative chunk size: {size}")
            except ValueError as error:
                self._answer(connection, 400, f"Could not read the request body: {error}", now)
                return
            if size == 0:
                connection.trailer = True
                del buffer[: end + 1]
                continue
            if connection.size + size > self.max_body_bytes and not connection.discard:
                connection.discard = True
                connection.parts.clear()
                self.budget.release(connection.held)
                connection.held = connection.credit = 0
            connection.size += size
            connection.chunk_left = size
            del buffer[: end + 1]
        if connection.discard:
            self._answer_too_large(connection, connection.size, now)
        else:
            self._dispatch(connection, b"".join(connection.parts), now)

    def _dispatch(self, connection: Connection, body: bytes, now: float) -> None:
        request = Request(connection.head, body, connection.held, now)
        connection.held = connection.credit = 0  # the worker releases it
        connection.parts = []
        self._unregister(connection)
        self._enter(connection, BUSY, math.inf)
        self.dispatch(connection, request)

    def _take_returns(self, now: float) -> None:
        while True:
            try:
                connection, close = self._returns.get_nowait()
            except queue.Empty:
                return
            if connection.sock.fileno() < 0:
                continue
            if close or self.draining:
                self._close(connection)
                continue
            connection.sock.setblocking(False)
            connection.new_request()
            self._enter(connection, IDLE, now + self.idle_timeout)
            self._register(connection)
            if connection.buffer:  # a pipelined request already read
                self._guarded(self._advance, connection, now)

    # ------------------------------------------------------------------ answers

    def _send(self, connection: Connection, data: bytes) -> None:
        try:
            connection.sock.send(data)
        except OSError:
            pass

    def _answer(
        self, connection: Connection, code: int, message: str | None, now: float, reason=None
    ) -> None:
        """Answers from the loop (a JSON error, or libevent's page) and closes gracefully."""
        if message is None:
            headers = [("Content-Type", "text/html; charset=ISO-8859-1"), ("Connection", "close")]
            body = error_page(code)
        else:
            headers = [("Content-Type", "application/json"), ("Connection", "close")]
            body = error_body(message)
        if reason:
            self.metrics.rest_connections_closed.increment(reason)
        self._send(connection, response_bytes(code, headers, body, connection.method == "HEAD"))
        self.budget.release(connection.held)
        connection.held = connection.credit = 0
        connection.parts = []
        connection.buffer = bytearray()
        try:
            connection.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self._register(connection)
        self._enter(connection, LINGER, now + LINGER_SECONDS)

    def _answer_too_large(self, connection: Connection, size: int, now: float) -> None:
        self._answer(
            connection,
            413,
            f"Request body of {size} bytes or more is larger than the {self.max_body_bytes} "
            "bytes this server accepts (--rest_api_max_request_bytes)",
            now,
        )

    # ------------------------------------------------------------------ deadlines

    def _expire(self, now: float) -> None:
        upcoming = math.inf
        for connection in list(self._connections.values()):
            if connection.deadline > now:
                upcoming = min(upcoming, connection.deadline)
                continue
            state = connection.state
            if state == IDLE:
                self._close(connection, "idle_timeout")
            elif state == HEADERS:
                self._answer(connection, 408, None, now, "header_timeout")
            elif state == BODY or (state == BUDGET and now >= connection.body_deadline):
                self._answer(
                    connection, 408, "The request body did not arrive in time", now, "body_timeout"
                )
            elif state == BUDGET:
                self._unregister(connection)
                self._answer(
                    connection,
                    429,
                    f"This request's body needs {connection.wanted} more bytes of the "
                    f"{self.budget.limit} "
                    "bytes all requests in progress may hold (--rest_api_max_bytes_in_flight), "
                    "and they did not free up in time",
                    now,
                )
            else:  # LINGER
                self._close(connection)
            if connection.sock.fileno() >= 0:
                upcoming = min(upcoming, connection.deadline)
        self._next_deadline = upcoming

    # ------------------------------------------------------------------ bookkeeping

    def _enter(self, connection: Connection, state: str, deadline: float) -> None:
        old = self._by_state.get(connection.state)
        if old is not None:
            old.pop(connection, None)
        connection.state = state
        connection.deadline = deadline
        if state in self._by_state:
            self._by_state[state][connection] = None
        self._next_deadline = min(self._next_deadline, deadline)

    def _register(self, connection: Connection) -> None:
        if not connection.registered:
            self._selector.register(connection.sock, selectors.EVENT_READ, connection)
            connection.registered = True

    def _unregister(self, connection: Connection) -> None:
        if connection.registered:
            self._selector.unregister(connection.sock)
            connection.registered = False

    def _close(self, connection: Connection, reason: str | None = None) -> None:
        if connection.sock.fileno() < 0:
            return
        self._unregister(connection)
        old = self._by_state.get(connection.state)
        if old is not None:
            old.pop(connection, None)
        self._connections.pop(connection.sock.fileno(), None)
        self.budget.release(connection.held)
        connection.held = connection.credit = 0
        try:
            connection.sock.close()
        except OSError:
            pass
        if reason:
            self.metrics.rest_connections_closed.increment(reason)
        self._count_open()

    def _count_open(self) -> None:
        self.metrics.rest_open_connections.set(value=len(self._connections))
        if not self._connections:
            with self._empty:
                self._empty.notify_all()

    def _drain_idle(self) -> None:
        if self._listening:
            self._selector.unregister(self.listener)
            self._listening = False
            self.listener.close()
        for state in (IDLE, HEADERS, LINGER):
            for connection in list(self._by_state[state]):
                self._close(connection)

    def _close_everything(self) -> None:
        for connection in list(self._connections.values()):
            if connection.state != BUSY:
                self._close(connection)
            else:  # a worker still has it: it finds the socket closed
                try:
                    connection.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        for sock in list(self._refused):
            self._drop_refused(sock, 0.0, force=True)
        try:
            self.listener.close()
        except OSError:
            pass
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()
        with self._empty:
            self._empty.notify_all()
