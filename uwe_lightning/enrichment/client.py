"""Chat completions through the ``openai`` SDK (pip extra ``[enrich]``) against any OpenAI-compatible endpoint.

``base_url`` points the SDK at OpenAI, vLLM, llama.cpp's server, Ollama or any other server that speaks
``POST {base_url}/chat/completions``. The SDK does the protocol: the request, the key header, timeouts, typed
errors and the parsed completion. The retry policy is ours, on top of single SDK attempts (``max_retries=0``),
because the run needs what the SDK's built-in retries do not give: every attempt counted by outcome (the
``http`` block of each step's stats), the backoff set from the config (``endpoint.backoff_s`` /
``max_backoff_s``; a ``Retry-After`` header wins) and a fast stop on an endpoint that was never reached.

Per request: retries with exponential backoff on 408 / 409 / 429 / 5xx, timeouts and connections dropped after
the endpoint once answered. 401 / 403 / 404 (wrong key, base URL or model) are :class:`EndpointError` (the run
stops: every other request would fail the same way), and so is a connection that fails before the endpoint
ever answered (a host that does not resolve, a refused port): one line at once, no retry loop. Any other
refusal is a :class:`RequestFailed` for that request only.

The API key is sent as ``Authorization: Bearer ...`` and nowhere else: it is not part of any payload, cache
key or file, ``repr(Endpoint)`` hides it, and every error text is passed through :meth:`Endpoint.redact`.
An empty key sends no Authorization header (local servers).
"""

from __future__ import annotations

import os
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from uwe_lightning.io import ConfigError, require

DEFAULT_BASE_URL = "https://api.openai.com/v1"
RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
FATAL_STATUS = {401: "the endpoint refused the API key", 403: "the API key may not use this endpoint or model",
                404: "no such endpoint or model (check endpoint.base_url and endpoint.model)"}
#: Payload keys passed to the SDK as its own arguments; any other key (``endpoint.extra_body``) goes in
#: ``extra_body``, so a server's own sampling options reach it unchanged.
SDK_ARGUMENTS = ("temperature", "max_tokens", "seed", "response_format", "top_p", "stop", "presence_penalty",
                 "frequency_penalty")
_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


class RequestFailed(RuntimeError):
    """One request that failed for good (its retries spent, or refused); the run goes on without it."""


class EndpointError(ConfigError):
    """The endpoint cannot serve this run at all (key, URL, model, unreachable): one line, exit 2."""


@dataclass
class Answer:
    content: str | None
    finish_reason: str | None = None
    usage: dict[str, int] = field(default_factory=dict)


