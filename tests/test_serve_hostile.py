"""The ranking service against a hostile-but-honest client (issue 26): one client cannot poison or stall the
others. Invalid text is a 422 naming the field before it is queued, a failing request fails only itself, heavy
requests are split so a light one is answered within a call or two, the queue is bounded (503 + Retry-After),
requests have a deadline, half-sent bodies are cut off (408), foreign Host names get a 421, and the OpenAPI schema
states every limit and the real error shape. Tiny model; each test is bounded in requests and seconds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import statistics
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from tests.test_serve import (  # noqa: E402
    QUERIES,
    CountingRanker,
    _serve_cfg,
    assert_same,
    expected,
    running,
    served,
)
from uwe_lightning.ranking.targets import DIRECTIONS  # noqa: E402
from uwe_lightning.ranking.texts import is_blank  # noqa: E402
from uwe_lightning.service.app import ServedSpace, create_app  # noqa: E402
from uwe_lightning.service.batching import DeadlineExceeded, MicroBatcher, Overloaded  # noqa: E402
from uwe_lightning.service.requests import Limits, visible_text_pattern  # noqa: E402

LIMITS = Limits(max_queries=8, max_chars=200, max_k=20, max_body_bytes=20_000)
JSON = {"content-type": "application/json"}


class SlowRanker(CountingRanker):
    """A counting ranker that can also take ``delay`` seconds per query (a stand-in for a big model) and fail on
    one text the tokenizer accepts (a model-side fault that validation cannot see)."""

    delay: float = 0.0
    poison: str | None = None

    def rank(self, queries, targets, k=10, block_size=1024):
        if self.poison is not None and self.poison in queries:
            raise RuntimeError(f"model fault on {self.poison!r}\nsecond line of the message")
        if self.delay:
            time.sleep(self.delay * len(queries))
        return super().rank(queries, targets, k=k, block_size=block_size)


@pytest.fixture(scope="module")
def ranker(tiny_model_dir: Path) -> SlowRanker:
    return SlowRanker.tiny(tiny_model_dir)


@pytest.fixture(scope="module")
def spaces(ranker: SlowRanker) -> dict[str, ServedSpace]:
    return {"esco_skills": served(ranker, "esco_skills")}


@pytest.fixture
def make_app(ranker, spaces):
    def make(**kw):
        ranker.calls.clear()
        ranker.hold, ranker.delay, ranker.poison, ranker.entered = None, 0.0, None, threading.Event()
        kw.setdefault("limits", LIMITS)
        kw.setdefault("max_batch_queries", 16)
        return create_app(ranker, spaces, directions=DIRECTIONS, **kw)

    yield make
    ranker.hold, ranker.delay, ranker.poison = None, 0.0, None


def one_line(res: httpx.Response) -> str:
    line = res.json()["detail"]
    assert isinstance(line, str) and "\n" not in line and set(res.json()) == {"detail"}, res.text
    return line


# ---------------------------------------------------------------------------------------------------------
# Invalid input: a 422 naming the field, before anything is queued
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "detail"), [
    (b'{"queries": ["nurse", "cook", "teacher", "a\\ud800"]}', "queries[3]: not valid Unicode: a lone surrogate "
                                                               "U+D800 at character 1"),
    (b'{"queries": ["\\udfff"]}', "queries[0]: not valid Unicode"),
    (b'{"queries": ["nurse", "a\xed\xa0\x80b"]}', "queries[1]: not valid Unicode"),  # a surrogate coded as UTF-8
    (b'{"queries": ["caf\xe9"]}', "body: not UTF-8 (invalid continuation byte: 0xe9 at byte 17)"),
    (b'{"queries": ' + b"[" * 5000 + b"]" * 5000 + b"}", "body: JSON nested too deeply"),
    (b'{"queries": ["nurse", "tokenizer says no"]}', "queries[1]: the model's tokenizer refuses this text"),
])
def test_invalid_text_or_body_is_a_one_line_422_before_batching(make_app, ranker, body, detail):
    def count(texts: list[str]) -> list[int]:
        if "tokenizer says no" in texts:
            raise TypeError("TextEncodeInput must be Union[TextInputSequence, Tuple[InputSequence, InputSequence]]")
        return [len(t) for t in texts]

    with TestClient(make_app(count_tokens=count), base_url="http://localhost") as client:
        res = client.post("/rank", content=body, headers=JSON)
        assert res.status_code == 422 and one_line(res).startswith(detail), res.text
        assert ranker.calls == [] and client.app.state.batcher.stats.requests == 0  # never queued
        assert client.post("/rank", json={"queries": ["nurse"]}).status_code == 200


def test_the_real_tokenizer_counts_tokens_as_costs(make_app, ranker):
    app = make_app(max_batch_tokens=12, max_wait_ms=0)
    with TestClient(app, base_url="http://localhost") as client:
        res = client.post("/rank", json={"queries": ["software engineer", "nurse", "data engineer python sql"]})
        assert res.status_code == 200
    # tokens with [CLS]/[SEP]: 4, 3, 6 -> calls of at most 12 tokens: [4 + 3], [6]
    assert ranker.calls == [2, 1] and app.state.batcher.stats.largest_call_tokens == 7


def test_a_model_fault_fails_only_its_request_with_one_log_line(make_app, ranker, spaces, caplog):
    app = make_app(max_wait_ms=50)
    ranker.poison = "cook"  # the tokenizer takes it; the model call fails
    bodies = [{"queries": [q], "k": 3} for q in QUERIES]
    with caplog.at_level(logging.INFO, logger="uwe_lightning.serve"):
        async def go() -> list[httpx.Response]:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
                return await asyncio.gather(*(client.post("/rank", json=b) for b in bodies))

        answers = asyncio.run(go())
    for body, answer in zip(bodies, answers, strict=True):
        if body["queries"] == ["cook"]:
            assert answer.status_code == 500 and "see its log" in one_line(answer)
        else:
            assert answer.status_code == 200, answer.text
            assert_same(answer.json(), expected(ranker, spaces["esco_skills"], body["queries"], 3), spaces["esco_skills"])
    records = [r for r in caplog.records if r.name == "uwe_lightning.serve"]
    assert records and all(r.exc_info is None and "\n" not in r.getMessage() for r in records)
    assert any("ranking failed" in r.getMessage() and "model fault on 'cook'" in r.getMessage() for r in records)


def test_a_failing_request_among_many_is_found_by_halving_not_by_ranking_each_alone():
    calls: list[int] = []

    def rank_fn(queries: list[str], key) -> list[str]:
        calls.append(len(queries))
        if "boom" in queries:
            raise RuntimeError("boom")
        return [q.upper() for q in queries]

    async def go():
        batcher = MicroBatcher(rank_fn, max_queries=64, max_wait_ms=20)
        texts = [f"q{i}" for i in range(31)] + ["boom"]
        results = await asyncio.gather(*(batcher.submit([t], 0) for t in texts), return_exceptions=True)
        await batcher.close()
        return texts, results, batcher.stats

    texts, results, stats = asyncio.run(go())
    assert [r for t, r in zip(texts, results, strict=True) if t != "boom"] == [[t.upper()] for t in texts[:-1]]
    assert isinstance(results[-1], RuntimeError)
    # 32 requests: the shared call, then 5 halvings to the bad one (one failed, one good call each): 11 calls,
    # where ranking each alone after the first failure took 33.
    assert len(calls) == 11 and stats.failed_calls == 6, calls


# ---------------------------------------------------------------------------------------------------------
# Scheduling by cost: heavy requests are split, a light one is not queued behind them
# ---------------------------------------------------------------------------------------------------------


def test_a_light_request_beside_heavy_ones_waits_for_about_one_call():
    """Three heavy requests (20 queries of cost 20: 0.6 s of model time each, 1.8 s together) and a light one
    sent just after them. Bound: the light request is answered within one heavy request's full work (0.6 s);
    the scheduler's promise is the call in progress plus its own (~0.3 s). First come, first served took 1.8 s.
    The heavy ones finish one after another (least work left first), each answer assembled from its chunks."""
    per_unit = 0.0015  # seconds of "model time" per cost unit

    def rank_fn(queries: list[str], key) -> list[str]:
        time.sleep(per_unit * sum(int(q.split(":")[1]) for q in queries))
        return [q.upper() for q in queries]

    async def go():
        batcher = MicroBatcher(rank_fn, max_queries=64, max_tokens=100, max_wait_ms=0)
        heavy = [[f"h{j}-{i}:20" for i in range(20)] for j in range(3)]
        finished: dict[str, float] = {}
        t0 = time.perf_counter()

        async def ask(name: str, queries: list[str]) -> list[str]:
            out = await batcher.submit(queries, "space", costs=[int(q.split(":")[1]) for q in queries])
            finished[name] = time.perf_counter() - t0
            return out

        heavies = [asyncio.ensure_future(ask(f"heavy{j}", q)) for j, q in enumerate(heavy)]
        await asyncio.sleep(0.05)
        sent = time.perf_counter() - t0
        light = await ask("light", ["light:5"])
        waited = finished["light"] - sent
        answers = await asyncio.gather(*heavies)
        await batcher.close()
        return heavy, answers, light, waited, finished, batcher.stats

    heavy, answers, light, waited, finished, stats = asyncio.run(go())
    print(f"light request answered in {waited:.3f} s beside three heavy ones (bound {20 * 20 * per_unit:.2f} s)")
    assert light == ["LIGHT:5"]
    assert waited < 20 * 20 * per_unit, f"the light request waited {waited:.2f} s"
    assert finished["light"] < finished["heavy0"] < finished["heavy1"] < finished["heavy2"]  # heavy: one by one
    assert answers == [[q.upper() for q in h] for h in heavy]  # assembled from chunks, in order
    assert stats.split_requests == 3 and stats.largest_call_tokens <= 100


def test_over_http_a_light_request_is_answered_while_heavy_ones_are_split(make_app, ranker, spaces):
    """The same through the app and the real model, slowed to 0.08 s per query: three requests of 8 queries
    (0.64 s of model time each, 1.9 s together) in calls of 2 queries, and a one-query request sent after them.
    Bound: answered within one heavy request's work (0.64 s; the scheduler's promise is ~0.25 s); each heavy
    answer equals the request ranked alone."""
    app = make_app(max_batch_queries=2, max_wait_ms=0)
    ranker.delay = 0.08
    heavy = [{"queries": [f"{q} {i}" for i in range(8)], "k": 3} for q in ("nurse", "cook", "teacher")]

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client:
            heavies = [asyncio.ensure_future(client.post("/rank", json=b)) for b in heavy]
            await asyncio.to_thread(ranker.entered.wait, 10)
            t0 = time.perf_counter()
            light = await client.post("/rank", json={"queries": ["truck driver"], "k": 3})
            waited = time.perf_counter() - t0
            done_before = sum(h.done() for h in heavies)
            return light, waited, done_before, await asyncio.gather(*heavies)

    light, waited, done_before, answers = asyncio.run(go())
    ranker.delay = 0.0
    print(f"light request answered in {waited:.3f} s beside three heavy ones (bound {8 * 0.08:.2f} s)")
    assert light.status_code == 200 and waited < 8 * 0.08, f"the light request waited {waited:.2f} s"
    assert done_before == 0
    for body, answer in zip(heavy, answers, strict=True):
        assert answer.status_code == 200
        assert_same(answer.json(), expected(ranker, spaces["esco_skills"], body["queries"], 3), spaces["esco_skills"])
    assert max(ranker.calls) == 2 and app.state.batcher.stats.split_requests == 3


# ---------------------------------------------------------------------------------------------------------
# Bounds: the queue, the deadline, the body read timeout, the Host header
# ---------------------------------------------------------------------------------------------------------


def test_a_full_queue_answers_503_with_retry_after(make_app, ranker):
    app = make_app(max_pending=2, max_wait_ms=0)

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client:
            ranker.hold = threading.Event()
            first = asyncio.ensure_future(client.post("/rank", json={"queries": ["nurse"]}))
            await asyncio.to_thread(ranker.entered.wait, 10)
            second = asyncio.ensure_future(client.post("/rank", json={"queries": ["cook"]}))
            while app.state.batcher.pending < 2:
                await asyncio.sleep(0.01)
            refused = await client.post("/rank", json={"queries": ["teacher"]})
            ranker.hold.set()
            return refused, await first, await second

    refused, first, second = asyncio.run(go())
    assert refused.status_code == 503 and one_line(refused).startswith("busy: 2 requests are waiting")
    assert int(refused.headers["retry-after"]) >= 1
    assert first.status_code == second.status_code == 200
    assert app.state.batcher.stats.rejected == 1


def test_past_its_deadline_a_request_gets_503_and_its_remaining_chunks_are_dropped(make_app, ranker):
    app = make_app(max_batch_queries=2, max_wait_ms=0, deadline_s=0.3)

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client:
            ranker.hold = threading.Event()
            t0 = time.perf_counter()
            late = await client.post("/rank", json={"queries": QUERIES})  # 3 chunks of 2; the first is held
            waited = time.perf_counter() - t0
            ranker.hold.set()
            while app.state.batcher.pending:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)  # room for a (wrong) next chunk to start
            calls = list(ranker.calls)
            ranker.hold = None
            return late, waited, calls, await client.post("/rank", json={"queries": ["nurse"]})

    late, waited, calls, after = asyncio.run(go())
    assert late.status_code == 503 and 0.25 < waited < 5
    assert one_line(late).startswith("deadline: not ranked within 0.3 s (queue.deadline_s)")
    assert int(late.headers["retry-after"]) >= 1
    assert calls == [2]  # the held chunk ran; the two after it never did
    assert after.status_code == 200 and app.state.batcher.stats.expired == 1


def test_a_half_sent_body_is_cut_off_with_408(make_app):
    app = make_app(body_timeout_s=0.5)
    body = b'{"queries": ["nurse"], "k": 3}'
    head = b"POST /rank HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    with running(app) as url:
        host, port = url.removeprefix("http://").split(":")
        for trickle in (False, True):  # stalls after half the body; sends a byte every 0.15 s
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                t0 = time.perf_counter()
                sock.sendall(head % len(body) + body[:10])
                if trickle:
                    with contextlib.suppress(OSError):  # the server may close while we still send
                        for byte in body[10:20]:
                            time.sleep(0.15)
                            sock.sendall(bytes([byte]))
                answer = b""
                while chunk := sock.recv(4096):  # until the server closes the connection
                    answer += chunk
                elapsed = time.perf_counter() - t0
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
            assert b"body: not received within 0.5 s (body_timeout_s)" in answer and 0.4 < elapsed < 5
        assert httpx.post(f"{url}/rank", json={"queries": ["nurse"]}, timeout=20).status_code == 200


def test_a_half_sent_head_is_cut_off_with_408(make_app):
    """uvicorn gave a request line or header block that stalls no deadline (nor a connection that sends
    nothing): each such client held a connection for ever (slowloris). Now header_timeout_s closes it, and
    clients beside it are answered."""
    app = make_app()
    with running(app, header_timeout_s=0.5) as url:
        host, port = url.removeprefix("http://").split(":")
        for sent in (b"", b"POST /rank HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty"):
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                t0 = time.perf_counter()
                sock.sendall(sent)
                assert httpx.post(f"{url}/rank", json={"queries": ["nurse"]}, timeout=20).status_code == 200
                answer = b""
                while chunk := sock.recv(4096):  # until the server closes the connection
                    answer += chunk
                elapsed = time.perf_counter() - t0
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
            assert 0.4 < elapsed < 5, elapsed
        # a kept-alive connection: the deadline counts from the next request's first byte, not from the last
        # response; a whole request sent slowly within it is answered
        with httpx.Client(timeout=20) as client:
            for _ in range(2):
                assert client.post(f"{url}/rank", json={"queries": ["nurse"]}).status_code == 200
                time.sleep(0.6)


@pytest.mark.parametrize(("allowed", "host", "status"), [
    (None, "localhost:8080", 200),
    (None, "127.0.0.1", 200),
    (None, "[::1]:9000", 200),
    (None, "LOCALHOST.", 200),
    (None, "evil.example", 421),
    (None, "localhost.evil.example:8080", 421),
    (None, "127.0.0.1.nip.io", 421),
    (["ranker.internal"], "ranker.internal:443", 200),
    (["ranker.internal"], "localhost", 421),
    (["*"], "anything.example", 200),
])
def test_only_allowed_host_names_are_answered(make_app, allowed, host, status):
    app = make_app(**({"allowed_hosts": allowed} if allowed else {}))
    with TestClient(app, base_url="http://localhost") as client:
        for res in (client.post("/rank", json={"queries": ["nurse"]}, headers={"host": host}),
                    client.get("/health", headers={"host": host})):
            assert res.status_code == status, res.text
            if status == 421:
                assert one_line(res).startswith(f"host: {host!r} is not served here")


# ---------------------------------------------------------------------------------------------------------
# A poisoned client among many, on loopback
# ---------------------------------------------------------------------------------------------------------


def _round(url: str, clients: list[list[bytes]]) -> list[list[tuple[float, int, str]]]:
    """Each client sends its bodies one after another on its own connection; (seconds, status, body) each."""

    async def client(http: httpx.AsyncClient, bodies: list[bytes]) -> list[tuple[float, int, str]]:
        out = []
        for body in bodies:
            t0 = time.perf_counter()
            res = await http.post("/rank", content=body, headers=JSON)
            out.append((time.perf_counter() - t0, res.status_code, res.text))
        return out

    async def go():
        async with contextlib.AsyncExitStack() as stack:
            https = [await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=30)) for _ in clients]
            return await asyncio.gather(*(client(h, b) for h, b in zip(https, clients, strict=True)))

    return asyncio.run(go())


def test_a_poisoned_client_does_not_slow_the_others(make_app, caplog):
    """12 clients x 12 single-query requests per round on loopback; in a poisoned round client 0 sends its 12 as
    a lone surrogate instead. Bound: the median over 4 poisoned rounds of the other 11 clients' p50 latency is
    within 1.5x of the median over 4 clean rounds, run in the same test in ABBA order (C P P C C P P C) so that
    a drifting background load falls on both. Measured here: ratio 0.8-0.9; the code before the fix (a 500 that
    failed its batch, each batch-mate then re-ranked alone) gave 1.8-3.5 with this tiny model, and the issue
    measured p50 87 -> 757 ms with 50 clients and MiniLM."""
    n_clients, n_requests = 12, 12
    normal = [b'{"queries": ["%s"], "k": 5}' % q.encode() for q in QUERIES]
    poison = b'{"queries": ["a\\ud800"], "k": 5}'
    app = make_app(max_wait_ms=2)
    p50s: dict[bool, list[float]] = {False: [], True: []}
    order = [False] + [False, True, True, False] * 2  # a warm-up round, then ABBA twice
    with caplog.at_level(logging.INFO, logger="uwe_lightning.serve"), running(app) as url:
        for poisoned in order:
            bodies = [[normal[(c + i) % len(normal)] for i in range(n_requests)] for c in range(n_clients)]
            if poisoned:
                bodies[0] = [poison] * n_requests
            results = _round(url, bodies)
            others = [r for client in results[1:] for r in client]
            assert all(status == 200 for _, status, _ in others), [r for r in others if r[1] != 200][:1]
            if poisoned:
                assert all(status == 422 and '"queries[0]: not valid Unicode' in text for _, status, text in results[0])
            p50s[poisoned].append(statistics.median(t for t, _, _ in others))
    clean, dirty = statistics.median(p50s[False][1:]), statistics.median(p50s[True])
    print(f"others' p50: clean {[round(t * 1e3, 1) for t in p50s[False][1:]]} ms, poisoned "
          f"{[round(t * 1e3, 1) for t in p50s[True]]} ms; ratio of medians {dirty / clean:.2f}")
    assert dirty <= 1.5 * clean, f"p50 of the others: {dirty * 1e3:.1f} ms poisoned vs {clean * 1e3:.1f} ms clean"
    assert app.state.batcher.stats.failed_calls == 0
    assert not [r for r in caplog.records if r.exc_info]  # no traceback per request in the log


# ---------------------------------------------------------------------------------------------------------
# The schema states the limits and the error shape; port=0
# ---------------------------------------------------------------------------------------------------------


def test_openapi_states_every_limit_and_the_real_error_shape(make_app):
    with TestClient(make_app(), base_url="http://localhost") as client:
        schema = client.get("/openapi.json").json()
        request = schema["components"]["schemas"]["RankRequest"]
        queries, k = request["properties"]["queries"], request["properties"]["k"]
        assert (queries["minItems"], queries["maxItems"]) == (1, LIMITS.max_queries)
        assert (queries["items"]["minLength"], queries["items"]["maxLength"]) == (1, LIMITS.max_chars)
        assert (k["minimum"], k["maximum"], k["default"]) == (1, LIMITS.max_k, 5)
        assert str(LIMITS.max_body_bytes) in request["description"] and request["additionalProperties"] is False
        assert request["properties"]["target_space"]["anyOf"][0]["enum"] == ["esco_skills"]
        assert request["properties"]["direction"]["anyOf"][0]["enum"] == ["job2skill"]  # the loaded one only
        error = {"$ref": "#/components/schemas/ErrorDetail"}
        assert schema["components"]["schemas"]["ErrorDetail"]["properties"]["detail"]["type"] == "string"
        assert "HTTPValidationError" not in schema["components"]["schemas"]
        responses = schema["paths"]["/rank"]["post"]["responses"]
        for status in ("408", "413", "421", "422", "500", "503"):
            assert responses[status]["content"]["application/json"]["schema"] == error, status
        assert "Retry-After" in responses["503"]["headers"]
        assert all("421" in op["responses"] for path in schema["paths"].values() for op in path.values())
        # What the schema says is what the service answers: a 422 body is an ErrorDetail.
        assert set(client.post("/rank", json={"queries": ["nurse"], "k": 0}).json()) == {"detail"}
    pattern = re.compile(queries["items"]["pattern"])
    for text in ["nurse", " \u200b", "\u0301", "\u3164", "a\u200b", "\ufeff", "\U000e0020", "\U0001f600", "\x85"]:
        assert bool(pattern.search(text)) == (not is_blank(text)), repr(text)
    assert pattern.pattern == visible_text_pattern()


def test_port_0_prints_the_port_it_got(make_app, tiny_model_dir, tmp_path, capsys, monkeypatch):
    import uvicorn

    from uwe_lightning.cli.serve import serve

    served: list[socket.socket] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: served.extend(sockets or []))
    cfg = _serve_cfg(tiny_model_dir, tmp_path, "port=0", "host=127.0.0.1")
    serve(make_app(), cfg)
    port = served[0].getsockname()[1]
    served[0].close()
    out = capsys.readouterr().out
    assert port != 0 and f"on http://127.0.0.1:{port}/ " in out and ":0/" not in out, out
    assert "Host names answered: localhost, 127.0.0.1, [::1]" in out


def test_the_bound_address_joins_allowed_hosts(tmp_path):
    from uwe_lightning.cli.serve import allowed_hosts

    assert allowed_hosts(_serve_cfg(tmp_path, tmp_path, "host=10.1.2.3"))[-1] == "10.1.2.3"
    assert allowed_hosts(_serve_cfg(tmp_path, tmp_path, "host=0.0.0.0")) == ["localhost", "127.0.0.1", "[::1]"]


def test_overloaded_and_deadline_errors_carry_a_retry_after():
    async def go():
        batcher = MicroBatcher(lambda q, k: time.sleep(0.2) or q, max_pending=1, max_wait_ms=0, deadline_s=0.05)
        with pytest.raises(DeadlineExceeded) as late:
            await batcher.submit(["a"], 0)
        first = asyncio.ensure_future(batcher.submit(["b"], 0, deadline_s=5))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded) as busy:
            await batcher.submit(["c"], 0)
        assert await first == ["b"]
        await batcher.close()
        return late.value, busy.value

    late, busy = asyncio.run(go())
    assert late.retry_after >= 1 and busy.retry_after >= 1 and busy.pending == 1
