"""An asyncio micro-batcher: concurrent requests share one model call, run in a worker thread.

Why: encoding one query costs nearly as much as encoding a handful, so under load the service answers many
requests with one :meth:`Ranker.rank` call instead of one call each. Requests wait at most ``max_wait_ms`` for
company (a lone request pays only that), a batch holds at most ``max_queries`` queries (a request is never
split), and only requests with the same key (target space, k) are ranked together, so every answer is what a
call for that request alone would give (up to float rounding of the batched encoder).

The model call runs in a worker thread (``asyncio.to_thread``), so the event loop keeps accepting requests and
noticing disconnects meanwhile; one call runs at a time (torch already uses every core for it). A request whose
caller went away (its task cancelled) is skipped, or its result dropped; it never fails the others. When a
batch of several requests fails, each request is retried alone, so one bad request cannot fail its neighbours.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

#: ``rank_fn(queries, key) -> one result per query``: the model call, run in a worker thread.
RankFn = Callable[[list[str], Any], Sequence[Any]]


@dataclass
class _Pending:
    queries: list[str]
    key: Hashable
    future: asyncio.Future


@dataclass
class BatchStats:
    """What the batcher has done so far (reported by ``/health`` and the load test)."""

    requests: int = 0
    queries: int = 0
    calls: int = 0
    largest_call: int = 0  # queries in the largest model call
    dropped: int = 0  # requests whose caller went away before their answer
    failed_calls: int = 0

    def as_dict(self) -> dict:
        return {**self.__dict__, "mean_queries_per_call": round(self.queries / self.calls, 2) if self.calls else 0}


@dataclass
class MicroBatcher:
    """Collects concurrent :meth:`submit` calls into batched ``rank_fn`` calls (see the module docstring)."""

    rank_fn: RankFn
    max_queries: int = 64
    max_wait_ms: float = 2.0
    stats: BatchStats = field(default_factory=BatchStats)

    def __post_init__(self) -> None:
        if self.max_queries < 1:
            raise ValueError(f"max_queries must be >= 1, got {self.max_queries}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task | None = None
        self._carry: _Pending | None = None

    async def submit(self, queries: list[str], key: Hashable) -> list[Any]:
        """One result per query of ``queries``, ranked in a batch with other requests of the same ``key``."""
        if not queries:
            raise ValueError("submit needs at least one query")
        self._ensure_worker()
        assert self._queue is not None
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(list(queries), key, future))
        self.stats.requests += 1
        return await future  # a cancelled caller cancels the future: the worker then skips it

    def _ensure_worker(self) -> None:
        """Start the worker on first use, in the running loop (a lifespan is not needed, e.g. in tests)."""
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done() or self._worker.get_loop() is not loop:
            if self._queue is None or self._worker is None or self._worker.get_loop() is not loop:
                self._queue, self._carry = asyncio.Queue(), None  # a new event loop (e.g. another test client)
            self._worker = loop.create_task(self._work(), name="uwe-micro-batcher")

    async def close(self) -> None:
        """Stop the worker; requests still waiting are cancelled."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        pending = [self._carry] if self._carry else []
        while self._queue is not None and not self._queue.empty():
            pending.append(self._queue.get_nowait())
        for item in pending:
            item.future.cancel()
        self._carry = None

    # -- worker ----------------------------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            batch = await self._collect()
            groups: dict[Hashable, list[_Pending]] = {}
            for item in batch:
                if item.future.done():  # the caller went away while it waited
                    self.stats.dropped += 1
                    continue
                groups.setdefault(item.key, []).append(item)
            for key, items in groups.items():
                await self._answer(key, items)

    async def _collect(self) -> list[_Pending]:
        """The next batch: the first waiting request, then whatever arrives within ``max_wait_ms``."""
        assert self._queue is not None
        first, self._carry = self._carry or await self._queue.get(), None
        batch, n = [first], len(first.queries)
        n = self._drain(batch, n)
        if n < self.max_queries and self._carry is None and self.max_wait_ms > 0:
            await asyncio.sleep(self.max_wait_ms / 1000)
            self._drain(batch, n)
        return batch

    def _drain(self, batch: list[_Pending], n: int) -> int:
        assert self._queue is not None
        while self._carry is None and not self._queue.empty():
            item = self._queue.get_nowait()
            if n + len(item.queries) > self.max_queries:
                self._carry = item  # the first of the next batch
                break
            batch.append(item)
            n += len(item.queries)
        return n

    async def _answer(self, key: Hashable, items: list[_Pending]) -> None:
        queries = [q for item in items for q in item.queries]
        try:
            results = await self._call(queries, key)
        except Exception as err:
            self.stats.failed_calls += 1
            if len(items) == 1:
                _settle(items[0].future, error=err)
                return
            for item in items:  # find the request at fault: each alone
                if not item.future.done():
                    await self._answer(key, [item])
            return
        start = 0
        for item in items:
            part = list(results[start : start + len(item.queries)])
            start += len(item.queries)
            if not _settle(item.future, result=part):
                self.stats.dropped += 1

    async def _call(self, queries: list[str], key: Hashable) -> Sequence[Any]:
        self.stats.calls += 1
        self.stats.queries += len(queries)
        self.stats.largest_call = max(self.stats.largest_call, len(queries))
        results = await asyncio.to_thread(self.rank_fn, queries, key)
        if len(results) != len(queries):
            raise RuntimeError(f"rank_fn returned {len(results)} results for {len(queries)} queries")
        return results


def _settle(future: asyncio.Future, result: Any = None, error: BaseException | None = None) -> bool:
    """Set the future's outcome unless its caller already went away; True when it was set."""
    if future.done():
        return False
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
    return True
