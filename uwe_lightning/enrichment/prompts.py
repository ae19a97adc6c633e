"""What the LLM is asked per skill (the paper's Appendix B prompts) and how its answer is read.

* ``titles`` (graph J): the paper's job-title prompt, word for word, with its retry sentence ("You already
  provided these job titles, ...") appended when too few valid titles came back; ``N`` is then the remaining
  count (Appendix B, "Synthetic job title generation").
* ``paraphrases`` (graph A): the paper's paraphrase prompt with its three fixed examples from the SkillNorm
  validation set (Appendix B, "Fully synthetic data for SkillNorm"). The paper prints the examples as
  "... show initiative -> initiate action lead police investigations -> ..."; three examples are described,
  so we render them comma-separated (the missing comma reads as a text-extraction artefact). The retry sentence
  is ours, mirroring the titles' one (the paper describes no retry for paraphrases).
* ``sentences`` (graph V): the paper does not generate sentences itself; it uses the synthetic dataset of
  Decorte et al. (2023), 10 ad sentences per ESCO skill, whose prompt it does not print. The prompt here is OURS,
  written in the style of the two above.

Every request also carries a system message asking for ``{"items": [...]}`` (the structured output the paper
enforces; with ``response_format=json_schema`` the server enforces it too). :func:`parse_items` accepts that
object, a bare JSON list, any object whose only list holds the items, and a JSON answer wrapped in Markdown
code fences; anything else is a :class:`MalformedAnswer`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

#: The paper's job-title prompt (Appendix B), ``{n}`` titles for a skill and its ESCO description.
TITLES_PROMPT = (
    "Return a list of {n} unique, real-world job titles for which the given skill is required. 'Real-world' means "
    "titles actually used in industry or job ads. Make heavy use of alternative spellings, paraphrases, synonyms. "
    "Add heavy noise such as alternative upper casing, spellings, paraphrases, synonyms. Add the noisy information "
    "using comma-separation, brackets, &, @, -, or other separators. Remove exact duplicates so every title is "
    "unique. The skill can only occur explicitly in the first job title. You are given:\n"
    "<skill_name>{skill}</skill_name>\n<skill_description>{description}</skill_description>"
)
#: The paper's retry sentence, appended with the titles already generated (Appendix B).
TITLES_RETRY = "You already provided these job titles, make sure there are no duplicates: {already}"

#: The paper's paraphrase prompt (Appendix B), ``{n}`` paraphrases; ``{examples}`` = "a -> b, c -> d, e -> f".
PARAPHRASES_PROMPT = (
    "Return a LIST OF {n} UNIQUE PARAPHRASES of the given skill. Each paraphrase should express the same core "
    "meaning but use different wording. Use synonyms, change word order, add or modify verbs, make it more "
    "specific. Examples: {examples}. Remove exact duplicates so every paraphrase is unique. Maintain the same "
    "skill meaning while varying the expression. You are given:\n<skill_name>{skill}</skill_name>"
)
#: The paper's three fixed examples (from the SkillNorm validation set): (skill, paraphrase).
PARAPHRASE_EXAMPLES = (
    ("supervise correctional procedures", "oversee prison procedures"),
    ("show initiative", "initiate action"),
    ("lead police investigations", "manage police enquiries"),
)
PARAPHRASES_RETRY = "You already provided these paraphrases, make sure there are no duplicates: {already}"

#: OURS (the paper uses Decorte et al. 2023's sentences and prints no prompt for them).
SENTENCES_PROMPT = (
    "Return a list of {n} unique sentences as they could appear in real-world job advertisements, each of which "
    "requires the given skill. Vary the wording, the sentence structure and the context (tasks, requirements, "
    "nice-to-haves); do not repeat the skill name literally in every sentence. Remove exact duplicates so every "
    "sentence is unique. You are given:\n"
    "<skill_name>{skill}</skill_name>\n<skill_description>{description}</skill_description>"
)
SENTENCES_RETRY = "You already provided these sentences, make sure there are no duplicates: {already}"

SYSTEM_PROMPT = 'Answer with one JSON object of the form {"items": ["...", "..."]} holding the list, and nothing else.'

#: The JSON schema of the structured output (``response_format=json_schema``).
ITEMS_SCHEMA = {
    "type": "object",
    "properties": {"items": {"type": "array", "items": {"type": "string"}}},
    "required": ["items"],
    "additionalProperties": False,
}


class MalformedAnswer(ValueError):
    """An answer that holds no JSON list of strings."""


@dataclass(frozen=True)
class Skill:
    """A skill to generate for: its URI (the edge files' ``skill``), preferredLabel and description."""

    uri: str
    label: str
    description: str = ""


@dataclass(frozen=True)
class Kind:
    """One generation task: its prompt, retry sentence, target graph and edge file."""

    name: str
    graph: str
    prompt: str
    retry: str
    edge_file: str

    def user_message(self, skill: Skill, n: int, already: Sequence[str] = (),
                     examples: Sequence[Sequence[str]] = PARAPHRASE_EXAMPLES) -> str:
        """The prompt for ``n`` items; with ``already`` (a retry) the retry sentence and those items appended."""
        text = self.prompt.format(n=n, skill=skill.label, description=skill.description,
                                  examples=render_examples(examples))
        if already:
            text += " " + self.retry.format(already=json.dumps(list(already), ensure_ascii=False))
        return text

    def messages(self, skill: Skill, n: int, already: Sequence[str] = (),
                 examples: Sequence[Sequence[str]] = PARAPHRASE_EXAMPLES) -> list[dict[str, str]]:
        return [{"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": self.user_message(skill, n, already, examples)}]


KINDS = {
    "titles": Kind("titles", "J", TITLES_PROMPT, TITLES_RETRY, "titles.csv"),
    "paraphrases": Kind("paraphrases", "A", PARAPHRASES_PROMPT, PARAPHRASES_RETRY, "A.csv"),
    "sentences": Kind("sentences", "V", SENTENCES_PROMPT, SENTENCES_RETRY, "V.csv"),
}


def render_examples(examples: Sequence[Sequence[str]]) -> str:
    """``[(a, b), (c, d)]`` -> ``"a -> b, c -> d"``.

    >>> render_examples(PARAPHRASE_EXAMPLES).split(", ")[1]
    'show initiative -> initiate action'
    """
    return ", ".join(f"{a} -> {b}" for a, b in examples)


_FENCE = re.compile(r"^```[a-zA-Z]*\s*(.*?)\s*```$", re.DOTALL)


def parse_items(content: str | None) -> list[str]:
    """The list of strings in an answer (see module docstring); :class:`MalformedAnswer` otherwise.

    >>> parse_items('{"items": ["a b", "c"]}'), parse_items('```json\\n["x"]\\n```')
    (['a b', 'c'], ['x'])
    """
    text = (content or "").strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        data = json.loads(text)
    except ValueError as err:
        raise MalformedAnswer(f"not JSON ({err.msg} at char {err.pos})") from err
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        data = data["items"] if isinstance(data.get("items"), list) else (lists[0] if len(lists) == 1 else None)
    if not isinstance(data, list):
        raise MalformedAnswer('expected {"items": [...]} or a JSON list')
    return [item for item in data if isinstance(item, str)]
