"""The REST port's connections: a capped table with deadlines, over tornado's streams.

tornado (:mod:`http_server`) reads and frames the requests. What it has no
setting for, and TF Serving's clients see, is kept here:

* at most ``max_connections`` are open (``--rest_api_max_connections``). At the
  cap, a new connection closes the oldest one already answered and closing,
  else the oldest idle one, else the oldest one still sending its headers; when
  every open connection is sending a body or being answered, the new one gets
  503 (``Connection: close``) at once;
* an idle connection (fresh, or kept alive after an answer) is closed after
  ``idle_timeout`` seconds, silently (``--rest_api_idle_timeout_in_ms``);
* the headers must all arrive within ``header_timeout`` seconds of their first
  byte (``--rest_api_header_timeout_in_ms``), or 408 (tornado's header timeout
  runs from the end of the previous request and closes without an answer);
* the body within ``body_timeout`` seconds of the headers, or 408 with a JSON
  error (tornado's body timeout closes without an answer); an answer must be
  taken by the client within that time too;
* headers over :data:`MAX_HEADER_BYTES` get 431 (tornado closes silently);
* a request head with a bare CR or LF is refused (400): tornado 6.6 still reads
  a bare LF as a line end, 6.7 will refuse it (its ``HTTPHeaders.parse_line``
  docs) and a proxy in front may not agree on where the line ends.

An error answer is one write, then the write side is shut (the client reads
EOF right after it) and what the client still sends is read and dropped for a
while (:data:`LINGER_SECONDS`), so that closing does not reset the connection
before the client has read the answer. Every closing for these reasons is
counted (``:keras_vit:serving:rest:connections_closed{reason=...}``), and the
open connections are a gauge (``:keras_vit:serving:rest:open_connections``).
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import itertools
import re
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from http import HTTPStatus

import tornado
from tornado import gen, httputil, iostream
from tornado.concurrent import Future, future_add_done_callback

from serving.server.json_tensor import error_body
from serving.server.logs import get_logger

log = get_logger()

# Request line plus headers, at most (libevent sets no limit; TF Serving none either).
MAX_HEADER_BYTES = 64 * 1024
# After an error answer, what the client still sends is read and dropped for this long
# (since its last byte), so that closing does not reset the connection before it reads.
LINGER_SECONDS = 2.0
# A body refused for its declared size is still read and dropped up to this size (so
# that the client gets the 413 instead of a broken pipe).
DRAIN_LIMIT = 1024**3
_READ = 64 * 1024
_EVICTION_SCAN = 64
_YOUNG_HEADERS_SECONDS = 1.0
_EXPIRE_BATCH = 64  # connections timed out per turn of the loop
# Refused connections read (and drop) what they send for a moment; at most this many.
_REFUSED_LINGERING = 64
_REFUSED_SECONDS = 1.0

# Connection states. WAIT: waiting for the first byte of a request (idle); HEADERS: its
# headers are arriving; BODY: its body; BUSY: a worker answers it; WRITE: the answer is
# being sent; LINGER / DRAIN: answered and closing (tornado / we read what still comes).
WAIT, HEADERS, BODY, BUSY, WRITE, LINGER, DRAIN = (
    "wait", "headers", "body", "busy", "write", "linger", "drain"
)  # fmt: skip
# Where the table looks for a connection to close when it is at the cap, in order.
_EVICTABLE = (LINGER, DRAIN, WAIT, HEADERS)
_BARE_CR_OR_LF = re.compile(rb"\r(?!\n)|(?<!\r)\n")
# tornado takes a bare LF as a header line end until 6.7 (deprecated in
# tornadoweb/tornado#3477; HTTPHeaders.parse_line's docs name the release that drops it):
# until then WatchedStream refuses it (tests/serving/test_http_framing.py notices the fix).
TORNADO_READS_BARE_LF = tornado.version_info < (6, 7)


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
PAGE_HEADERS = [("Content-Type", "text/html; charset=ISO-8859-1"), ("Connection", "close")]


def error_page(code: int) -> bytes:
    reason = reason_phrase(code)
    return _ERROR_PAGE.format(code=code, reason=reason).encode("latin-1")


def page_response(code: int) -> bytes:
    """libevent's error answer (HTML page, ``Connection: close``)."""
    return response_bytes(code, PAGE_HEADERS, error_page(code))


class Conn:
    """One client connection in the table."""

    __slots__ = ("stream", "state", "since", "exchange")

    def __init__(self, stream: WatchedStream) -> None:
        self.stream = stream
        self.state = ""
        self.since = 0.0
        self.exchange = None  # the request in progress (http_server._Exchange)

    def has_pending_bytes(self) -> bool:
        """True if bytes of a request wait in the kernel, not yet read by the loop."""
        try:
            return bool(self.stream.socket.recv(1, socket.MSG_PEEK))
        except (OSError, AttributeError):  # nothing waiting (BlockingIOError), or closed
            return False


