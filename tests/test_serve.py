"""The ranking service (``python -m uwe_lightning.serve``): answers equal ``Ranker.rank``, bad or oversize
requests get one-line 4xx answers, concurrent requests share model calls, and a client that goes away
mid-request leaves the server answering the next one. Tiny model, the miniature data pack, no real port except
the loopback tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

pytest.importorskip("fastapi")
import httpx  # noqa: E402  (fastapi's test client needs it too)
from fastapi.testclient import TestClient  # noqa: E402

from tests.helpers.configs import tool_cfg  # noqa: E402
from tests.helpers.paths import MINI_DATA  # noqa: E402
from tests.helpers.tolerance import assert_close_to_scale  # noqa: E402
from uwe_lightning.paths import REPO_DIR  # noqa: E402
from uwe_lightning.ranking.ranker import Ranker  # noqa: E402
from uwe_lightning.ranking.targets import DIRECTIONS, load_targets  # noqa: E402
from uwe_lightning.service.app import LOOPBACK_HOSTS, ServedSpace, create_app  # noqa: E402
from uwe_lightning.service.batching import MicroBatcher  # noqa: E402
from uwe_lightning.service.requests import Limits  # noqa: E402

QUERIES = ["software engineer", "nurse", "truck driver", "data engineer python sql", "cook", "teacher"]
FILE_TARGETS = ["python", "java", "sql", "manage team", "care for patient", "teach", "drive truck", "cook food"]


class CountingRanker(Ranker):
    """A ranker that counts its ``rank`` calls and can be held inside one (to be mid-request on purpose)."""

    calls: list[int]
    hold: threading.Event | None = None
    entered: threading.Event

    def rank(self, queries, targets, k=10, block_size=1024):
        self.calls.append(len(queries))
        self.entered.set()
        if self.hold is not None:
            assert self.hold.wait(30), "test never released the ranker"
        return super().rank(queries, targets, k=k, block_size=block_size)

    @classmethod
    def tiny(cls, model_dir: Path) -> CountingRanker:
        """The tiny test model as this ranker (MaxSim), its counters empty."""
        ranker = cls.from_pretrained(str(model_dir), scorer="maxsim", device="cpu")
        ranker.calls, ranker.entered = [], threading.Event()
        return ranker


def served(ranker: Ranker, name: str) -> ServedSpace:
    """An ESCO target space of the mini pack encoded by ``ranker``, as the service holds it."""
    target = load_targets(name, MINI_DATA)
    return ServedSpace(name, target.source, target.ids, target.texts, ranker.index(target.texts))


@pytest.fixture(scope="module")
def ranker(tiny_model_dir: Path) -> CountingRanker:
    return CountingRanker.tiny(tiny_model_dir)


@pytest.fixture(scope="module")
def spaces(ranker: CountingRanker) -> dict[str, ServedSpace]:
    return {
        "esco_skills": served(ranker, "esco_skills"),
        "esco_occupations": served(ranker, "esco_occupations"),
        "file": ServedSpace("file", "file", [f"line:{i}" for i in range(1, 9)], FILE_TARGETS,
                            ranker.index(FILE_TARGETS)),
    }


@pytest.fixture
def make_app(ranker, spaces):
    def make(**kw):
        ranker.calls.clear()
        ranker.hold = None
        kw.setdefault("limits", Limits(max_queries=8, max_chars=200, max_k=20, max_body_bytes=20_000))
        kw.setdefault("max_batch_queries", 16)
        kw.setdefault("allowed_hosts", [*LOOPBACK_HOSTS, "testserver", "uwe"])  # the test clients' Host names
        return create_app(ranker, spaces, directions=DIRECTIONS, **kw)

    return make


def expected(ranker: Ranker, space: ServedSpace, queries: list[str], k: int) -> list[list[tuple[str, float]]]:
    scores, index = Ranker.rank(ranker, queries, space.encoded, k=k)  # the plain Ranker, not the counting one
    return [[(space.ids[i], s) for i, s in zip(row_i, row_s, strict=True)]
            for row_i, row_s in zip(index.tolist(), scores.tolist(), strict=True)]


def assert_same(answer: dict, want: list[list[tuple[str, float]]], space: ServedSpace) -> None:
    got = [[(t["id"], t["score"]) for t in r["top"]] for r in answer["results"]]
    assert [[i for i, _ in row] for row in got] == [[i for i, _ in row] for row in want]
    assert_close_to_scale(torch.tensor([[s for _, s in r] for r in got]), torch.tensor([[s for _, s in r] for r in want]))
    labels = dict(zip(space.ids, space.labels, strict=True))
    assert all(t["label"] == labels[t["id"]] and t["rank"] == n for r in answer["results"]
               for n, t in enumerate(r["top"], 1))


# ---------------------------------------------------------------------------------------------------------
# Answers
# ---------------------------------------------------------------------------------------------------------


def test_rank_answers_equal_ranker_rank(make_app, ranker, spaces):
    with TestClient(make_app()) as client:
        res = client.post("/rank", json={"queries": QUERIES, "k": 4})
        assert res.status_code == 200, res.text
        body = res.json()
        assert body["target_space"] == "esco_skills" and body["k"] == 4 and body["scorer"] == "maxsim"
        assert [r["query"] for r in body["results"]] == QUERIES
        assert_same(body, expected(ranker, spaces["esco_skills"], QUERIES, 4), spaces["esco_skills"])
        # By name, by direction, and k above the space's size is capped like Ranker.rank.
        res = client.post("/rank", json={"queries": ["python"], "k": 20, "target_space": "file"}).json()
        assert res["k"] == len(FILE_TARGETS)
        assert_same(res, expected(ranker, spaces["file"], ["python"], 20), spaces["file"])
        res = client.post("/rank", json={"queries": ["use python"], "direction": "skill2job"}).json()
        assert res["target_space"] == "esco_occupations" and len(res["results"][0]["top"]) == 5


def test_health_target_spaces_and_page(make_app):
    with TestClient(make_app()) as client:
        health = client.get("/health").json()
        assert health["status"] == "ok" and health["target_spaces"] == ["esco_skills", "esco_occupations", "file"]
        listed = client.get("/target-spaces").json()
        assert listed["default"] == "esco_skills"
        by_name = {s["name"]: s for s in listed["target_spaces"]}
        assert by_name["esco_skills"]["directions"] == ["job2skill"] and by_name["file"]["n"] == len(FILE_TARGETS)
        assert by_name["file"]["source"] == "file"  # no server path is shown
        page = client.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert 'fetch("rank"' in page.text and "src=" not in page.text and "https://" not in page.text


@pytest.mark.parametrize(("body", "status", "detail"), [
    ({"queries": ["nurse"] * 9}, 413, "queries: 9 texts, at most 8 per request"),
    ({"queries": ["nurse", "x" * 201]}, 413, "queries[1]: 201 characters, at most 200"),
    ({"queries": ["nurse"], "k": 21}, 422, "k: 21 is out of range; give 1..20"),
    ({"queries": ["nurse"], "k": 0}, 422, "k: 0 is out of range"),
    ({"queries": ["nurse"], "k": "5"}, 422, "k: "),
    ({"queries": []}, 422, "queries: empty list"),
    ({"queries": ["nurse", "\u200b "]}, 422, "queries[1]: empty text"),
    ({"queries": ["nurse", 3]}, 422, "queries[1]: Input should be a valid string"),
    ({"queries": "nurse"}, 422, "queries: Input should be a valid list"),
    ({"k": 3}, 422, "queries: missing"),
    ({"queries": ["nurse"], "target_space": "/etc/passwd"}, 422,
     "target_space: '/etc/passwd' is not loaded; known target spaces: ['esco_occupations', 'esco_skills', 'file']"),
    ({"queries": ["nurse"], "targets_file": "/etc/passwd"}, 422, "targets_file: unknown field"),
    ({"queries": ["nurse"], "direction": "up"}, 422, "direction: 'up' is not one of ['job2skill', 'skill2job']"),
    ({"queries": ["nurse"], "direction": "job2skill", "target_space": "file"}, 422, "give one of the two"),
    (["nurse"], 422, "body: expected a JSON object"),
])
def test_bad_or_oversize_requests_get_one_line_4xx(make_app, body, status, detail):
    with TestClient(make_app()) as client:
        res = client.post("/rank", json=body)
        assert res.status_code == status, res.text
        line = res.json()["detail"]
        assert isinstance(line, str) and "\n" not in line and detail in line
        assert client.app.state.ranker.calls == []  # nothing reached the model


def test_body_limits_and_bad_json(make_app):
    with TestClient(make_app()) as client:
        res = client.post("/rank", content=b'{"queries": ["' + b"a" * 30_000 + b'"]}',
                          headers={"content-type": "application/json"})
        assert res.status_code == 413 and res.json()["detail"].startswith("body: 30")

        def chunked() -> Iterator[bytes]:  # no Content-Length: counted while it arrives
            yield b'{"queries": ["'
            for _ in range(30):
                yield b"a" * 1000
            yield b'"]}'

        res = client.post("/rank", content=chunked(), headers={"content-type": "application/json"})
        assert res.status_code == 413 and "limits.max_body_bytes" in res.json()["detail"]
        res = client.post("/rank", content=b"{not json", headers={"content-type": "application/json"})
        assert res.status_code == 422 and res.json()["detail"].startswith("body: not valid JSON")
        assert client.post("/rank", json={"queries": ["nurse"]}).status_code == 200


def test_create_app_rejects_bad_settings(ranker, spaces):
    with pytest.raises(ValueError, match="at least one target space"):
        create_app(ranker, {})
    with pytest.raises(ValueError, match="default_target 'x'"):
        create_app(ranker, spaces, default_space="x")
    with pytest.raises(ValueError, match="max_tokens must be a whole number >= 1"):
        create_app(ranker, spaces, max_batch_tokens=0)
    with pytest.raises(ValueError, match="allowed_hosts must list host names"):
        create_app(ranker, spaces, allowed_hosts=[])
    with pytest.raises(ValueError, match="limits.max_k"):
        Limits(max_k=0)


# ---------------------------------------------------------------------------------------------------------
# Batching and disconnects
# ---------------------------------------------------------------------------------------------------------


def _post_all(app, bodies: list[dict]) -> list[httpx.Response]:
    async def go() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://uwe") as client:
            return await asyncio.gather(*(client.post("/rank", json=b) for b in bodies))

    return asyncio.run(go())


def test_concurrent_requests_share_model_calls_and_get_their_own_answers(make_app, ranker, spaces):
    app = make_app(max_wait_ms=50)
    bodies = [{"queries": [q], "k": 3} for q in QUERIES] + [{"queries": QUERIES[:2], "k": 3}]
    bodies += [{"queries": [q], "k": 2, "target_space": "file"} for q in QUERIES[:3]]
    answers = _post_all(app, bodies)
    assert [a.status_code for a in answers] == [200] * len(bodies)
    # 7 requests for (esco_skills, k=3) and 3 for (file, k=2): one model call each, within max_batch_queries.
    assert sorted(ranker.calls) == [3, 8], ranker.calls
    for body, answer in zip(bodies, answers, strict=True):
        space = spaces[body.get("target_space", "esco_skills")]
        assert_same(answer.json(), expected(ranker, space, body["queries"], body["k"]), space)
    stats = app.state.batcher.stats
    assert stats.requests == len(bodies) and stats.calls == 2 and stats.largest_call == 8


def test_a_batch_never_exceeds_max_queries_and_split_requests_get_their_own_answers(make_app, ranker, spaces):
    app = make_app(max_wait_ms=50, max_batch_queries=8)
    bodies = [{"queries": QUERIES[i : i + 3], "k": 3} for i in range(4)] + [{"queries": QUERIES, "k": 3}]
    answers = _post_all(app, bodies)  # 18 queries: calls of at most 8, a request may span two or three
    assert all(a.status_code == 200 for a in answers)
    assert max(ranker.calls) == 8 and sum(ranker.calls) == 18 and len(ranker.calls) == 3, ranker.calls
    assert app.state.batcher.stats.split_requests >= 1
    for body, answer in zip(bodies, answers, strict=True):  # assembled from chunks: as if ranked alone
        assert_same(answer.json(), expected(ranker, spaces["esco_skills"], body["queries"], 3), spaces["esco_skills"])


def test_a_failing_request_does_not_fail_its_batch():
    def rank_fn(queries: list[str], key) -> list[str]:
        if "boom" in queries:
            raise RuntimeError("boom")
        return [q.upper() for q in queries]

    async def go():
        batcher = MicroBatcher(rank_fn, max_queries=10, max_wait_ms=20)
        results = await asyncio.gather(batcher.submit(["a"], 1), batcher.submit(["boom"], 1),
                                       batcher.submit(["b", "c"], 1), return_exceptions=True)
        await batcher.close()
        return results, batcher.stats

    results, stats = asyncio.run(go())
    assert results[0] == ["A"] and isinstance(results[1], RuntimeError) and results[2] == ["B", "C"]
    assert stats.failed_calls == 3  # the batch; the half with the bad request; the bad request alone


def test_a_client_cancelled_mid_request_leaves_the_server_answering(make_app, ranker, spaces):
    app = make_app(max_wait_ms=0)

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://uwe") as client:
            ranker.hold, ranker.entered = threading.Event(), threading.Event()
            first = asyncio.ensure_future(client.post("/rank", json={"queries": ["nurse"]}))
            await asyncio.to_thread(ranker.entered.wait, 10)
            waiting = asyncio.ensure_future(client.post("/rank", json={"queries": ["cook"]}))  # queued behind it
            await asyncio.sleep(0.05)
            first.cancel()  # the client goes away while its request is inside the model call
            waiting.cancel()  # and this one while it waits in the queue
            ranker.hold.set()
            await asyncio.gather(first, waiting, return_exceptions=True)
            ranker.hold = None
            return await client.post("/rank", json={"queries": ["teacher"], "k": 3})

    answer = asyncio.run(go())
    assert answer.status_code == 200
    assert_same(answer.json(), expected(ranker, spaces["esco_skills"], ["teacher"], 3), spaces["esco_skills"])
    assert ranker.calls == [1, 1]  # the queued request of the cancelled client was never ranked
    assert app.state.batcher.stats.dropped >= 1


# ---------------------------------------------------------------------------------------------------------
# A real server on 127.0.0.1
# ---------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def running(app, header_timeout_s: float = 10.0) -> Iterator[str]:
    """``app`` under uvicorn on 127.0.0.1 and a free port (a thread), with the protocol ``serve`` runs it
    under; yields its base URL."""
    import uvicorn

    from uwe_lightning.service.http import with_head_deadline

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                           http=with_head_deadline(header_timeout_s)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def live_server(make_app):
    """The app under uvicorn on 127.0.0.1 and a free port; yields its base URL and the app."""
    app = make_app(max_wait_ms=0)
    with running(app) as url:
        yield url, app


def test_a_closed_socket_mid_request_leaves_the_server_answering(live_server, ranker, spaces):
    url, app = live_server
    host, port = url.removeprefix("http://").split(":")
    body = b'{"queries": ["nurse"], "k": 3}'
    request = (b"POST /rank HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body))
    ranker.hold, ranker.entered = threading.Event(), threading.Event()
    with socket.create_connection((host, int(port)), timeout=10) as sock:  # the whole request, then gone
        sock.sendall(request + body)
        assert ranker.entered.wait(10)
    with socket.create_connection((host, int(port)), timeout=10) as sock:  # half a body, then gone
        sock.sendall(request + body[:10])
    time.sleep(0.2)
    ranker.hold.set()
    answer = httpx.post(f"{url}/rank", json={"queries": ["truck driver"], "k": 3}, timeout=20)
    ranker.hold = None
    assert answer.status_code == 200
    assert_same(answer.json(), expected(ranker, spaces["esco_skills"], ["truck driver"], 3), spaces["esco_skills"])
    assert httpx.get(f"{url}/health", timeout=10).json()["status"] == "ok"
    assert ranker.calls == [1, 1]
    assert app.state.batcher.stats.dropped == 1  # the answer nobody was waiting for was dropped, not sent


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium)")
def test_page_shows_a_ranking_in_headless_chromium(live_server, tmp_path):
    url, _ = live_server
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={tmp_path}",
         "--virtual-time-budget=8000", "--dump-dom", f"{url}/?q=python+developer&q=nurse"],
        capture_output=True, text=True, timeout=120,
    )
    dom = proc.stdout
    assert 'class="query">python developer<' in dom and 'class="query">nurse<' in dom, proc.stderr[-2000:]
    assert "use python" in dom and 'class="score">' in dom and 'class="error"' not in dom


# ---------------------------------------------------------------------------------------------------------
# python -m uwe_lightning.serve: the config
# ---------------------------------------------------------------------------------------------------------


def _serve_cfg(model_dir: Path, tmp_path: Path, *extra: str):
    return tool_cfg("serve", model_dir, tmp_path, f"paths.data_dir={MINI_DATA}", *extra)


def test_serve_config_builds_the_app_from_the_rank_cache(tiny_model_dir, tmp_path, capsys):
    from uwe_lightning.cli.serve import build_app

    cfg = _serve_cfg(tiny_model_dir, tmp_path, "targets=[esco_skills,esco_occupations]", "scorer=maxsim")
    app = build_app(cfg)
    assert "esco_skills: 12 targets encoded" in capsys.readouterr().out
    assert list(app.state.spaces) == ["esco_skills", "esco_occupations"]
    again = build_app(cfg)  # the second start loads both spaces from the cache
    assert all(space.cache_hit for space in again.state.spaces.values())
    with TestClient(again, base_url="http://localhost:8080") as client:  # a loopback name: allowed_hosts
        answer = client.post("/rank", json={"queries": ["software engineer"], "k": 3}).json()
    space = again.state.spaces["esco_skills"]
    assert_same(answer, expected(again.state.ranker, space, ["software engineer"], 3), space)


@pytest.mark.parametrize(("override", "message"), [
    ("targets=[skills]", "targets: 'skills' is not one of"),
    ("targets=[]", "targets is empty"),
    ("targets=[esco_skills,esco_skills]", "targets lists a target space twice"),
    ("targets=[file]", "targets=[file] needs targets_file"),
    ("default_target=esco_occupations", "default_target 'esco_occupations' is not in targets"),
    ("port=70000", "port must be a whole number 0..65535"),
    ("limits.max_queries=0", "limits.max_queries must be a whole number >= 1"),
    ("batching.max_tokens=0", "batching.max_tokens must be a whole number >= 1"),
    ("queue.max_requests=-3", "queue.max_requests must be a whole number >= 1"),
    ("queue.deadline_s=0", "queue.deadline_s must be a number > 0"),
    ("body_timeout_s=abc", "body_timeout_s must be a number > 0"),
    ("allowed_hosts=[]", "allowed_hosts is empty"),
    ("allowed_hosts=[http://evil.example/]", "allowed_hosts: 'http://evil.example/' is not a host name"),
    ("batching.max_wait_ms=-1", "batching.max_wait_ms must be a number >= 0"),
    ("log_level=loud", "log_level must be one of"),
])
def test_serve_config_errors_name_the_key(tmp_path, override, message):
    from uwe_lightning.cli.serve import build_app
    from uwe_lightning.io import ConfigError

    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        build_app(_serve_cfg(tmp_path / "no-model-here", tmp_path, override))  # checked before the model loads


def test_serve_cli_user_error_is_one_line_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "uwe_lightning.serve", "targets=[skills]",
                           f"hydra.run.dir={tmp_path / 'run'}"], cwd=REPO_DIR, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("[serve] error:")]
    assert errors == ["[serve] error: targets: 'skills' is not one of ['esco_skills', 'esco_occupations', 'file']"]
