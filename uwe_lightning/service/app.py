"""The ranking service: a FastAPI app over one :class:`Ranker` and the target spaces encoded at start-up.

``POST /rank`` ranks queries against a loaded target space (through the :class:`MicroBatcher`, so concurrent
requests share model calls and heavy ones are split so that they cannot hold light ones), ``GET /target-spaces``
lists the spaces, ``GET /health`` says it is up and what it has done, ``GET /`` is a small page to try it. Built by
:func:`create_app`; ``python -m uwe_lightning.serve`` (:mod:`uwe_lightning.cli.serve`) loads the model and spaces
and runs it with uvicorn.

One client cannot stall or poison the others: text the model cannot take is a 422 before it is queued; the
queue is bounded (503 with Retry-After) and each request has a deadline; a body must arrive within
``body_timeout_s`` (408); and only the ``Host`` names in ``allowed_hosts`` are answered (421), so a web page cannot
reach this unauthenticated loopback service through DNS rebinding. Every error is ``{"detail": "<one line>"}``,
as ``/openapi.json`` states, together with every limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import ipaddress
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from uwe_lightning.ranking.index import TargetIndex
from uwe_lightning.ranking.packed import EncodedTexts
from uwe_lightning.ranking.ranker import Ranker
from uwe_lightning.ranking.results import top_rows
from uwe_lightning.service.batching import DeadlineExceeded, MicroBatcher, Overloaded, one_line
from uwe_lightning.service.requests import (
    INVALID,
    TOO_LARGE,
    ErrorDetail,
    Limits,
    RankRequest,
    RankResponse,
    RequestRejected,
    TokenCounter,
    body_error_line,
    check_request,
    query_costs,
    request_schema,
    validation_line,
)

PAGE = Path(__file__).with_name("page.html")
#: nginx's status for "the client closed the request": logged, never received by anyone.
CLIENT_CLOSED = 499
TIMEOUT = 408
MISDIRECTED = 421
BUSY = 503
#: The ``Host`` names answered by default: this machine's loopback names, with any port.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
log = logging.getLogger("uwe_lightning.serve")


@dataclass
class ServedSpace:
    """A target space as served: its texts (labels) and ids, and what ranks them: the space encoded once by the
    ranker at start-up, or a :class:`~uwe_lightning.ranking.index.TargetIndex` (exact, or an engine)."""

    name: str
    source: str
    ids: list[str]
    labels: list[str]
    encoded: EncodedTexts | TargetIndex
    cache_hit: bool = False
    seconds: float = 0.0

    def describe(self) -> dict:
        return {"name": self.name, "source": self.source, "n": len(self.ids), "cache_hit": self.cache_hit}


async def _reply(send: Any, status: int, detail: str, headers: Mapping[str, str] | None = None) -> None:
    """Answer ``{"detail": ...}`` from an ASGI middleware (before the app has seen the request)."""
    await JSONResponse({"detail": detail}, status_code=status, headers=dict(headers or {}))({"type": "http"}, None, send)


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets a 413, and one not received within ``timeout_s``
    a 408 (and the connection is closed), before the app parses it.

    The body is read here (at most ``max_bytes`` + one chunk are held) and replayed to the app, so a client
    that sends no Content-Length (chunked) is bounded too. The timeout counts from the request's headers to its
    last body byte, so a client that trickles a byte at a time is cut off as well as one that stalls.
    """

    def __init__(self, app: Any, max_bytes: int, timeout_s: float | None = None) -> None:
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(send, int(declared))
            return
        loop = asyncio.get_running_loop()
        until = None if self.timeout_s is None else loop.time() + self.timeout_s
        chunks, size = [], 0
        while True:
            try:
                message = await (receive() if until is None else asyncio.wait_for(receive(), until - loop.time()))
            except asyncio.TimeoutError:
                log.info("a request body did not arrive within %g s (%d bytes received): 408", self.timeout_s, size)
                await _reply(send, TIMEOUT, f"body: not received within {self.timeout_s:g} s (body_timeout_s); "
                                            "send the whole body at once", {"connection": "close"})
                return
            if message["type"] == "http.disconnect":
                return  # the client left before its body arrived: nothing to answer
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._too_large(send, size)
                return
            if not message.get("more_body", False):
                break
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replayed() -> dict:
            return replay.pop() if replay else await receive()

        await self.app(scope, replayed, send)

    async def _too_large(self, send: Any, size: int) -> None:
        await _reply(send, TOO_LARGE, f"body: {size} bytes, at most {self.max_bytes} (limits.max_body_bytes); "
                                      "send fewer or shorter queries")


