"""The ranking service: a FastAPI app over one :class:`Ranker` and the target spaces encoded at start-up.

``POST /rank`` ranks queries against a loaded target space (through the :class:`MicroBatcher`, so concurrent
requests share model calls), ``GET /target-spaces`` lists the spaces, ``GET /health`` says it is up and what it
has done, ``GET /`` is a small page to try it. Built by :func:`create_app`; ``python -m uwe_lightning.serve``
(:mod:`uwe_lightning.cli.serve`) loads the model and spaces and runs it with uvicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse

from uwe_lightning.ranking.packed import EncodedTexts
from uwe_lightning.ranking.ranker import Ranker
from uwe_lightning.ranking.results import top_rows
from uwe_lightning.service.batching import MicroBatcher
from uwe_lightning.service.requests import (
    TOO_LARGE,
    Limits,
    RankRequest,
    RequestRejected,
    check_request,
    validation_line,
)

PAGE = Path(__file__).with_name("page.html")
#: nginx's status for "the client closed the request": logged, never received by anyone.
CLIENT_CLOSED = 499
log = logging.getLogger("uwe_lightning.serve")


@dataclass
class ServedSpace:
    """A target space as served: its texts (labels) and ids, encoded once by the ranker at start-up."""

    name: str
    source: str
    ids: list[str]
    labels: list[str]
    encoded: EncodedTexts
    cache_hit: bool = False
    seconds: float = 0.0

    def describe(self) -> dict:
        return {"name": self.name, "source": self.source, "n": len(self.ids), "cache_hit": self.cache_hit}


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets a 413 before the app parses it.

    The body is read here (at most ``max_bytes`` + one chunk are held) and replayed to the app, so a client
    that sends no Content-Length (chunked) is bounded too.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send, int(declared))
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left before its body arrived: nothing to answer
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._reject(send, size)
                return
            if not message.get("more_body", False):
                break
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replayed() -> dict:
            return replay.pop() if replay else await receive()

        await self.app(scope, replayed, send)

    async def _reject(self, send: Any, size: int) -> None:
        body = JSONResponse({"detail": f"body: {size} bytes, at most {self.max_bytes} (limits.max_body_bytes); "
                                       "send fewer or shorter queries"}, status_code=TOO_LARGE)
        await body({"type": "http"}, None, send)


async def _until_disconnected(request: Request) -> None:
    """Returns when the client goes away (the body is read already, so ``receive`` only reports that)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def create_app(
    ranker: Ranker,
    spaces: Mapping[str, ServedSpace],
    default_space: str | None = None,
    directions: Mapping[str, str] | None = None,
    limits: Limits | None = None,
    max_batch_queries: int = 64,
    max_wait_ms: float = 2.0,
) -> FastAPI:
    """The service over ``ranker`` and its loaded ``spaces`` (name -> space); the first is the default.

    ``directions``: ``job2skill`` / ``skill2job`` -> the space each ranks. ``max_batch_queries`` and
    ``max_wait_ms`` size the micro-batches (see :class:`MicroBatcher`).
    """
    if not spaces:
        raise ValueError("the service needs at least one target space")
    spaces = dict(spaces)
    default_space = default_space or next(iter(spaces))
    if default_space not in spaces:
        raise ValueError(f"default_target {default_space!r} is not among the loaded spaces {sorted(spaces)}")
    directions = dict(directions or {})
    limits = limits or Limits()
    if max_batch_queries < limits.max_queries:
        raise ValueError(f"batching.max_queries ({max_batch_queries}) must be >= limits.max_queries "
                         f"({limits.max_queries}): a request is never split over model calls")

    def rank_fn(queries: list[str], key: tuple[str, int]) -> list[list[dict]]:
        name, k = key
        space = spaces[name]
        scores, index = ranker.rank(queries, space.encoded, k=k)
        return top_rows(scores, index, space.ids, space.labels)

    batcher = MicroBatcher(rank_fn, max_queries=max_batch_queries, max_wait_ms=max_wait_ms)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        await batcher.close()

    # No /docs: Swagger UI loads its assets from a CDN; the schema is at /openapi.json.
    app = FastAPI(title="UWE ranking service", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.batcher, app.state.ranker, app.state.spaces = batcher, ranker, spaces
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_line(exc.errors())}, status_code=422)

    @app.exception_handler(RequestRejected)
    async def _rejected(_: Request, exc: RequestRejected) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @app.get("/health")
    async def health() -> dict:
        return {
            "status": "ok", "model": ranker.model_id, "scorer": ranker.spec.name, "device": str(ranker.device),
            "target_spaces": list(spaces), "default_target_space": default_space,
            "limits": limits.__dict__, "batching": batcher.stats.as_dict(),
        }

    @app.get("/target-spaces")
    async def target_spaces() -> dict:
        by_space = {space: sorted(d for d, s in directions.items() if s == space) for space in spaces}
        return {"default": default_space,
                "target_spaces": [{**s.describe(), "directions": by_space[s.name]} for s in spaces.values()]}

    @app.post("/rank")
    async def rank(body: RankRequest, request: Request) -> Any:
        name = check_request(body, limits, list(spaces), default_space, directions)
        k = min(body.k, len(spaces[name].ids))
        work = asyncio.ensure_future(batcher.submit([q.strip() for q in body.queries], (name, k)))
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
        except Exception:
            log.exception("ranking failed")
            return JSONResponse({"detail": "ranking failed inside the server; see its log"}, status_code=500)
        return {
            "model": ranker.model_id, "scorer": ranker.spec.name, "target_space": name, "k": k,
            "results": [{"query": q, "top": top} for q, top in zip(body.queries, rows, strict=True)],
        }

    return app
