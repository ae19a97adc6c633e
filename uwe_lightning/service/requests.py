"""What a ``POST /rank`` may ask for, and the one-line 4xx answer when it asks for too much or for nonsense.

A request names a target space only by the name it was loaded under at start-up (never a path: unknown fields
are rejected and names are looked up in the loaded spaces), and is bounded in queries, characters per query,
``k`` and body bytes (:class:`Limits`), so a single request cannot make the server encode for minutes. Errors
are ``{"detail": "<field>: <what is wrong and what to do>"}`` with 413 for size limits and 422 for bad values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from uwe_lightning.ranking.texts import is_blank

TOO_LARGE = 413
INVALID = 422


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
    """The JSON body of ``POST /rank``; the limits are checked by :func:`check_request`."""

    model_config = ConfigDict(extra="forbid")

    queries: list[str] = Field(description="job titles, skills or sentences to rank targets for")
    k: int = Field(5, strict=True, description="targets per query")
    target_space: str | None = Field(None, description="a name from GET /target-spaces (default: the first)")
    direction: str | None = Field(None, description="job2skill | skill2job: picks the target space by direction")


class RequestRejected(Exception):
    """A request the service refuses: ``status`` (413 or 422) and a one-line ``detail``."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


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
