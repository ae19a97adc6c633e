"""Per-model token prices for the enrichment dry run's cost estimate: one small, dated table, kept here only.

Prices are USD per 1M tokens, OpenAI's standard tier (no Batch API or cached-input discounts), as listed on
https://platform.openai.com/docs/pricing; the values were read from public copies of that page dated March to
June 2026 (this table was not re-checked against the page itself, which this project's machines cannot reach).
Prices change: check the page before a large run, or give your own with ``estimate.input_per_million`` /
``estimate.output_per_million`` (they win over the table). A model that is not here (a local vLLM / llama.cpp /
Ollama model, a fine-tune, another provider) gets no estimate rather than a guess.
"""

from __future__ import annotations

from collections.abc import Mapping

PRICES_AS_OF = "2026-06"
PRICES_SOURCE = "https://platform.openai.com/docs/pricing (standard tier)"

#: model -> (input, output) USD per 1M tokens.
PRICES_PER_MILLION: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),  # the paper's generator
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
}


def price_of(model: str, override: Mapping[str, float | None] | None = None) -> dict[str, object] | None:
    """``{"input_per_million", "output_per_million", "source"}`` for ``model``: the user's prices when both are
    given, else the table's (a dated snapshot such as ``gpt-4o-mini-2024-07-18`` takes its base model's price),
    else None (no guess).

    >>> price_of("gpt-4o-mini")["input_per_million"]
    0.15
    >>> price_of("gpt-4o-mini-2024-07-18")["output_per_million"]
    0.6
    >>> price_of("Qwen/Qwen2.5-7B-Instruct") is None
    True
    >>> price_of("my-model", {"input_per_million": 1.0, "output_per_million": 2.0})["source"]
    'estimate.input_per_million / output_per_million'
    """
    override = override or {}
    if override.get("input_per_million") is not None and override.get("output_per_million") is not None:
        return {"input_per_million": float(override["input_per_million"]),  # type: ignore[arg-type]
                "output_per_million": float(override["output_per_million"]),  # type: ignore[arg-type]
                "source": "estimate.input_per_million / output_per_million"}
    name = model.rsplit("/", 1)[-1] if model.startswith("openai/") else model
    base = name if name in PRICES_PER_MILLION else _undated(name)
    if base not in PRICES_PER_MILLION:
        return None
    inp, out = PRICES_PER_MILLION[base]
    return {"input_per_million": inp, "output_per_million": out,
            "source": f"price table uwe_lightning/enrichment/prices.py ({base}, {PRICES_SOURCE}, as of {PRICES_AS_OF})"}


def _undated(name: str) -> str:
    """``gpt-4o-mini-2024-07-18`` -> ``gpt-4o-mini`` (OpenAI's dated snapshots); other names unchanged."""
    parts = name.split("-")
    if len(parts) > 3 and all(p.isdigit() for p in parts[-3:]) and len(parts[-3]) == 4:
        return "-".join(parts[:-3])
    return name
