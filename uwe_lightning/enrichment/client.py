"""A minimal client for the OpenAI chat-completions protocol (``POST {base_url}/chat/completions``).

Standard library only (``urllib``), so it runs against OpenAI, vLLM, llama.cpp's server, Ollama or any
compatible endpoint without an SDK. Per request: a timeout, and retries with exponential backoff (honouring a
``Retry-After`` header) on 408 / 409 / 429 / 5xx, timeouts and dropped connections. 401 / 403 / 404 (wrong key,
base URL or model) and an endpoint that stays unreachable are :class:`EndpointError` (the run stops: every
other request would fail the same way); any other refusal is a :class:`RequestFailed` for that request only.

The API key is sent as ``Authorization: Bearer ...`` and nowhere else: it is not part of any payload, cache
key or file, ``repr(Endpoint)`` hides it, and every error text is passed through :meth:`Endpoint.redact`.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from uwe_lightning.io import ConfigError

DEFAULT_BASE_URL = "https://api.openai.com/v1"
RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
FATAL_STATUS = {401: "the endpoint refused the API key", 403: "the API key may not use this endpoint or model",
                404: "no such endpoint or model (check endpoint.base_url and endpoint.model)"}
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
        scheme = urllib.parse.urlparse(url).scheme
        if scheme not in ("http", "https"):
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
    """Posts chat-completions payloads to an :class:`Endpoint`; thread-safe; counts what happened."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        host = urllib.parse.urlparse(endpoint.base_url).hostname or ""
        proxies = {} if host in _LOOPBACK else None  # never send a local server's traffic through a proxy
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler(proxies))

    def _count(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1

    def _post(self, payload: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.endpoint.api_key:
            headers["Authorization"] = f"Bearer {self.endpoint.api_key}"
        request = urllib.request.Request(self.endpoint.url, data=json.dumps(payload).encode(), headers=headers,
                                         method="POST")
        try:
            with self._opener.open(request, timeout=self.endpoint.timeout_s) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers or {}), err.read() or b""

    def complete(self, payload: dict[str, Any]) -> Answer:
        """The first choice of a successful answer; retries as the module docstring says."""
        endpoint = self.endpoint
        last = ""
        unreachable = True
        retry_after: str | None = None
        for attempt in range(endpoint.retries + 1):
            if attempt:
                time.sleep(endpoint.backoff(attempt - 1, retry_after))
            retry_after = None
            self._count("http_requests")
            try:
                status, headers, body = self._post(payload)
            except (OSError, http.client.HTTPException) as err:  # timeouts, refused / dropped connections
                reason = getattr(err, "reason", err)
                timed_out = isinstance(err, TimeoutError) or isinstance(reason, TimeoutError)
                self._count("timeouts" if timed_out else "connection_errors")
                unreachable &= not timed_out
                last = endpoint.redact(f"{'timeout' if timed_out else 'connection error'}: {reason}")
                continue
            unreachable = False
            self._count(f"status_{status}")
            if status == 200:
                return _answer(body, endpoint)
            detail = endpoint.redact(body.decode("utf-8", "replace")[:300].strip())
            if status in FATAL_STATUS:
                raise EndpointError(f"{endpoint.url}: HTTP {status}: {FATAL_STATUS[status]}: {detail}")
            last = f"HTTP {status}: {detail}"
            if status not in RETRY_STATUS and status < 500:
                raise RequestFailed(last)
            retry_after = headers.get("Retry-After") or headers.get("retry-after")
        if unreachable:
            raise EndpointError(f"cannot reach {endpoint.url} after {endpoint.retries + 1} attempts ({last}); "
                                "is the server running (endpoint.base_url / $OPENAI_BASE_URL)?")
        raise RequestFailed(f"gave up after {endpoint.retries + 1} attempts: {last}")


def _answer(body: bytes, endpoint: Endpoint) -> Answer:
    """The first choice of a 200 answer; a body that is not a chat completion is a :class:`RequestFailed`."""
    try:
        data = json.loads(body)
        choice = data["choices"][0]
        content = choice["message"].get("content")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as err:
        raise RequestFailed(endpoint.redact(f"not a chat completion ({type(err).__name__}): "
                                            f"{body[:200].decode('utf-8', 'replace')}")) from err
    usage = {k: int(v) for k, v in (data.get("usage") or {}).items() if isinstance(v, int)}
    return Answer(content=endpoint.redact(content) if isinstance(content, str) else None,
                  finish_reason=choice.get("finish_reason"), usage=usage)
