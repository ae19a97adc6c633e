"""What a ``POST /rank`` may ask for, what it answers, and the one-line 4xx answer when it asks for too much or
for nonsense.

A request names a target space only by the name it was loaded under at start-up (never a path: unknown fields
are rejected and names are looked up in the loaded spaces), and is bounded in queries, characters per query,
``k`` and body bytes (:class:`Limits`), so a single request cannot make the server encode for minutes. Text the
model cannot take (a lone surrogate, anything its tokenizer refuses) is found here, before the request is queued,
so it never reaches a model call shared with other requests. Errors are :class:`ErrorDetail`,
``{"detail": "<field>: <what is wrong and what to do>"}``, with 413 for size limits and 422 for bad values;
:func:`request_schema` is the request's JSON schema with every limit in it, as ``/openapi.json`` states it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from uwe_lightning.ranking.texts import is_blank

TOO_LARGE = 413
INVALID = 422
#: ``count(texts) -> tokens per text``: the model's tokenizer at its token limit (may raise on text it refuses).
TokenCounter = Callable[[list[str]], list[int]]
EXAMPLE = '{"queries": ["data scientist"], "k": 5}'


@dataclass(frozen=True)
class Limits:
    """Per-request bounds (``limits.*`` of ``conf/serve.yaml``)."""

    max_queries: int = 64
    max_chars: int = 1000
    max_k: int = 100
    max_body_bytes: int = 1_000_000

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"limits.{name} must be a whole number >= 1, got {value!r}")


class RankRequest(BaseModel):
    """The JSON body of ``POST /rank``; the limits are checked by :func:`check_request` (and stated in the
    schema by :func:`request_schema`)."""

    model_config = ConfigDict(extra="forbid")

    queries: list[str] = Field(description="job titles, skills or sentences to rank targets for")
    k: int = Field(5, strict=True, description="targets per query")
    target_space: str | None = Field(None, description="a name from GET /target-spaces (default: the first)")
    direction: str | None = Field(None, description="job2skill | skill2job: picks the target space by direction")

    @field_validator("k", mode="before")
    @classmethod
    def _whole_number(cls, value: Any) -> Any:
        """JSON has one number type: ``5.0`` is the integer 5, as the schema's ``integer`` says; ``5.5``, ``"5"``
        and ``true`` stay refused (``k`` is strict)."""
        return int(value) if isinstance(value, float) and value.is_integer() else value


class ErrorDetail(BaseModel):
    """Every error the service answers (4xx and 5xx): one line."""

    detail: str = Field(description="one line: the field at fault, what is wrong and what to do")


class RankedTarget(BaseModel):
    rank: int = Field(description="1 for the best target")
    id: str
    label: str
    score: float


class QueryResult(BaseModel):
    query: str
    top: list[RankedTarget]


class RankResponse(BaseModel):
    """The answer of ``POST /rank``: one result per query, in the order sent."""

    model: str
    scorer: str
    target_space: str
    k: int = Field(description="targets per query (k capped at the target space's size)")
    results: list[QueryResult]


class RequestRejected(Exception):
    """A request the service refuses: ``status`` (413 or 422) and a one-line ``detail``."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def unicode_problem(text: str) -> str | None:
    """What keeps ``text`` from being UTF-8 (a lone surrogate, which JSON's ``\\ud800`` escape can carry), or None.

    >>> unicode_problem("a\\ud800b")
    'not valid Unicode: a lone surrogate U+D800 at character 1; send text as UTF-8'
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return (f"not valid Unicode: a lone surrogate U+{ord(text[err.start]):04X} at character {err.start}; "
                "send text as UTF-8")
    return None


def check_request(
    request: RankRequest, limits: Limits, spaces: Sequence[str], default_space: str, directions: Mapping[str, str]
) -> str:
    """The loaded target space ``request`` asks for; a :class:`RequestRejected` naming the field otherwise."""
    n = len(request.queries)
    if n == 0:
        raise RequestRejected(INVALID, "queries: empty list; give at least one text")
    if n > limits.max_queries:
        raise RequestRejected(TOO_LARGE, f"queries: {n} texts, at most {limits.max_queries} per request; "
                                         "split them over several requests")
    for i, text in enumerate(request.queries):
        if len(text) > limits.max_chars:
            raise RequestRejected(TOO_LARGE, f"queries[{i}]: {len(text)} characters, at most {limits.max_chars}; "
                                             "shorten the text")
        problem = unicode_problem(text)
        if problem:
            raise RequestRejected(INVALID, f"queries[{i}]: {problem}")
        if is_blank(text):
            raise RequestRejected(INVALID, f"queries[{i}]: empty text (no visible character); give a text")
    if request.k < 1 or request.k > limits.max_k:
        raise RequestRejected(INVALID, f"k: {request.k} is out of range; give 1..{limits.max_k}")
    known = sorted(spaces)
    space = request.target_space
    if space is not None and space not in spaces:
        raise RequestRejected(INVALID, f"target_space: {space!r} is not loaded; known target spaces: {known}")
    if request.direction is not None:
        if request.direction not in directions:
            raise RequestRejected(INVALID, f"direction: {request.direction!r} is not one of {sorted(directions)}")
        wanted = directions[request.direction]
        if wanted not in spaces:
            raise RequestRejected(INVALID, f"direction: {request.direction!r} ranks {wanted}, which is not loaded; "
                                           f"known target spaces: {known}")
        if space is not None and space != wanted:
            raise RequestRejected(INVALID, f"direction: {request.direction!r} ranks {wanted}, but target_space "
                                           f"is {space!r}; give one of the two")
        space = wanted
    return space or default_space


def query_costs(texts: list[str], count: TokenCounter | None) -> list[int]:
    """Per text its cost for the scheduler: tokens at the model's limit (characters + 2 without a tokenizer).

    Text the tokenizer refuses is a 422 naming it: the batch is counted in one call, and only when that fails is
    each text tried alone to find the one at fault.
    """
    if count is None:
        return [len(t) + 2 for t in texts]
    try:
        counts = count(texts)
    except Exception:
        for i, text in enumerate(texts):
            try:
                count([text])
            except Exception as err:
                raise RequestRejected(INVALID, f"queries[{i}]: the model's tokenizer refuses this text "
                                               f"({_one_line(err)}); send plain text") from None
        raise RequestRejected(INVALID, "queries: the model's tokenizer refuses them together; send fewer texts") from None
    return [max(1, int(c)) for c in counts]


def body_error_line(cause: BaseException | None) -> str:
    """One line for a JSON body the parser could not read for a reason other than its syntax.

    >>> body_error_line(UnicodeDecodeError("utf-8", b'{"q": "\\xff"}', 7, 8, "invalid start byte"))
    'body: not UTF-8 (invalid start byte: 0xff at byte 7); send JSON encoded as UTF-8'
    """
    if isinstance(cause, UnicodeDecodeError):
        return (f"body: not UTF-8 ({cause.reason}: 0x{cause.object[cause.start]:02x} at byte {cause.start}); "
                "send JSON encoded as UTF-8")
    if isinstance(cause, RecursionError):
        return f"body: JSON nested too deeply; send an object like {EXAMPLE}"
    return f"body: could not be read as JSON ({_one_line(cause) if cause else 'unknown error'}); send e.g. {EXAMPLE}"


def _one_line(err: BaseException, limit: int = 160) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _escape(code: int) -> str:
    """A code point as a regex escape every JSON-schema dialect reads (``\\uXXXX``); astral ones as themselves."""
    return f"\\u{code:04x}" if code <= 0xFFFF else chr(code)


@functools.lru_cache(maxsize=1)
def visible_text_pattern() -> str:
    """A regex (searched, not anchored) that matches a text with at least one visible character: the schema's
    statement of :func:`~uwe_lightning.ranking.texts.is_blank`, as a class of every code point that is not blank.

    Scans planes 0-3 and 14 (~0.2 s, once per process): in Unicode 14-15 the other planes hold no blank character
    (unassigned, or private use, which is visible). Surrogates are left out: a regex cannot name them everywhere,
    and a lone one is refused anyway (see :func:`unicode_problem`).
    """
    blank = [c for c in (*range(0xD800), *range(0xE000, 0x40000), *range(0xE0000, 0xE1000)) if is_blank(chr(c))]
    ranges: list[tuple[int, int]] = []
    for c in blank:
        if ranges and ranges[-1][1] == c - 1:
            ranges[-1] = (ranges[-1][0], c)
        else:
            ranges.append((c, c))
    return "[^" + "".join(_escape(a) if a == b else f"{_escape(a)}-{_escape(b)}" for a, b in ranges) + "]"


def request_schema(limits: Limits, spaces: Sequence[str], directions: Mapping[str, str]) -> dict[str, Any]:
    """The JSON schema of a ``POST /rank`` body as this service checks it: every limit, the loaded spaces, the
    directions they serve, and that a ``direction`` and a ``target_space`` given together must agree."""
    served = {d: s for d, s in sorted(directions.items()) if s in spaces}
    direction: dict[str, Any] = ({"anyOf": [{"type": "string", "enum": list(served)}, {"type": "null"}]}
                                 if served else {"type": "null"})
    schema: dict[str, Any] = {
        "title": "RankRequest",
        "type": "object",
        "description": (f"Over a size limit (queries, characters, at most {limits.max_body_bytes} bytes of body): "
                        "413; a bad value: 422. Each with one line naming the field."),
        "additionalProperties": False,
        "required": ["queries"],
        "properties": {
            "queries": {
                "type": "array", "minItems": 1, "maxItems": limits.max_queries,
                "description": "job titles, skills or sentences to rank targets for",
                "items": {"type": "string", "minLength": 1, "maxLength": limits.max_chars,
                          "pattern": visible_text_pattern(),
                          "description": "at least one visible character; valid Unicode (no lone surrogates)"},
            },
            "k": {"type": "integer", "minimum": 1, "maximum": limits.max_k, "default": 5,
                  "description": "targets per query (capped at the target space's size)"},
            "target_space": {"anyOf": [{"type": "string", "enum": sorted(spaces)}, {"type": "null"}],
                             "default": None, "description": "a name from GET /target-spaces (default: the first)"},
            "direction": {**direction, "default": None,
                          "description": "picks the target space by direction: " + (", ".join(
                              f"{d} ranks {s}" for d, s in served.items()) or "none is loaded")},
        },
        "examples": [{"queries": ["data scientist"], "k": 5}],
    }
    conflicts = [
        {"required": ["direction", "target_space"],
         "properties": {"direction": {"const": d}, "target_space": {"enum": [o for o in sorted(spaces) if o != s]}}}
        for d, s in served.items() if len(spaces) > 1
    ]
    if conflicts:
        schema["not"] = {"anyOf": conflicts}
    return schema


def _field(loc: Sequence[Any]) -> str:
    """``("body", "queries", 3)`` -> ``queries[3]``."""
    out = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def validation_line(errors: Sequence[Mapping[str, Any]]) -> str:
    """One line for pydantic's validation errors of a request body: the first field at fault, what to do.

    >>> validation_line([{"loc": ("body", "queries", 2), "msg": "Input should be a valid string",
    ...                   "type": "string_type"}])
    'queries[2]: Input should be a valid string'
    """
    if not errors:
        return "body: invalid request"
    err = errors[0]
    field, kind = _field(err.get("loc", ())), err.get("type", "")
    if kind == "json_invalid":
        line = f"body: not valid JSON ({err.get('ctx', {}).get('error', err.get('msg'))})"
    elif kind == "missing":
        line = f"{field}: missing; send e.g. {{\"queries\": [\"data scientist\"], \"k\": 5}}"
    elif kind == "extra_forbidden":
        line = f"{field}: unknown field; allowed: {sorted(RankRequest.model_fields)}"
    elif field == "body" and kind in ("model_attributes_type", "dict_type"):
        line = "body: expected a JSON object like {\"queries\": [\"data scientist\"], \"k\": 5}"
    else:
        line = f"{field}: {err.get('msg', 'invalid')}"
    return line + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")
