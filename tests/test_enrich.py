"""The enrichment pipeline against a real chat-completions HTTP server on 127.0.0.1 (started by the tests, canned
deterministic answers): prompts, parsing, retries, cache, resume after a kill, leakage guard, key hygiene,
merge, dry run, the CLI and ``data=open_enriched``. No internet, no LLM."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.paths import MINI_DATA
from uwe_lightning.cli import enrich as cli
from uwe_lightning.enrichment import prompts
from uwe_lightning.enrichment.cache import ResponseCache
from uwe_lightning.enrichment.client import ChatClient, Endpoint, EndpointError
from uwe_lightning.enrichment.devserver import (
    ChatServer,
    Reply,
    RuleResponder,
    completion,
    items_reply,
    rule_items,
)
from uwe_lightning.enrichment.generate import Generator, Settings, request_params
from uwe_lightning.enrichment.merge import merge_titles
from uwe_lightning.enrichment.pipeline import generate_kind, load_skill_list
from uwe_lightning.protocol import EnrichedOpenSource, QueryGuard, build_open_protocol

REPO = Path(__file__).resolve().parents[1]
LABELS = ["manage staff", "use python", "cook meals", "drive trucks", "plan projects"]
_SKILL = re.compile(r"<skill_name>(.*?)</skill_name>")
_N = re.compile(r"^Return a (?:list|LIST) (?:of|OF) (\d+)")


class Script:
    """Per skill label, the replies to give first (in order); after them, valid items from the dev rules."""

    def __init__(self, plan: dict[str, list[Reply]] | None = None, delay_s: float = 0.0) -> None:
        self.plan = plan or {}
        self.delay_s = delay_s
        self.seen: Counter[str] = Counter()
        self.lock = threading.Lock()

    def __call__(self, payload: dict, index: int) -> Reply:
        user = payload["messages"][-1]["content"]
        label = _SKILL.search(user).group(1)
        with self.lock:
            k = self.seen[label]
            self.seen[label] += 1
        planned = self.plan.get(label, [])
        if k < len(planned):
            return planned[k]
        kind = "titles" if "job titles" in user[:120] else "paraphrases" if "PARAPHRASES" in user else "sentences"
        already = json.loads(user.split("no duplicates: ", 1)[1]) if "no duplicates: " in user else []
        reply = items_reply(rule_items(kind, label, "", int(_N.match(user).group(1)), already))
        reply.delay_s = self.delay_s
        return reply


def skills_csv(path: Path, labels=LABELS) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uri", "label", "description"])
        for i, label in enumerate(labels):
            writer.writerow([f"urn:skill:{i}", label, f"Description of {label}."])
    return path


def endpoint(server: ChatServer, **kw) -> Endpoint:
    options = {"timeout_s": 5.0, "retries": 3, "backoff_s": 0.01, "max_backoff_s": 0.05, **kw}
    return Endpoint.resolve(server.base_url, "", **options)


def titles_generator(server, cache_dir: Path, guard=None, n: int = 5, **kw) -> Generator:
    params = request_params(None, 256, "json_schema", None, "titles")
    return Generator(prompts.KINDS["titles"], Settings(n=n, max_rounds=3, min_words=2), "test-model", params,
                     ResponseCache(cache_dir), ChatClient(endpoint(server, **kw)), guard)


def read_rows(path: Path) -> list[tuple[str, str]]:
    with path.open() as handle:
        return [(r["skill"], r["text"]) for r in csv.DictReader(handle)]


# ---------------------------------------------------------------------------------------------------------
# Prompts and parsing
# ---------------------------------------------------------------------------------------------------------


def test_prompts_are_the_papers_with_retry_and_examples():
    skill = prompts.Skill("u", "manage staff", "Direct the work of employees.")
    titles = prompts.KINDS["titles"]
    text = titles.user_message(skill, 20)
    assert text.startswith("Return a list of 20 unique, real-world job titles for which the given skill is required.")
    assert "The skill can only occur explicitly in the first job title." in text
    assert text.endswith("<skill_name>manage staff</skill_name>\n"
                         "<skill_description>Direct the work of employees.</skill_description>")
    retry = titles.user_message(skill, 3, ["Staff Manager", "Team Lead"])
    assert retry.startswith("Return a list of 3 unique")
    assert retry.endswith('You already provided these job titles, make sure there are no duplicates: '
                          '["Staff Manager", "Team Lead"]')
    para = prompts.KINDS["paraphrases"].user_message(skill, 20)
    assert para.startswith("Return a LIST OF 20 UNIQUE PARAPHRASES of the given skill.")
    assert ("Examples: supervise correctional procedures -> oversee prison procedures, show initiative -> initiate "
            "action, lead police investigations -> manage police enquiries.") in para
    assert para.endswith("<skill_name>manage staff</skill_name>") and "skill_description" not in para
    messages = titles.messages(skill, 20)
    assert [m["role"] for m in messages] == ["system", "user"] and '"items"' in messages[0]["content"]


@pytest.mark.parametrize("content, items", [
    ('{"items": ["a b", "c"]}', ["a b", "c"]),
    ('["x", 3, "y"]', ["x", "y"]),
    ('```json\n{"titles": ["t1"]}\n```', ["t1"]),
    ('{"items": []}', []),
])
def test_parse_items_accepts_lists(content, items):
    assert prompts.parse_items(content) == items


@pytest.mark.parametrize("content", ["{not json", '{"a": [1], "b": [2]}', '"just text"', None, ""])
def test_parse_items_rejects_malformed(content):
    with pytest.raises(prompts.MalformedAnswer):
        prompts.parse_items(content)


# ---------------------------------------------------------------------------------------------------------
# Generation against the HTTP server
# ---------------------------------------------------------------------------------------------------------


def faulty_script() -> Script:
    return Script({
        "manage staff": [Reply(body=completion("{not json"))],
        "use python": [items_reply(["Python Developer", "python   developer", "Engineer", "Data Engineer (Python)",
                                    "Engineer", "USE  python"])],
        "cook meals": [Reply(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"}),
                       Reply(500, {"error": {"message": "boom"}})],
        "drive trucks": [Reply(body=completion('{"items": ["Truck Driver"]}'), delay_s=1.5)],
        "plan projects": [items_reply(["Sous  CHEF", "head chef", "Project Planner", "Planning Officer"])],
    })


def test_generation_retries_filters_guard_and_rerun_from_cache(tmp_path):
    guard = QueryGuard({"JobNorm/test": ["sous chef"], "JobNorm/val": ["Head Chef"]})
    skills = load_skill_list(str(skills_csv(tmp_path / "skills.csv")))
    script = faulty_script()
    with ChatServer(script) as server:
        gen = titles_generator(server, tmp_path / "cache", guard, timeout_s=0.5)
        stats = generate_kind("titles", skills, gen, tmp_path, 3, False, lambda m: None, {})
        n_requests = len(server.requests)
        rows = read_rows(tmp_path / "titles.csv")
        # Output: 5 titles per skill, in skill order then generation order.
        assert [s for s, _ in rows] == [f"urn:skill:{i}" for i in range(5) for _ in range(5)]
        by_skill = {s: [t for u, t in rows if u == s] for s, _ in rows}
        assert by_skill["urn:skill:1"][:2] == ["Python Developer", "Data Engineer (Python)"]
        assert all(len(t.split()) >= 2 for _, t in rows)
        assert "Truck Driver" not in by_skill["urn:skill:3"]  # that answer came after the timeout
        assert not {"sous chef", "head chef"} & {t.casefold() for _, t in rows}
        # The retry asked for the remaining count with the kept titles in context.
        retry = [r["payload"]["messages"][-1]["content"] for r in server.requests
                 if "<skill_name>use python</skill_name>" in r["payload"]["messages"][-1]["content"]][1]
        assert retry.startswith("Return a list of 3 unique")
        assert retry.endswith('make sure there are no duplicates: ["Python Developer", "Data Engineer (Python)"]')
        c = stats["counts"]
        assert (c["malformed_answers"], c["dropped_duplicate"], c["dropped_too_few_words"]) == (1, 1, 2)
        assert (c["dropped_same_as_skill"], c["dropped_leakage"]) == (1, 2)
        assert stats["dropped_leakage_by_split"] == {"JobNorm/test": 1, "JobNorm/val": 1}
        assert stats["http"]["status_429"] == 1 and stats["http"]["status_500"] == 1 and stats["http"]["timeouts"] == 1
        assert stats["skills_with_n_items"] == 5 and stats["items"] == 25
        # 5 first rounds + 3 more (re-ask after the malformed answer, 2 retries for the remaining count); the
        # 429 / 500 / timeout were retried inside the client, within one request.
        assert c["new_requests"] == 8 and c.get("cache_hits", 0) == 0 and n_requests == 11
        failures = [json.loads(line) for line in (tmp_path / "titles.failures.jsonl").read_text().splitlines()]
        assert [f["skill"] for f in failures] == ["urn:skill:0"] and "malformed" in failures[0]["error"]

        # Re-run: every answer comes from the cache, zero new requests, the same bytes.
        before = (tmp_path / "titles.csv").read_bytes()
        again = generate_kind("titles", skills, titles_generator(server, tmp_path / "cache", guard), tmp_path, 3,
                              False, lambda m: None, {})
        assert len(server.requests) == n_requests
        assert again["counts"]["cache_hits"] == 8 and again["counts"].get("new_requests", 0) == 0
        assert (tmp_path / "titles.csv").read_bytes() == before


def test_output_order_does_not_depend_on_concurrency(tmp_path):
    skills = load_skill_list(str(skills_csv(tmp_path / "skills.csv")))
    outputs = []
    for workers in (1, 5):
        with ChatServer(Script(delay_s=0.01)) as server:
            out = tmp_path / f"w{workers}"
            generate_kind("titles", skills, titles_generator(server, out / "cache"), out, workers, False,
                          lambda m: None, {})
            outputs.append((out / "titles.csv").read_bytes())
    assert outputs[0] == outputs[1]


def test_resume_after_kill_pays_only_for_the_rest(tmp_path):
    labels = [f"skill {chr(97 + i)} work" for i in range(12)]
    skills_file = skills_csv(tmp_path / "skills.csv", labels)
    with ChatServer(Script(delay_s=0.25)) as server:
        code = (
            "import sys; from uwe_lightning.cli.enrich import main; "
            f"main(['titles', 'skills={skills_file}', 'leakage.enabled=false', 'out_dir={tmp_path / 'run'}', "
            f"'concurrency=1', 'show_progress=false', 'endpoint.base_url={server.base_url}', 'titles.n=5'])"
        )
        env = {**os.environ, "PYTHONPATH": str(REPO), "OPENAI_API_KEY": ""}
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        cache = ResponseCache(tmp_path / "run" / "cache")
        deadline = time.monotonic() + 240  # start-up (torch, lightning, openai imports) takes > 60 s at load 14
        while len(cache) < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done = len(cache)
        assert 3 <= done < 12, f"{done} answers cached before the kill"
        assert not (tmp_path / "run" / "titles.csv").exists()
        served = len(server.requests)
        cli.main(["titles", f"skills={skills_file}", "leakage.enabled=false", f"out_dir={tmp_path / 'run'}",
                  "show_progress=false", f"endpoint.base_url={server.base_url}", "titles.n=5"])
        stats = json.loads((tmp_path / "run" / "titles.stats.json").read_text())
        assert stats["counts"]["cache_hits"] == done and stats["counts"]["new_requests"] == 12 - done
        assert len(server.requests) - served == 12 - done
        rows = read_rows(tmp_path / "run" / "titles.csv")
    with ChatServer(Script()) as fresh:  # a clean run gives the same file
        cli.main(["titles", f"skills={skills_file}", "leakage.enabled=false", f"out_dir={tmp_path / 'clean'}",
                  "show_progress=false", f"endpoint.base_url={fresh.base_url}", "titles.n=5"])
    assert read_rows(tmp_path / "clean" / "titles.csv") == rows and len(rows) == 60


def test_api_key_is_sent_but_never_written_or_logged(tmp_path, monkeypatch, capsys):
    key = "sk-uwe-test-4f1c9e0b7d2a"
    monkeypatch.setenv("OPENAI_API_KEY", key)

    class Echo:  # a server that echoes the Authorization header in its error bodies
        server: ChatServer | None = None

        def __call__(self, payload, index):
            auth = self.server.requests[index]["authorization"]
            return Reply(500 if index == 0 else 400, {"error": {"message": f"server saw {auth}"}})

    echo = Echo()
    with ChatServer(echo) as server:
        echo.server = server
        skills_file = skills_csv(tmp_path / "skills.csv", ["manage staff"])
        cli.main(["titles", f"skills={skills_file}", "leakage.enabled=false", f"out_dir={tmp_path / 'out'}",
                  "show_progress=false", f"endpoint.base_url={server.base_url}", "endpoint.backoff_s=0.01",
                  "endpoint.retries=1"])
        assert server.requests[0]["authorization"] == f"Bearer {key}"
    logged = capsys.readouterr()
    failures = (tmp_path / "out" / "titles.failures.jsonl").read_text()
    assert "***" in failures and "HTTP 400" in failures
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert key not in path.read_text(errors="replace"), path
    assert key not in logged.out + logged.err
    assert "4f1c9e0b7d2a" not in repr(Endpoint.resolve("http://127.0.0.1:1/v1"))


def test_refused_key_and_unreachable_server_stop_the_run(tmp_path, capsys):
    skills_file = skills_csv(tmp_path / "skills.csv")
    with ChatServer(lambda p, i: Reply(401, {"error": {"message": "bad key"}})) as server:
        with pytest.raises(SystemExit) as exit_:
            cli.main(["titles", f"skills={skills_file}", "leakage.enabled=false", f"out_dir={tmp_path / 'a'}",
                      "show_progress=false", f"endpoint.base_url={server.base_url}"])
        assert len(server.requests) <= 5  # the first refusal stops the run
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "[enrich] error:" in err and "HTTP 401" in err and "refused the API key" in err
    client = ChatClient(Endpoint.resolve("http://127.0.0.1:9/v1", "", retries=1, backoff_s=0.01))
    with pytest.raises(EndpointError, match="cannot reach"):
        client.complete({"model": "m", "messages": []})


def test_dry_run_counts_prompts_and_cached_answers_without_requests(tmp_path):
    skills_file = skills_csv(tmp_path / "skills.csv")
    base = [f"skills={skills_file}", "leakage.enabled=false", f"out_dir={tmp_path}", "show_progress=false"]
    with ChatServer(Script()) as server:
        base.append(f"endpoint.base_url={server.base_url}")
        cli.main(["titles", *base])
        served = len(server.requests)
        cli.main(["all", *base, "dry_run=true", "estimate.input_per_million=1.0", "estimate.output_per_million=2.0"])
        assert len(server.requests) == served
    report = json.loads((tmp_path / "dry_run.json").read_text())
    assert report["prompts"] == 15 and report["skills"] == 5
    assert {k: v["cached"] for k, v in report["kinds"].items()} == {"titles": 5, "paraphrases": 0, "sentences": 0}
    assert report["kinds"]["titles"]["est_output_tokens"] == 5 * (20 * 10 + 10)
    expected = report["est_input_tokens"] / 1e6 + 2 * report["est_output_tokens"] / 1e6
    assert report["est_cost"] == round(expected, 2)


def test_unreachable_endpoint_fails_at_once_in_one_line(tmp_path, capsys):
    # A refused port before any answer: one attempt, no backoff loop (the retries would take 2+4+8+16+32 s).
    client = ChatClient(Endpoint.resolve("http://127.0.0.1:9/v1", "", retries=5, backoff_s=2.0))
    with pytest.raises(EndpointError, match=r"cannot reach http://127\.0\.0\.1:9/v1/chat/completions"):
        client.complete({"model": "m", "messages": []})
    assert client.counts["http_requests"] == 1 and client.counts["connection_errors"] == 1
    skills_file = skills_csv(tmp_path / "skills.csv")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["titles", f"skills={skills_file}", "leakage.enabled=false", f"out_dir={tmp_path}",
                  "show_progress=false", "endpoint.base_url=http://127.0.0.1:9/v1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 2 and err[-1].startswith("[enrich] error: cannot reach")


def test_dry_run_prices_from_the_table_or_says_it_has_none(tmp_path, capsys):
    skills_file = skills_csv(tmp_path / "skills.csv")
    base = ["titles", f"skills={skills_file}", "leakage.enabled=false", f"out_dir={tmp_path}", "show_progress=false",
            "dry_run=true", "endpoint.base_url=http://127.0.0.1:9/v1"]
    cli.main([*base, "endpoint.model=gpt-4o-mini-2024-07-18"])
    report = json.loads((tmp_path / "dry_run.json").read_text())
    assert report["requests_to_send"] == 5 and report["prices_per_million"]["input_per_million"] == 0.15
    expected = (report["input_tokens_to_send"] * 0.15 + report["output_tokens_to_send"] * 0.60) / 1e6
    assert report["est_cost_to_send"] == round(expected, 2)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "5 requests to send" in line and "estimated cost $" in line and "as of 2026-06" in line
    cli.main([*base, "endpoint.model=qwen2.5-7b-instruct"])
    assert "est_cost" not in json.loads((tmp_path / "dry_run.json").read_text())
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "no cost estimate: model 'qwen2.5-7b-instruct' is not in the price table" in line


def test_budget_guard_refuses_a_run_above_max_cost(tmp_path, capsys):
    skills_file = skills_csv(tmp_path / "skills.csv")
    with ChatServer(Script()) as server:
        base = ["titles", f"skills={skills_file}", "leakage.enabled=false", f"out_dir={tmp_path}",
                "show_progress=false", f"endpoint.base_url={server.base_url}", "estimate.input_per_million=1000",
                "estimate.output_per_million=1000"]
        with pytest.raises(SystemExit) as exit_:
            cli.main([*base, "estimate.max_cost=0.01"])
        assert exit_.value.code == 2 and not server.requests
        assert "exceeds estimate.max_cost=0.01" in capsys.readouterr().err
        cli.main([*base, "estimate.max_cost=100"])
        assert len(server.requests) == 5


def test_cli_steps_guard_and_examples_on_the_mini_pack(tmp_path, tiny_model_dir, capsys):
    script = Script({"manage staff": [items_reply(["Head  Chef", "Sous chef", "Staff Wrangler", "Crew Boss"])]})
    with ChatServer(script) as server:
        cli.main(["all", f"paths.data_dir={MINI_DATA}", f"out_dir={tmp_path}", "max_skills=3",
                  "show_progress=false", f"endpoint.base_url={server.base_url}", f"model.backbone={tiny_model_dir}",
                  "titles.n=4", "paraphrases.n=3", "sentences.n=2", "paraphrases.examples=[[lead staff,supervise staff]]"])
    titles = json.loads((tmp_path / "titles.stats.json").read_text())
    assert titles["dropped_leakage_by_split"] == {"JobNorm/test": 1, "JobNorm/val": 1}
    para = json.loads((tmp_path / "paraphrases.stats.json").read_text())
    assert para["prompt_examples_equal_to_queries"] == [
        {"text": "lead staff", "splits": ["SkillNorm@heldout/val"]},
        {"text": "supervise staff", "splits": ["SkillNorm@heldout/val"]}]
    assert "warning: prompt example 'lead staff'" in capsys.readouterr().err
    for name, per_skill in (("A.csv", 3), ("V.csv", 2), ("titles.csv", 4)):
        assert len(read_rows(tmp_path / name)) == 3 * per_skill
    merged = json.loads((tmp_path / "merge.stats.json").read_text())
    assert merged["synthetic_titles"] == 12 and (tmp_path / "merge.thresholds.png").stat().st_size > 0
    assert set(merged["matched_titles_by_threshold"]) == {f"{t:.2f}" for t in np.arange(0.5, 0.96, 0.05)}


def test_cli_rejects_unknown_or_missing_step(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["titels"])
    assert exit_.value.code == 2 and "unknown step 'titels'" in capsys.readouterr().err
    with pytest.raises(Exception, match="give a step first"):
        cli._steps(None)


# ---------------------------------------------------------------------------------------------------------
# Merge
# ---------------------------------------------------------------------------------------------------------


class StubRanker:
    """Cosine = a fixed matrix (synthetic x real) by text, to test the merge logic exactly."""

    def __init__(self, sims: dict[tuple[str, str], float]) -> None:
        self.sims = sims

    def encode(self, texts, side):
        return list(texts)

    def score_blocks(self, queries, targets, block_size=256):
        matrix = torch.tensor([[self.sims.get((q, t), 0.0) for t in targets] for q in queries])
        for start in range(0, len(queries), block_size):
            yield start, matrix[start : start + block_size]


def test_merge_several_matches_unmatched_kept_and_threshold_curve():
    synthetic = [("s1", "Data Wrangler"), ("s2", "data  wrangler"), ("s1", "Chief Byte Officer"), ("s3", "Odd Job")]
    real = ["data engineer", "data analyst", "chef"]
    sims = {("Data Wrangler", "data engineer"): 0.82, ("Data Wrangler", "data analyst"): 0.71,
            ("Data Wrangler", "chef"): 0.1, ("Chief Byte Officer", "chef"): 0.69, ("Odd Job", "chef"): 0.2}
    result = merge_titles(synthetic, real, StubRanker(sims), threshold=0.7, thresholds=(0.5, 0.7, 0.8, 0.9),
                          existing_edges={("data engineer", "s1")})
    assert result.edges == [("s1", "data engineer"), ("s1", "data analyst"), ("s2", "data engineer"),
                            ("s2", "data analyst"), ("s1", "Chief Byte Officer"), ("s3", "Odd Job")]
    s = result.stats
    assert (s["synthetic_titles"], s["matched_titles"], s["unmatched_titles"], s["matches"]) == (3, 1, 2, 2)
    assert s["matched_titles_by_threshold"] == {"0.50": 2, "0.70": 1, "0.80": 1, "0.90": 0}
    assert (s["edges_on_real_titles"], s["edges_on_real_titles_new"], s["real_titles_enriched"]) == (4, 3, 2)
    assert result.matches == [("Data Wrangler", "data engineer", 0.82), ("Data Wrangler", "data analyst", 0.71)]
    capped = merge_titles(synthetic, real, StubRanker(sims), threshold=0.7, max_matches=1)
    assert capped.edges[:2] == [("s1", "data engineer"), ("s2", "data engineer")]


def test_merge_with_a_real_encoder_matches_identical_titles(tiny_model_dir):
    from uwe_lightning.ranking.ranker import Ranker

    ranker = Ranker.from_pretrained(str(tiny_model_dir), scorer="mean", device="cpu")
    result = merge_titles([("s1", "registered nurse"), ("s2", "zz top qq")], ["registered nurse", "welder"], ranker,
                          threshold=0.999)
    assert ("s1", "registered nurse") in result.edges and result.stats["matched_titles"] >= 1
    assert result.matches[0][:2] == ("registered nurse", "registered nurse") and result.matches[0][2] >= 0.999


# ---------------------------------------------------------------------------------------------------------
# data=open_enriched
# ---------------------------------------------------------------------------------------------------------


def test_enriched_open_source_adds_edges_through_the_guard(tmp_path):
    s01 = "http://data.europa.eu/esco/skill/s01"
    (tmp_path / "J.csv").write_text(f"skill,text\n{s01},Staff Wrangler\n{s01},SOUS chef\n{s01},head  chef\n")
    (tmp_path / "A.csv").write_text(f"skill,text\n{s01},lead staff\n{s01},oversee employees\n")
    source = EnrichedOpenSource(str(MINI_DATA), extra_edges={"J": str(tmp_path / "J.csv"), "A": str(tmp_path / "A.csv"),
                                                             "V": None})
    vocab, graphs = source.load(["J", "V", "A"])
    plain = build_open_protocol(MINI_DATA)
    index = vocab.index(s01)
    assert "Staff Wrangler" in [graphs["J"].texts[t] for t in graphs["J"].neighbors(index)]
    assert "oversee employees" in [graphs["A"].texts[t] for t in graphs["A"].neighbors(index)]
    assert graphs["J"].n_edges == plain.graphs["J"].n_edges + 1 and graphs["A"].n_edges == plain.graphs["A"].n_edges + 1
    assert graphs["V"].n_edges == plain.graphs["V"].n_edges
    extra = source.protocol.meta["extra_edges"]
    assert extra["J"]["dropped_text_equal_to_query"] == {"JobNorm/test": 1, "JobNorm/val": 1}
    assert extra["A"]["dropped_text_equal_to_query"] == {"SkillNorm@heldout/val": 1}
    assert source.describe()["source"] == "open_enriched"
    with pytest.raises(Exception, match="does not exist; write it with"):
        EnrichedOpenSource(str(MINI_DATA), extra_edges={"J": str(tmp_path / "missing.csv")}).load(["J"])


@pytest.mark.slow
def test_enrich_output_trains_with_open_enriched(tmp_path, tiny_model_dir):
    from tests.helpers.configs import base_overrides
    from uwe_lightning.training.run import train

    with ChatServer(RuleResponder()) as server:
        cli.main(["all", f"paths.data_dir={MINI_DATA}", f"out_dir={tmp_path / 'enrich'}", "max_skills=6",
                  "show_progress=false", f"endpoint.base_url={server.base_url}", f"model.backbone={tiny_model_dir}"])
    from hydra import compose, initialize_config_dir

    from uwe_lightning.paths import CONF_DIR

    overrides = [o for o in base_overrides(tmp_path / "run", tiny_model_dir, steps=2, every=None, test_tasks="[JobNorm]")
                 if not o.startswith("data.source")]
    overrides = [o.replace("data=edges", "data=open_enriched") for o in overrides]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"paths.enrich_dir={tmp_path / 'enrich'}", "validation.tasks=[]",
                                          "data.sampling=per_graph"])
    summary = train(cfg)
    assert summary["final_step"] == 2


def test_enrich_config_composes_and_saves_no_copy_of_itself(tmp_path):
    from hydra import compose, initialize_config_dir

    from uwe_lightning.paths import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("enrich", overrides=["command=titles", f"out_dir={tmp_path}"], return_hydra_config=True)
    assert cfg.hydra.output_subdir is None  # no .hydra/config.yaml that could hold endpoint.api_key
    assert "FileHandler" not in str(cfg.hydra.job_logging)  # logs go to stdout only
    assert cfg.endpoint.api_key is None and cfg.paraphrases.examples[1] == ["show initiative", "initiate action"]
    assert (cfg.titles.n, cfg.paraphrases.n, cfg.sentences.n, cfg.merge.threshold) == (20, 20, 10, 0.7)


@pytest.mark.data
@pytest.mark.slow
def test_guard_on_the_real_pack_flags_the_papers_prompt_examples(real_data_dir):
    """The README's claims: 13 evaluation splits, and every text of the paper's paraphrase examples is a query."""
    guard = QueryGuard.from_data_pack(real_data_dir, 0.1, 0.5)
    assert len(guard.split_names) == 13 and len(guard) > 100_000
    hits = {t: guard.hits(t) for pair in prompts.PARAPHRASE_EXAMPLES for t in pair}
    assert all(hits.values()), hits
    assert "SkillNorm@heldout/test" in hits["initiate action"] and "SkillNorm@heldout/test" in hits["manage police enquiries"]