def host_name(value: str) -> str:
    """A ``Host`` header (or an ``allowed_hosts`` entry) as the name it compares by: lower case, no port, no
    trailing dot; IPv6 in brackets.

    >>> host_name("LocalHost:8080"), host_name("[::1]:80"), host_name("::1"), host_name("example.org.")
    ('localhost', '[::1]', '[::1]', 'example.org')
    """
    value = value.strip().lower()
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(value).version == 6:
            return f"[{value}]"
    if value.startswith("["):
        end = value.find("]")
        return value[: end + 1] if end > 0 else value
    name, colon, port = value.rpartition(":")
    if colon and (port.isdigit() or not port):
        value = name
    return value.rstrip(".") if value != "." else value


class HostAllowlist:
    """ASGI middleware: only requests whose ``Host`` names an allowed host (any port) are answered; others get a
    421. Against DNS rebinding: a web page on another name that resolves to 127.0.0.1 still sends its own name.
    ``"*"`` among ``allowed`` turns the check off."""

    def __init__(self, app: Any, allowed: Sequence[str]) -> None:
        self.app, self.any = app, "*" in allowed
        self.allowed = frozenset(host_name(h) for h in allowed if h != "*")

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if self.any or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
        if host_name(raw) in self.allowed:
            await self.app(scope, receive, send)
            return
        shown = raw if len(raw) <= 80 else raw[:77] + "..."
        await _reply(send, MISDIRECTED, f"host: {shown!r} is not served here; allowed: {sorted(self.allowed)} "
                                        "(allowed_hosts in conf/serve.yaml, a guard against DNS rebinding)")


def token_counter(ranker: Ranker) -> TokenCounter | None:
    """Per text its token count at the ranker's limit, by a private copy of the model's tokenizer (None when the
    model has none: costs are then characters).

    A copy, behind a lock: a Hugging Face fast tokenizer keeps its truncation settings as state, and changing them
    while another thread encodes with it fails ("Already borrowed"); the model's own copy is the worker's.
    """
    encoder = ranker.encoder
    tokenizer = getattr(encoder, "tokenizer", None) or getattr(getattr(encoder, "backbone", None), "tokenizer", None)
    if tokenizer is None or not callable(tokenizer):
        return None
    with contextlib.suppress(Exception):  # a tokenizer that cannot be copied: the lock still serialises ours
        tokenizer = copy.deepcopy(tokenizer)
    limit = ranker.effective_max_length()
    lock = threading.Lock()

    def count(texts: list[str]) -> list[int]:
        with lock:
            ids = tokenizer(texts, truncation=True, max_length=limit, return_attention_mask=False,
                            return_token_type_ids=False)["input_ids"]
        return [len(row) for row in ids]

    return count


def _error(description: str, retry: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"model": ErrorDetail, "description": description}
    if retry:
        out["headers"] = {"Retry-After": {"description": "seconds to wait before trying again",
                                          "schema": {"type": "integer", "minimum": 1}}}
    return out


RANK_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": RankResponse, "description": "one result per query, in the order sent"},
    408: _error("the body did not arrive within body_timeout_s; the connection is closed"),
    413: _error("over a size limit: queries per request, characters per query, bytes of body"),
    422: _error("a bad value: a field's type or range, an unknown field or target space, empty or invalid text, "
                "a body that is not UTF-8 JSON"),
    500: _error("the model failed on this request (the server's log has one line on it)"),
    503: _error("busy: the queue is full (queue.max_requests), or the request was not ranked within its deadline "
                "(queue.deadline_s)", retry=True),
}