@dataclass
class Endpoint:
    """Where requests go and how hard to try. ``base_url`` / ``api_key`` default to ``$OPENAI_BASE_URL`` /
    ``$OPENAI_API_KEY`` (see :meth:`resolve`); an empty key sends no Authorization header (local servers)."""

    base_url: str = DEFAULT_BASE_URL
    api_key: str = field(default="", repr=False)
    timeout_s: float = 120.0
    retries: int = 5
    backoff_s: float = 2.0
    max_backoff_s: float = 60.0

    @classmethod
    def resolve(cls, base_url: str | None = None, api_key: str | None = None, **kw: Any) -> Endpoint:
        """Config values first, then the environment, then OpenAI's URL / no key."""
        url = base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
        parts = urllib.parse.urlparse(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"endpoint.base_url must be an http(s) URL such as {DEFAULT_BASE_URL}, got {url!r}")
        return cls(base_url=url.rstrip("/"), api_key=key, **kw)

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def redact(self, text: str) -> str:
        """``text`` with the API key (if any) replaced by ``***``."""
        return text.replace(self.api_key, "***") if self.api_key else text

    def backoff(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait before retry ``attempt`` (0-based): ``Retry-After`` if given, else exponential."""
        if retry_after:
            try:
                return min(max(float(retry_after), 0.0), self.max_backoff_s)
            except ValueError:
                pass
        return min(self.backoff_s * 2**attempt, self.max_backoff_s)


class ChatClient:
    """Sends chat-completions payloads to an :class:`Endpoint` through one ``openai.OpenAI`` client;
    thread-safe; counts what happened (``counts``: attempts, statuses, timeouts, connection errors)."""

    def __init__(self, endpoint: Endpoint) -> None:
        openai = require("openai", "the enrichment client (python -m uwe_lightning.enrich)")
        self.endpoint = endpoint
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._reached = False  # set by the first answer of any status: from then on a lost connection is retried
        self._errors = openai
        host = urllib.parse.urlparse(endpoint.base_url).hostname or ""
        # never send a local server's traffic through a proxy from the environment
        http_client = openai.DefaultHttpxClient(trust_env=host not in _LOOPBACK)
        # the SDK refuses an empty key; with none, a placeholder is given and the header is left out per request
        self._sdk = openai.OpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key or "no-key",
                                  timeout=endpoint.timeout_s, max_retries=0, http_client=http_client)
        self._headers: dict[str, Any] = {} if endpoint.api_key else {"Authorization": openai.Omit()}

    def _count(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1

    def _send(self, payload: dict[str, Any]) -> Any:
        """One attempt: the SDK's ``ChatCompletion`` (or its typed exception)."""
        body = dict(payload)
        model, messages = body.pop("model"), body.pop("messages")
        arguments = {key: body.pop(key) for key in SDK_ARGUMENTS if key in body}
        return self._sdk.chat.completions.create(model=model, messages=messages, **arguments,
                                                 extra_body=body or None, extra_headers=self._headers)

    def complete(self, payload: dict[str, Any]) -> Answer:
        """The first choice of a successful answer; retries as the module docstring says."""
        openai, endpoint = self._errors, self.endpoint
        last = ""
        unreachable = True
        retry_after: str | None = None
        for attempt in range(endpoint.retries + 1):
            if attempt:
                time.sleep(endpoint.backoff(attempt - 1, retry_after))
            retry_after = None
            self._count("http_requests")
            try:
                response = self._send(payload)
            except openai.APITimeoutError:
                self._count("timeouts")
                unreachable = False
                last = f"timeout after {endpoint.timeout_s:g} s"
                continue
            except openai.APIConnectionError as err:  # refused, unresolvable, dropped
                self._count("connection_errors")
                last = endpoint.redact(f"connection error: {err.__cause__ or err}")
                if not self._reached:
                    raise EndpointError(f"cannot reach {endpoint.url} ({last}); is the server running and is "
                                        "endpoint.base_url / $OPENAI_BASE_URL right?") from None
                continue
            except openai.APIStatusError as err:
                self._reached = True
                unreachable = False
                status = err.status_code
                self._count(f"status_{status}")
                detail = endpoint.redact(_text(err.response)[:300].strip())
                if status in FATAL_STATUS:
                    raise EndpointError(f"{endpoint.url}: HTTP {status}: {FATAL_STATUS[status]}: {detail}") from None
                last = f"HTTP {status}: {detail}"
                if status not in RETRY_STATUS and status < 500:
                    raise RequestFailed(last) from None
                retry_after = err.response.headers.get("retry-after")
                continue
            except openai.APIError as err:  # a 200 whose body the SDK could not read
                self._reached = True
                self._count("status_200")
                raise RequestFailed(endpoint.redact(f"not a chat completion: {err}")) from None
            self._reached = True
            self._count("status_200")
            return _answer(response, endpoint)
        if unreachable:
            raise EndpointError(f"cannot reach {endpoint.url} after {endpoint.retries + 1} attempts ({last}); "
                                "is the server running (endpoint.base_url / $OPENAI_BASE_URL)?")
        raise RequestFailed(f"gave up after {endpoint.retries + 1} attempts: {last}")


def _text(response: Any) -> str:
    try:
        return str(response.text)
    except Exception:  # a body that cannot be decoded says nothing more than the status
        return ""


def _answer(response: Any, endpoint: Endpoint) -> Answer:
    """The first choice of a 200 answer; a body that is not a chat completion is a :class:`RequestFailed`."""
    try:
        choice = response.choices[0]
        content = choice.message.content
        finish_reason = choice.finish_reason
    except (AttributeError, IndexError, TypeError) as err:
        raise RequestFailed(endpoint.redact(f"not a chat completion ({type(err).__name__}): "
                                            f"{str(response)[:200]}")) from err
    usage_obj = getattr(response, "usage", None)
    usage_dict = usage_obj.model_dump() if hasattr(usage_obj, "model_dump") else dict(usage_obj or {})
    usage = {k: int(v) for k, v in usage_dict.items() if isinstance(v, int) and not isinstance(v, bool)}
    return Answer(content=endpoint.redact(content) if isinstance(content, str) else None,
                  finish_reason=finish_reason, usage=usage)
