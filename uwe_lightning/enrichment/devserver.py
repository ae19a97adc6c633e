"""A local OpenAI-compatible chat-completions server for tests and demonstrations: NO language model.

``python -m uwe_lightning.enrichment.devserver [--port 8099]`` serves ``POST /v1/chat/completions`` (and
``GET /v1/models``) on 127.0.0.1 with :class:`RuleResponder`: it reads the skill, the count and the items
already given from our prompts and answers ``{"items": [...]}`` built from fixed templates (the skill's words
in job-title, paraphrase and ad-sentence patterns). The texts are deterministic and plausible-looking, not
LLM-generated: the server exists to run the whole pipeline end to end without a model or the internet.

:class:`ChatServer` takes any responder ``(payload, request index) -> Reply``, so tests script exact answers
(malformed JSON, 429 / 500, slow answers, ...) and count the requests that arrive.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """What the server sends: a status, a JSON body (dict/list) or raw text, headers, and a delay first."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


def completion(content: str, model: str = "dev", finish_reason: str = "stop") -> dict[str, Any]:
    """A chat.completion object with one choice holding ``content``."""
    return {"id": "chatcmpl-dev", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": finish_reason}]}


def items_reply(items: list[str], model: str = "dev") -> Reply:
    return Reply(body=completion(json.dumps({"items": items}, ensure_ascii=False), model))


Responder = Callable[[dict[str, Any], int], Reply]


class ChatServer:
    """A ThreadingHTTPServer in a daemon thread; ``requests`` records each POST (payload, Authorization)."""

    def __init__(self, responder: Responder, host: str = "127.0.0.1", port: int = 0, model: str = "dev") -> None:
        self.responder = responder
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer((host, port), self._handler())
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # TCP_NODELAY, as uvicorn / vLLM / asyncio servers set it: headers and body go out as two writes, and
            # on a kept-alive connection Nagle + delayed ACK would hold each answer ~40 ms (measured: 90 vs 15 ms
            # per sequential request through the openai SDK, which keeps connections open)
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _send(self, reply: Reply) -> None:
                body = reply.body if isinstance(reply.body, (str, bytes)) else json.dumps(reply.body)
                data = body.encode() if isinstance(body, str) else body
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._send(Reply(body={"object": "list", "data": [{"id": server.model, "object": "model"}]}))
                else:
                    self._send(Reply(404, {"error": {"message": f"no route {self.path}"}}))

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(Reply(404, {"error": {"message": f"no route {self.path}"}}))
                    return
                try:
                    payload = json.loads(raw)
                except ValueError:
                    self._send(Reply(400, {"error": {"message": "body is not JSON"}}))
                    return
                with server._lock:
                    index = len(server.requests)
                    server.requests.append({"payload": payload, "authorization": self.headers.get("Authorization")})
                reply = server.responder(payload, index)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client timed out, left
                    self._send(reply)

        return Handler

    def start(self) -> ChatServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="chat-server", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> ChatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------------------
# Deterministic rules (no model)
# ---------------------------------------------------------------------------------------------------------

VERB_SYNONYMS = {
    "manage": ["oversee", "run", "direct"], "develop": ["create", "build", "design"], "use": ["apply", "work with"],
    "perform": ["carry out", "conduct"], "ensure": ["guarantee", "make sure of"], "maintain": ["keep up", "look after"],
    "apply": ["use", "implement"], "provide": ["offer", "supply"], "prepare": ["set up", "get ready"],
    "monitor": ["track", "keep an eye on"], "analyse": ["examine", "assess"], "operate": ["run", "work"],
    "assist": ["help with", "support"], "identify": ["recognise", "spot"], "advise": ["counsel on", "guide on"],
    "coordinate": ["organise", "align"], "create": ["produce", "make"], "handle": ["deal with", "manage"],
    "supervise": ["oversee", "lead"], "teach": ["instruct", "train people in"], "write": ["draft", "compose"],
    "install": ["set up", "fit"], "repair": ["fix", "mend"], "inspect": ["check", "examine"],
    "plan": ["schedule", "map out"], "design": ["devise", "draw up"], "evaluate": ["assess", "appraise"],
}
ROLES = ["Specialist", "Officer", "Coordinator", "Consultant", "Technician", "Assistant", "Manager", "Advisor",
         "Supervisor", "Engineer", "Analyst", "Operative", "Administrator", "Expert", "Inspector", "Planner",
         "Trainer", "Associate", "Lead", "Worker"]
LEVELS = ["", "Senior ", "Junior ", "Trainee ", "Head ", "Assistant ", "Principal ", "Chief "]
NOISE = ["{t}", "{t} (m/f/d)", "{t} - Full Time", "{l}{r} @ HQ", "{t}, Remote", "{l}{r} & Team Lead",
         "{t} [Contract]", "{t} - Night Shift"]
PARAPHRASES = ["{syn} {obj}", "{gerund} {obj}", "ability to {label}", "experience in {gerund} {obj}",
               "skilled at {gerund} {obj}", "{label} (advanced)", "{obj} handling", "{syn2} {obj}",
               "able to {syn} {obj}", "knowledge of how to {label}", "{obj}: {syn}", "{label} in practice",
               "responsible for {gerund} {obj}", "competent in {gerund} {obj}", "{gerund} of {obj} tasks",
               "capacity to {syn2} {obj}", "{obj} work", "proficiency in {gerund} {obj}", "{label} effectively",
               "hands-on {obj} skills", "{syn} all {obj}", "routinely {syn} {obj}"]
SENTENCES = ["You will {label} as part of a small, friendly team.", "The ideal candidate is able to {label}.",
             "We are looking for someone who can {label} with minimal supervision.",
             "Must be able to {label} under time pressure.", "Nice to have: prior experience {gerund} {obj}.",
             "In this role you will {syn} {obj} for our clients.",
             "Your tasks include {gerund} {obj} and reporting on progress.",
             "You have a proven track record when it comes to {gerund} {obj}.",
             "Training is provided to help you {label}.", "Candidates should be comfortable {gerund} {obj}.",
             "Key duty: {description}", "Day to day, you {syn2} {obj} alongside senior colleagues."]

_TAG = re.compile(r"<skill_name>(.*?)</skill_name>", re.DOTALL)
_DESCRIPTION = re.compile(r"<skill_description>(.*?)</skill_description>", re.DOTALL)
_ALREADY = re.compile(r"no duplicates: (\[.*\])\s*$", re.DOTALL)
_COUNT = re.compile(r"^Return a (?:list|LIST) (?:of|OF) (\d+)")


def _gerund(verb: str) -> str:
    if verb.endswith("ee"):
        return verb + "ing"
    if verb.endswith("e"):
        return verb[:-1] + "ing"
    return verb + "ing"


def _parts(label: str) -> dict[str, str]:
    words = label.split()
    if len(words) > 1 and words[0].lower() in VERB_SYNONYMS:
        verb, obj = words[0].lower(), " ".join(words[1:])
        syn = VERB_SYNONYMS[verb]
        return {"label": label, "obj": obj, "gerund": _gerund(verb), "syn": syn[0], "syn2": syn[-1]}
    return {"label": f"work with {label}", "obj": label, "gerund": "working with", "syn": "work with",
            "syn2": "deal with"}


def _rotate(options: list[str], key: str) -> list[str]:
    start = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % len(options)
    return options[start:] + options[:start]


def rule_items(kind: str, label: str, description: str, n: int, already: list[str]) -> list[str]:
    """``n`` deterministic items for a skill from the templates, none equal to one in ``already``."""
    parts = _parts(label)
    first_sentence = (description.split(". ")[0].rstrip(".") + ".") if description else f"{parts['label']}."
    if kind == "titles":
        field_name = parts["obj"].title()
        candidates = [noise.format(t=f"{level}{field_name} {role}", l=level, r=f"{field_name} {role}")
                      for role in _rotate(ROLES, label) for level, noise in zip(LEVELS, _rotate(NOISE, role), strict=False)]
    else:
        templates = PARAPHRASES if kind == "paraphrases" else SENTENCES
        candidates = [t.format(**parts, description=first_sentence) for t in _rotate(templates, label)]
    seen = {a.casefold() for a in already}
    out = []
    for text in candidates:
        text = " ".join(text.split())
        if text.casefold() not in seen and text.casefold() != label.casefold():
            seen.add(text.casefold())
            out.append(text)
        if len(out) == n:
            break
    return out


class RuleResponder:
    """Answers our three prompts from templates (see module docstring); anything else gets a 400."""

    def __init__(self, model: str = "uwe-dev-rules") -> None:
        self.model = model

    def __call__(self, payload: dict[str, Any], index: int) -> Reply:
        user = next((m.get("content", "") for m in reversed(payload.get("messages", [])) if m.get("role") == "user"), "")
        count, skill = _COUNT.match(user), _TAG.search(user)
        if not count or not skill:
            return Reply(400, {"error": {"message": "the dev server only answers uwe_lightning.enrich prompts"}})
        kind = "titles" if "job titles" in user[:120] else "paraphrases" if "PARAPHRASES" in user[:60] else "sentences"
        description = _DESCRIPTION.search(user)
        already = _ALREADY.search(user)
        items = rule_items(kind, skill.group(1).strip(), description.group(1).strip() if description else "",
                           int(count.group(1)), json.loads(already.group(1)) if already else [])
        return items_reply(items, self.model)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m uwe_lightning.enrichment.devserver",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--model", default="uwe-dev-rules")
    args = parser.parse_args(argv)
    server = ChatServer(RuleResponder(args.model), args.host, args.port, model=args.model)
    print(f"[devserver] deterministic rules, no model: {server.base_url}/chat/completions", flush=True)
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()


if __name__ == "__main__":
    main()
