"""Generate ``n`` texts per skill through a chat-completions endpoint: rounds, filters, cache, concurrency.

Per skill (:meth:`Generator.run_skill`), round 0 asks for ``n`` items; while fewer than ``n`` valid, new items
came back and rounds are left, the next round asks for the remaining count with the valid items so far in
context (the paper's retry, Appendix B). An item is kept when, after whitespace clean-up, it has at least
``min_words`` words, differs from the skill's own label, is not a duplicate of an earlier item of that skill
(case- and space-insensitive) and equals no evaluation query (:class:`~uwe_lightning.protocol.QueryGuard`);
every drop is counted by reason (and leaks by split). At most ``n`` items are kept, in the order generated.

Every answer goes through the :class:`~.cache.ResponseCache` first, so a re-run makes no request that was
answered before, and a killed run resumes where it stopped. Skills run ``concurrency`` at a time; results
are returned in skill order whatever the completion order, so the output files are deterministic.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

from uwe_lightning.enrichment.cache import ResponseCache, request_key
from uwe_lightning.enrichment.client import Answer, ChatClient, RequestFailed
from uwe_lightning.enrichment.prompts import (
    ITEMS_SCHEMA,
    PARAPHRASE_EXAMPLES,
    Kind,
    MalformedAnswer,
    Skill,
    parse_items,
)
from uwe_lightning.io import ConfigError
from uwe_lightning.protocol.leakage import QueryGuard, query_key

RESPONSE_FORMATS = ("json_schema", "json_object", "none")


@dataclass(frozen=True)
class Settings:
    """How many items per skill, how many rounds, and what a valid item is."""

    n: int = 20
    max_rounds: int = 1
    min_words: int = 1
    examples: tuple[tuple[str, str], ...] = PARAPHRASE_EXAMPLES


@dataclass
class SkillResult:
    skill: Skill
    items: list[str] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)  # rounds, requests, cache hits, drops by reason
    leaked: Counter = field(default_factory=Counter)  # drops by evaluation split
    usage: Counter = field(default_factory=Counter)  # token usage the answers report (new requests only)
    failures: list[dict[str, Any]] = field(default_factory=list)


def request_params(temperature: float | None, max_tokens: int | None, response_format: str, seed: int | None,
                   kind: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The sampling parameters of a payload (everything but model and messages); part of the cache key."""
    if response_format not in RESPONSE_FORMATS:
        raise ConfigError(f"endpoint.response_format must be one of {RESPONSE_FORMATS}, got {response_format!r}")
    params: dict[str, Any] = dict(extra or {})
    if temperature is not None:
        params["temperature"] = temperature
    if max_tokens is not None:
        params["max_tokens"] = max_tokens
    if seed is not None:
        params["seed"] = seed
    if response_format == "json_schema":
        params["response_format"] = {"type": "json_schema",
                                     "json_schema": {"name": kind, "schema": ITEMS_SCHEMA, "strict": True}}
    elif response_format == "json_object":
        params["response_format"] = {"type": "json_object"}
    return params


class Generator:
    """One kind of generation for many skills against one endpoint model."""

    def __init__(self, kind: Kind, settings: Settings, model: str, params: dict[str, Any], cache: ResponseCache,
                 client: ChatClient | None, guard: QueryGuard | None = None) -> None:
        self.kind = kind
        self.settings = settings
        self.model = model
        self.params = params
        self.cache = cache
        self.client = client
        self.guard = guard
        self.stop = threading.Event()

    def request(self, skill: Skill, need: int, already: Sequence[str], round_: int) -> dict[str, Any]:
        """What round ``round_`` sends (and the cache key fields): model, messages, params, round."""
        messages = self.kind.messages(skill, need, already, self.settings.examples)
        return {"model": self.model, "messages": messages, "params": self.params, "round": round_}

    def answer(self, request: dict[str, Any], result: SkillResult) -> Answer:
        key = request_key(request)
        cached = self.cache.get(key)
        if cached is not None:
            result.counts["cache_hits"] += 1
            a = cached["answer"]
            return Answer(a.get("content"), a.get("finish_reason"), dict(a.get("usage") or {}))
        if self.client is None:
            raise RequestFailed("not cached and no client (dry run)")
        if self.stop.is_set():
            raise RequestFailed("run stopped")
        answer = self.client.complete({"model": request["model"], "messages": request["messages"],
                                       **request["params"]})
        result.counts["new_requests"] += 1
        result.usage.update(answer.usage)
        self.cache.put(key, request, {"content": answer.content, "finish_reason": answer.finish_reason,
                                      "usage": answer.usage})
        return answer

    def run_skill(self, skill: Skill) -> SkillResult:
        result = SkillResult(skill)
        seen = {query_key(skill.label)}
        n = self.settings.n
        for round_ in range(self.settings.max_rounds):
            need = n - len(result.items)
            if need <= 0:
                break
            request = self.request(skill, need, result.items if round_ else (), round_)
            result.counts["rounds"] += 1
            try:
                answer = self.answer(request, result)
                raw = parse_items(answer.content)
            except MalformedAnswer as err:
                result.counts["malformed_answers"] += 1
                result.failures.append(self._failure(skill, round_, f"malformed answer: {err}"))
                continue
            except RequestFailed as err:
                result.failures.append(self._failure(skill, round_, str(err)))
                break
            result.counts["items_returned"] += len(raw)
            before = len(result.items)
            for item in raw:
                self._consider(" ".join(item.split()), result, seen)
            if len(result.items) == before and round_:
                break  # a retry that brought nothing new: stop asking
        if len(result.items) > n:
            result.counts["dropped_beyond_n"] += len(result.items) - n
            del result.items[n:]
        return result

    def _consider(self, item: str, result: SkillResult, seen: set[str]) -> None:
        key = query_key(item)
        if not item:
            reason = "dropped_empty"
        elif len(item.split()) < self.settings.min_words:
            reason = "dropped_too_few_words"
        elif key == query_key(result.skill.label):
            reason = "dropped_same_as_skill"
        elif key in seen:
            reason = "dropped_duplicate"
        else:
            hits = self.guard.hits(item) if self.guard is not None else []
            seen.add(key)
            if not hits:
                result.items.append(item)
                return
            reason = "dropped_leakage"
            result.leaked.update(hits)
        result.counts[reason] += 1

    def _failure(self, skill: Skill, round_: int, error: str) -> dict[str, Any]:
        return {"kind": self.kind.name, "skill": skill.uri, "label": skill.label, "round": round_, "error": error}

    def run(self, skills: Sequence[Skill], concurrency: int = 8,
            progress: Callable[[], None] | None = None) -> list[SkillResult]:
        """Every skill, ``concurrency`` at a time; results in skill order. An :class:`EndpointError` stops the
        run (requests in flight finish and are cached) and is raised."""
        results: list[SkillResult | None] = [None] * len(skills)
        with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="enrich") as pool:
            futures = {pool.submit(self.run_skill, skill): i for i, skill in enumerate(skills)}
            try:
                for future in as_completed(futures):
                    results[futures[future]] = future.result()
                    if progress is not None:
                        progress()
            except BaseException:
                self.stop.set()
                for future in futures:
                    future.cancel()
                raise
        return [r for r in results if r is not None]
