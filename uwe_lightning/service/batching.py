"""The service's scheduler: concurrent requests share model calls, scheduled by cost, heavy ones in chunks.

Why: encoding one query costs nearly as much as encoding a handful, so concurrent requests with the same key
(target space, k) share one :meth:`Ranker.rank` call. But one call runs at a time (torch already uses every core
for it), so a first-come queue of whole requests lets one heavy request (64 long queries: seconds of work) hold
every light request behind it, and a few of them hold it for tens of seconds.

How:

- **Cost.** Each query has a cost, its token count at the model's limit (the caller measures it; characters + 2
  without one). A model call holds at most ``max_queries`` queries and ``max_tokens`` of cost (always at least
  one query), so a heavy request is split into chunks over several calls. Its answer is assembled in query order;
  each query is ranked on its own, so it equals what one call for the request would give (up to float rounding
  of the batched encoder).
- **Order: shortest remaining cost first.** A call starts with the request that has the least work left (ties:
  the earlier one), and is filled with the next queries of other requests of that key in the same order. A light
  request that arrives behind heavy ones is ranked in the next call: it waits for the call in progress (at most
  ``max_tokens`` of work), never for the heavy requests' work. Heavy requests finish one after another (the one
  furthest along has the least left), not all together late: sharing the model evenly between three requests of
  ~20 s each answered none of them within a 30 s deadline (MiniLM on 2 cores); this order answers the first.
  No aging: the deadline bounds starvation. A heavy request gets no turn only while lighter ones keep the model
  busy all the time (the service is saturated by light work alone), and then it gets a 503 with Retry-After at
  its deadline instead of making every light request wait seconds.
- **Bounds.** At most ``max_pending`` requests wait or run (one more: :class:`Overloaded`, a 503 with a
  Retry-After estimated from the measured throughput); each has a deadline (``deadline_s``; past it:
  :class:`DeadlineExceeded`, and its remaining chunks are dropped).
- **Failures.** When a call shared by several requests fails, they are split into two halves that from then on
  share calls only within their half, and their chunks go back in line; a request alone in a failing call fails.
  A request the model cannot rank fails itself after about log2(n) calls, never its neighbours, and nobody is
  re-ranked alone serially ahead of the line. One log line per failed call.
- **Company.** An idle worker waits ``max_wait_ms`` before the first call so that concurrent requests arrive
  (a lone request pays only that); a busy one finds its company queued behind the call in progress.

The model call runs in a worker thread (``asyncio.to_thread``), so the event loop keeps accepting requests and
noticing disconnects meanwhile. A request whose caller went away (its task cancelled) is skipped, or its result
dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

#: ``rank_fn(queries, key) -> one result per query``: the model call, run in a worker thread.
RankFn = Callable[[list[str], Any], Sequence[Any]]
log = logging.getLogger("uwe_lightning.serve")


class Overloaded(Exception):
    """The queue is full: the request was not taken; ``retry_after`` seconds is the estimated wait."""

    def __init__(self, pending: int, retry_after: int) -> None:
        super().__init__(f"{pending} requests are waiting or being ranked")
        self.pending, self.retry_after = pending, retry_after


class DeadlineExceeded(Exception):
    """The request was not answered within its deadline; its remaining work was dropped."""

    def __init__(self, seconds: float, retry_after: int) -> None:
        super().__init__(f"not ranked within {seconds:g} s")
        self.seconds, self.retry_after = seconds, retry_after


def one_line(err: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message``, at most ``limit`` characters: what a log line or a 4xx can hold."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(eq=False)
class _Job:
    """One request in the scheduler: its queries, their costs, and how far it has got."""

    queries: list[str]
    costs: list[int]
    key: Hashable
    future: asyncio.Future
    seq: int
    left: int  # cost of the queries not yet handed to a model call
    group: int = 0  # after a failed shared call: shares calls only within its group
    next: int = 0  # the first query not yet handed to a model call
    calls: int = 0
    expired: bool = False
    results: list = field(default_factory=list)

    def order(self) -> tuple[int, int]:
        return self.left, self.seq


@dataclass
class BatchStats:
    """What the scheduler has done so far (reported by ``/health`` and the load test)."""

    requests: int = 0
    queries: int = 0
    calls: int = 0
    largest_call: int = 0  # queries in the largest model call
    largest_call_tokens: int = 0  # cost in the largest model call
    split_requests: int = 0  # requests answered over more than one model call
    dropped: int = 0  # requests whose caller went away before their answer
    expired: int = 0  # requests past their deadline
    rejected: int = 0  # requests refused because the queue was full
    failed_calls: int = 0

    def as_dict(self) -> dict:
        return {**self.__dict__, "mean_queries_per_call": round(self.queries / self.calls, 2) if self.calls else 0}


@dataclass
class MicroBatcher:
    """Schedules concurrent :meth:`submit` calls into ``rank_fn`` calls (see the module docstring)."""

    rank_fn: RankFn
    max_queries: int = 64
    max_wait_ms: float = 2.0
    max_tokens: int = 1024
    max_pending: int = 256
    deadline_s: float | None = 30.0
    stats: BatchStats = field(default_factory=BatchStats)

    def __post_init__(self) -> None:
        for name in ("max_queries", "max_tokens", "max_pending"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if self.deadline_s is not None and not self.deadline_s > 0:
            raise ValueError(f"deadline_s must be > 0 or None, got {self.deadline_s}")
        self._jobs: list[_Job] = []
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._seq = itertools.count()
        self._groups = itertools.count(1)
        self._rate: float | None = None  # cost ranked per second, averaged over recent calls

    @property
    def pending(self) -> int:
        """Requests waiting or being ranked."""
        return sum(not job.future.done() for job in self._jobs)

    def retry_after(self) -> int:
        """Seconds until the queued work is likely done (1..60): the Retry-After of a 503."""
        work = sum(job.left for job in self._jobs if not job.future.done())
        seconds = work / self._rate if self._rate else 1.0
        return int(min(60, max(1, math.ceil(seconds))))

    async def submit(self, queries: list[str], key: Hashable, costs: Sequence[int] | None = None,
                     deadline_s: float | None = None) -> list[Any]:
        """One result per query of ``queries``, ranked in calls shared with other requests of the same ``key``.

        ``costs``: per query (default: characters + 2); ``deadline_s``: this request's deadline (default: the
        batcher's). Raises :class:`Overloaded` when the queue is full, :class:`DeadlineExceeded` past the deadline.
        """
        if not queries:
            raise ValueError("submit needs at least one query")
        costs = [len(q) + 2 for q in queries] if costs is None else [max(1, int(c)) for c in costs]
        if len(costs) != len(queries):
            raise ValueError(f"{len(costs)} costs for {len(queries)} queries")
        self._ensure_worker()
        assert self._wake is not None
        self._prune()
        if len(self._jobs) >= self.max_pending:
            self.stats.rejected += 1
            raise Overloaded(len(self._jobs), self.retry_after())
        future = asyncio.get_running_loop().create_future()
        job = _Job(list(queries), costs, key, future, next(self._seq), sum(costs), results=[None] * len(queries))
        self._jobs.append(job)
        self.stats.requests += 1
        self._wake.set()
        deadline = self.deadline_s if deadline_s is None else deadline_s
        try:  # a cancelled caller, or the deadline, cancels the future: the worker then skips the job
            return await asyncio.wait_for(future, deadline)
        except asyncio.TimeoutError:
            job.expired = True
            self.stats.expired += 1
            raise DeadlineExceeded(deadline, self.retry_after()) from None

    def _ensure_worker(self) -> None:
        """Start the worker on first use, in the running loop (a lifespan is not needed, e.g. in tests)."""
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done() or self._worker.get_loop() is not loop:
            if self._wake is None or self._worker is None or self._worker.get_loop() is not loop:
                self._jobs, self._wake = [], asyncio.Event()  # a new event loop (e.g. another test client)
            self._worker = loop.create_task(self._work(), name="uwe-micro-batcher")

    async def close(self) -> None:
        """Stop the worker; requests still waiting are cancelled."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        for job in self._jobs:
            job.future.cancel()
        self._jobs = []

    # -- worker ----------------------------------------------------------------------------------------------

    async def _work(self) -> None:
        assert self._wake is not None
        idle = True
        while True:
            self._prune()
            if not self._jobs:
                idle = True
                self._wake.clear()
                await self._wake.wait()
                continue
            if idle and self.max_wait_ms > 0 and not self._full():
                await asyncio.sleep(self.max_wait_ms / 1000)  # company for a request that found us idle
                idle = False
                continue
            idle = False
            try:
                await self._run(self._plan())
            except Exception as err:  # a fault of the scheduler itself: fail what waits, keep serving
                log.error("the scheduler failed (%s); failing the %d requests it held", one_line(err), len(self._jobs))
                for job in self._jobs:
                    if not job.future.done():
                        job.future.set_exception(err)
                self._jobs = []

    def _full(self) -> bool:
        """Whether the queued work already fills a call (no point waiting for company)."""
        left = [job for job in self._jobs if not job.future.done()]
        return (sum(len(j.queries) - j.next for j in left) >= self.max_queries
                or sum(j.left for j in left) >= self.max_tokens)

    def _prune(self) -> None:
        """Forget requests whose caller went away (or whose deadline passed) before their answer."""
        kept = []
        for job in self._jobs:
            if not job.future.done():
                kept.append(job)
            elif not job.expired:
                self.stats.dropped += 1
        self._jobs = kept

    def _plan(self) -> list[tuple[_Job, int, int]]:
        """The next call: ``(job, start, end)`` slices of queries, least work left first (see the module docstring)."""
        first = min(self._jobs, key=_Job.order)
        mates = sorted((j for j in self._jobs if j.key == first.key and j.group == first.group), key=_Job.order)
        parts: list[tuple[_Job, int, int]] = []
        room_q, room_t = self.max_queries, self.max_tokens
        for job in mates:
            end = job.next
            while end < len(job.queries) and room_q > 0 and (job.costs[end] <= room_t or not parts and end == job.next):
                room_q, room_t, end = room_q - 1, room_t - job.costs[end], end + 1
            if end > job.next:
                cost = sum(job.costs[job.next : end])
                parts.append((job, job.next, end))
                job.next, job.left = end, job.left - cost
            if room_q <= 0 or room_t <= 0:
                break
        return parts

    async def _run(self, parts: list[tuple[_Job, int, int]]) -> None:
        queries = [q for job, start, end in parts for q in job.queries[start:end]]
        cost = sum(sum(job.costs[start:end]) for job, start, end in parts)
        self.stats.calls += 1
        self.stats.queries += len(queries)
        self.stats.largest_call = max(self.stats.largest_call, len(queries))
        self.stats.largest_call_tokens = max(self.stats.largest_call_tokens, cost)
        t0 = time.perf_counter()
        try:
            results = await asyncio.to_thread(self.rank_fn, queries, parts[0][0].key)
            if len(results) != len(queries):
                raise RuntimeError(f"rank_fn returned {len(results)} results for {len(queries)} queries")
        except Exception as err:
            self.stats.failed_calls += 1
            self._failed(parts, err)
            return
        rate = cost / max(time.perf_counter() - t0, 1e-6)
        self._rate = rate if self._rate is None else 0.8 * self._rate + 0.2 * rate
        offset = 0
        for job, start, end in parts:
            job.results[start:end] = results[offset : offset + end - start]
            offset += end - start
            job.calls += 1
            if job.next == len(job.queries) and not job.future.done():
                self.stats.split_requests += int(job.calls > 1)
                job.future.set_result(job.results)
                self._jobs.remove(job)
            # a job whose caller went away meanwhile is pruned (and counted) before the next call

    def _failed(self, parts: list[tuple[_Job, int, int]], err: Exception) -> None:
        """A failed call: its chunks go back in line, its requests split in two halves; alone, the request fails."""
        for job, start, end in parts:
            cost = sum(job.costs[start:end])
            job.next, job.left = start, job.left + cost
        jobs = [job for job, _, _ in parts]
        if len(jobs) == 1:
            job = jobs[0]
            if not job.future.done():
                job.future.set_exception(err)
            self._jobs.remove(job)
            return
        log.warning("a model call shared by %d requests failed (%s); ranking them in two halves to find the one "
                    "at fault", len(jobs), one_line(err))
        half = len(jobs) // 2
        for group in (jobs[:half], jobs[half:]):
            number = next(self._groups)
            for job in group:
                job.group = number