class WatchedStream(iostream.IOStream):
    """tornado's stream, telling the table when a request's first byte arrives and when
    the connection closes, and refusing a request head with a bare CR or LF."""

    conn: Conn | None = None
    table: ConnectionTable | None = None

    def read_from_fd(self, buf):
        count = super().read_from_fd(buf)
        conn = self.conn
        if count and conn is not None and conn.state == WAIT:
            self.table.enter(conn, HEADERS)
        return count

    def read_until_regex(self, regex: bytes, max_bytes: int | None = None):
        # tornado reads only request heads with this (up to the blank line).
        future = super().read_until_regex(regex, max_bytes)
        if not TORNADO_READS_BARE_LF:
            return future
        checked: Future = Future()

        def check(done: Future) -> None:
            if done.cancelled():
                checked.cancel()
                return
            error = done.exception()
            if error is None and _BARE_CR_OR_LF.search(done.result().lstrip(b"\r\n")):
                error = httputil.HTTPInputError("a bare CR or LF in the request head")
            if error is not None:
                checked.set_exception(error)
            else:
                checked.set_result(done.result())

        future_add_done_callback(future, check)
        return checked

    def close(self, exc_info=False) -> None:
        conn = self.conn
        if not self.closed() and conn is not None:
            if isinstance(exc_info, iostream.UnsatisfiableReadError):
                # No end of the headers (or of a chunk size line) within the limit.
                if conn.state in (WAIT, HEADERS):
                    self.table.count("header_too_large")
                    self._last_words(page_response(431))
                elif conn.state == BODY:
                    self._last_words(page_response(400))
            self.table.closed(conn)
        super().close(exc_info)

    def _last_words(self, data: bytes) -> None:
        try:
            self.socket.send(data)
            self.socket.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class ConnectionTable:
    """The open connections by state, oldest first; their deadlines and the cap."""

    def __init__(
        self,
        metrics,
        *,
        max_connections: int,
        idle_timeout: float,
        header_timeout: float,
        body_timeout: float,
        on_timeout: Callable[[Conn], None],
    ) -> None:
        self.metrics = metrics
        self.max_connections = max(max_connections, 1)
        self.body_timeout = body_timeout
        self.timeouts = {
            WAIT: idle_timeout,
            HEADERS: header_timeout,
            BODY: body_timeout,
            WRITE: body_timeout,
            LINGER: LINGER_SECONDS,
        }
        self.on_timeout = on_timeout
        self.draining = False
        self._states: dict[str, OrderedDict] = {
            state: OrderedDict() for state in (WAIT, HEADERS, BODY, BUSY, WRITE, LINGER, DRAIN)
        }
        self._open = 0
        self._refused_lingering = 0
        self._tasks: set[asyncio.Task] = set()
        self._empty = asyncio.Event()
        self._empty.set()

    def __len__(self) -> int:
        return self._open

    def spawn(self, coroutine) -> asyncio.Task:
        """Runs ``coroutine`` as a task held here until it ends (the loop holds tasks only
        weakly: one collected mid-way would close its connection early)."""
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def count(self, reason: str) -> None:
        self.metrics.rest_connections_closed.increment(reason)

    # ------------------------------------------------------------------ membership

    def admit(self, stream: WatchedStream) -> bool:
        """Takes a new connection in (closing another at the cap); False if refused."""
        if self.draining:
            stream.close()
            return False
        if self._open >= self.max_connections and not self._evict():
            self._refuse(stream)
            return False
        conn = Conn(stream)
        stream.conn, stream.table = conn, self
        self._open += 1
        self._empty.clear()
        self.enter(conn, WAIT)
        self._gauge()
        return True

    def enter(self, conn: Conn, state: str) -> None:
        if conn.state:
            self._states[conn.state].pop(conn, None)
        conn.state = state
        conn.since = time.monotonic()
        self._states[state][conn] = None

    def closed(self, conn: Conn) -> None:
        """The stream of ``conn`` closes (called once, from :class:`WatchedStream`)."""
        self._states[conn.state].pop(conn, None)
        conn.state = LINGER  # whatever tornado still does with it is ignored
        exchange, conn.exchange = conn.exchange, None
        if exchange is not None:
            exchange.drop()
        self._open -= 1
        self._gauge()
        if not self._open:
            self._empty.set()

    def _gauge(self) -> None:
        self.metrics.rest_open_connections.set(value=self._open)

    def _evict(self) -> bool:
        """Closes the oldest closing, idle or header-sending connection, if any.

        An idle connection whose request is already waiting to be read is not idle:
        it is passed over (among the oldest :data:`_EVICTION_SCAN`); nor is one that
        received its first header bytes less than :data:`_YOUNG_HEADERS_SECONDS` ago (its
        whole request may be in tornado's buffer, about to be parsed)."""
        young = time.monotonic() - _YOUNG_HEADERS_SECONDS
        for state in _EVICTABLE:
            for victim in itertools.islice(self._states[state], _EVICTION_SCAN):
                if state == WAIT and victim.has_pending_bytes():
                    continue
                if state == HEADERS and victim.since > young:
                    break  # (oldest first) a request read just now, not yet parsed
                if state not in (LINGER, DRAIN):
                    self.count("evicted")
                victim.stream.close()
                return True
        return False

    def _refuse(self, stream: iostream.IOStream) -> None:
        self.count("refused")
        message = (
            f"The server has {self._open} HTTP connections open, its limit "
            "(--rest_api_max_connections), all of them sending or waiting for an answer; "
            "try again later"
        )
        headers = [("Content-Type", "application/json"), ("Connection", "close")]
        self._answer(stream, response_bytes(503, headers, error_body(message)))
        if self._refused_lingering >= _REFUSED_LINGERING:
            stream.close()
            return
        self._refused_lingering += 1
        task = self.spawn(drain(stream, _REFUSED_SECONDS, _READ * 16))
        task.add_done_callback(lambda _: self._refused_done())

    def _refused_done(self) -> None:
        self._refused_lingering -= 1

    # ------------------------------------------------------------------ answers

    @staticmethod
    def _answer(stream: iostream.IOStream, data: bytes) -> None:
        """Writes ``data``, then shuts the write side (the client reads EOF after it)."""
        if stream.closed():
            return

        def shut(written: Future) -> None:
            if written.exception() is None and stream.socket is not None:
                try:
                    stream.socket.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

        future_add_done_callback(stream.write(data), shut)

    def answer_and_close(
        self,
        conn: Conn,
        data: bytes,
        reason: str | None = None,
        *,
        seconds: float = LINGER_SECONDS,
        limit: int = DRAIN_LIMIT,
    ) -> None:
        """One error answer, then the connection closes; nothing more is read from it.

        What the client still sends is read and dropped (up to ``limit`` bytes, for up
        to ``seconds``, or :data:`LINGER_SECONDS` after its last byte)."""
        if conn.state in (LINGER, DRAIN) or conn.stream.closed():
            return
        if reason:
            self.count(reason)
        exchange, conn.exchange = conn.exchange, None
        if exchange is not None:
            exchange.drop()
        self._answer(conn.stream, data)
        if conn.stream.reading():  # tornado reads (and its delegate drops) what comes
            self.enter(conn, LINGER)
        else:
            self.enter(conn, DRAIN)
            self.spawn(drain(conn.stream, seconds, limit))

    # ------------------------------------------------------------------ deadlines

    def expire(self) -> None:
        """Acts on every connection past its state's deadline (oldest first).

        At most :data:`_EXPIRE_BATCH` at a time: the rest after the loop has served
        what else is ready (a mass of timeouts must not hold other requests up)."""
        now = time.monotonic()
        left = _EXPIRE_BATCH
        for state, timeout in self.timeouts.items():
            waiting = self._states[state]
            while waiting:
                conn = next(iter(waiting))
                if conn.since + timeout > now:
                    break
                if not left:
                    asyncio.get_running_loop().call_soon(self.expire)
                    return
                left -= 1
                if state == LINGER:
                    conn.stream.close()
                else:
                    self.on_timeout(conn)
                if waiting and next(iter(waiting)) is conn:  # never loop on one
                    waiting.pop(conn)

    def close_idle(self) -> None:
        """Draining: closes every connection without a request in progress."""
        self.draining = True
        for state in (WAIT, HEADERS, LINGER):
            for conn in list(self._states[state]):
                conn.stream.close()

    def close_all(self) -> None:
        for states in self._states.values():
            for conn in list(states):
                conn.stream.close()

    async def wait_empty(self) -> None:
        await self._empty.wait()


async def drain(stream: iostream.IOStream, seconds: float, limit: int) -> None:
    """Reads and drops what ``stream`` still sends, then closes it."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    got = 0
    try:
        while got < limit and loop.time() < end:
            # (tornado's own clock is time.time(): a relative timeout, not loop.time()'s.)
            deadline = datetime.timedelta(seconds=min(end - loop.time(), LINGER_SECONDS))
            read = stream.read_bytes(_READ, partial=True)
            got += len(
                await gen.with_timeout(deadline, read, quiet_exceptions=iostream.StreamClosedError)
            )
    except (iostream.StreamClosedError, TimeoutError):
        pass
    finally:
        stream.close()
