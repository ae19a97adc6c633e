"""The HTTP protocol the service runs under uvicorn: h11 with a deadline on a request's head.

uvicorn gives a connection no deadline between its first byte and the end of the request's headers (nor to a
connection that sends nothing): a client that sends half a request line or header block and stalls holds a
connection, and its buffer, for ever. Many such clients exhaust the server's file descriptors while costing
the client nothing (slowloris). :class:`HeadDeadlineH11Protocol` closes a connection whose request head is not
complete within ``header_timeout_s`` of the connection (or, on a kept-alive connection, of the next request's
first byte), with a ``408`` status line; the body has its own deadline (``body_timeout_s``, in
:mod:`uwe_lightning.service.app`).
"""

from __future__ import annotations

import asyncio
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class HeadDeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with :attr:`header_timeout_s` on the request head (see the module docstring).

    uvicorn builds the protocol itself (``http=`` of ``uvicorn.Config``), so the deadline is a class attribute:
    :func:`with_head_deadline` makes a subclass that carries it.
    """

    header_timeout_s: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._watch_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _waiting_for_head(self) -> bool:
        """Bytes of a next request arrived (or none yet on a new connection), and its head is not complete."""
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return False
        return self.timeout_keep_alive_task is None  # a kept-alive idle connection has uvicorn's own deadline

    def _watch_head(self) -> None:
        if not self._waiting_for_head():
            self._stop_head_timer()
        elif self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if getattr(self, "_head_timer", None) is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._waiting_for_head():
            return
        log.warning("%s: request head not received within %g s (header_timeout_s); connection closed",
                    "{}:{}".format(*self.client) if self.client else "client", self.header_timeout_s)
        self.transport.write(REQUEST_TIMEOUT)
        self.transport.close()


def with_head_deadline(header_timeout_s: float) -> type[HeadDeadlineH11Protocol]:
    """The protocol class for ``uvicorn.Config(http=...)`` with this deadline (seconds, > 0)."""
    if not header_timeout_s > 0:
        raise ValueError(f"header_timeout_s must be > 0, got {header_timeout_s}")
    return type("HeadDeadlineH11Protocol", (HeadDeadlineH11Protocol,), {"header_timeout_s": float(header_timeout_s)})