def create_app(
    ranker: Ranker,
    spaces: Mapping[str, ServedSpace],
    default_space: str | None = None,
    directions: Mapping[str, str] | None = None,
    limits: Limits | None = None,
    max_batch_queries: int = 64,
    max_wait_ms: float = 2.0,
    max_batch_tokens: int = 1024,
    max_pending: int = 256,
    deadline_s: float | None = 30.0,
    body_timeout_s: float | None = 10.0,
    allowed_hosts: Sequence[str] = LOOPBACK_HOSTS,
    count_tokens: TokenCounter | None = None,
) -> FastAPI:
    """The service over ``ranker`` and its loaded ``spaces`` (name -> space); the first is the default.

    ``directions``: ``job2skill`` / ``skill2job`` -> the space each ranks. ``max_batch_queries``,
    ``max_batch_tokens``, ``max_wait_ms``, ``max_pending`` and ``deadline_s`` shape the scheduling (see
    :class:`MicroBatcher`); ``count_tokens``: the query cost (default: the ranker's tokenizer, see
    :func:`token_counter`).
    """
    if not spaces:
        raise ValueError("the service needs at least one target space")
    spaces = dict(spaces)
    default_space = default_space or next(iter(spaces))
    if default_space not in spaces:
        raise ValueError(f"default_target {default_space!r} is not among the loaded spaces {sorted(spaces)}")
    directions = dict(directions or {})
    limits = limits or Limits()
    if body_timeout_s is not None and not body_timeout_s > 0:
        raise ValueError(f"body_timeout_s must be > 0 or None, got {body_timeout_s}")
    if not allowed_hosts or not all(isinstance(h, str) and h.strip() for h in allowed_hosts):
        raise ValueError(f"allowed_hosts must list host names (or '*'), got {list(allowed_hosts)!r}")
    count = count_tokens or token_counter(ranker)

    def rank_fn(queries: list[str], key: tuple[str, int]) -> list[list[dict]]:
        name, k = key
        space = spaces[name]
        scores, index = ranker.rank(queries, space.encoded, k=k)
        return top_rows(scores, index, space.ids, space.labels)

    batcher = MicroBatcher(rank_fn, max_queries=max_batch_queries, max_wait_ms=max_wait_ms,
                           max_tokens=max_batch_tokens, max_pending=max_pending, deadline_s=deadline_s)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        await batcher.close()

    # No /docs: Swagger UI loads its assets from a CDN; the schema is at /openapi.json.
    app = FastAPI(title="UWE ranking service", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.batcher, app.state.ranker, app.state.spaces = batcher, ranker, spaces
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes, timeout_s=body_timeout_s)
    app.add_middleware(HostAllowlist, allowed=list(allowed_hosts))  # outermost: a foreign Host's body is not read

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_line(exc.errors())}, status_code=INVALID)

    @app.exception_handler(RequestRejected)
    async def _rejected(_: Request, exc: RequestRejected) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI answers a body its JSON parser failed on for a reason other than syntax (not UTF-8, nested too
        # deep) with a generic 400 raised from that error: say which, as a 422 like every other bad body.
        if exc.status_code == 400 and exc.__cause__ is not None:
            return JSONResponse({"detail": body_error_line(exc.__cause__)}, status_code=INVALID)
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    def openapi() -> dict[str, Any]:
        """FastAPI's schema with the request's real limits (:func:`request_schema`) and the 421 of every path."""
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes,
                                 description=f"Limits: {limits.__dict__}; every error is {{\"detail\": \"<one line>\"}}.")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components["RankRequest"] = request_schema(limits, list(spaces), directions)
            for operations in schema["paths"].values():
                for operation in operations.values():
                    operation["responses"].setdefault(str(MISDIRECTED), {
                        "description": "the Host header names no host in allowed_hosts",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorDetail"}}},
                    })
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @app.get("/health")
    async def health() -> dict:
        return {
            "status": "ok", "model": ranker.model_id, "scorer": ranker.spec.name, "device": str(ranker.device),
            "target_spaces": list(spaces), "default_target_space": default_space,
            "limits": limits.__dict__, "batching": {**batcher.stats.as_dict(), "pending": batcher.pending},
        }

    @app.get("/target-spaces")
    async def target_spaces() -> dict:
        by_space = {space: sorted(d for d, s in directions.items() if s == space) for space in spaces}
        return {"default": default_space,
                "target_spaces": [{**s.describe(), "directions": by_space[s.name]} for s in spaces.values()]}

    @app.post("/rank", response_model=None, responses=RANK_RESPONSES)
    async def rank(body: RankRequest, request: Request) -> JSONResponse:
        name = check_request(body, limits, list(spaces), default_space, directions)
        k = min(body.k, len(spaces[name].ids))
        texts = [q.strip() for q in body.queries]
        costs = await asyncio.to_thread(query_costs, texts, count)  # a 422 for text the tokenizer refuses
        work = asyncio.ensure_future(batcher.submit(texts, (name, k), costs=costs))
        gone = asyncio.ensure_future(_until_disconnected(request))
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:  # also when this handler is cancelled: nothing is left running for a request nobody awaits
            gone.cancel()
            left = not work.done()
            if left:
                work.cancel()
        if left:
            log.info("client went away before its %d queries were ranked", len(body.queries))
            return JSONResponse({"detail": "client closed the request"}, status_code=CLIENT_CLOSED)
        try:
            rows = work.result()
        except Overloaded as err:
            return JSONResponse({"detail": f"busy: {err.pending} requests are waiting (queue.max_requests); retry "
                                           f"in {err.retry_after} s"}, BUSY, {"retry-after": str(err.retry_after)})
        except DeadlineExceeded as err:
            log.info("a request of %d queries passed its deadline of %g s", len(texts), err.seconds)
            return JSONResponse({"detail": f"deadline: not ranked within {err.seconds:g} s (queue.deadline_s), the "
                                           f"service is busy; retry in {err.retry_after} s or send fewer or shorter "
                                           "queries"}, BUSY, {"retry-after": str(err.retry_after)})
        except Exception as err:
            log.error("ranking failed for a request of %d queries: %s", len(texts), one_line(err))
            return JSONResponse({"detail": "ranking failed inside the server; see its log"}, status_code=500)
        return JSONResponse({
            "model": ranker.model_id, "scorer": ranker.spec.name, "target_space": name, "k": k,
            "results": [{"query": q, "top": top} for q, top in zip(body.queries, rows, strict=True)],
        })

    return app


async def _until_disconnected(request: Request) -> None:
    """Returns when the client goes away (the body is read already, so ``receive`` only reports that)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
