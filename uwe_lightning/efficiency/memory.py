"""Peak training memory of one step, per device: the scorer's estimate extended to the encoder and the optimiser.

:func:`plan` counts, in bytes, per component and per phase (``python -m uwe_lightning.plan_memory`` prints it
for a train config):

- **weights** ``4P``, **gradients** ``4P``, **AdamW states** ``8P`` (fp32 master copies, also under bf16-mixed);
  bf16 autocast keeps bf16 copies of the weights during a forward (``2P``); DDP keeps its gradient buckets
  (``4P``); GradCache holds each mini-batch's parameter gradients next to their running sum (``4P``, plus one
  copy of the largest parameter, see below).
- **encoder activations** kept for backward, per layer and token (counted with
  ``torch.autograd.graph.saved_tensors_hooks`` on BERT and MPNet, fp32, dropout on; least-squares fit over four
  shapes, < 1 % error, re-checked in ``tests/test_memory_plan.py``): :data:`LAYER_FLOATS_PER_TOKEN` = ``10 h +
  2 i`` floats (hidden ``h``, intermediate ``i``), plus ``3 L^2`` per head (:data:`ATTENTION_MAPS`: softmax
  output, dropout mask and output, where the attention is materialised: eager attention, and PyTorch's CPU SDPA
  with dropout; CUDA SDPA kernels keep none), plus ``3 h`` per token for the embeddings. With backbone
  checkpointing a layer keeps only its input (``h`` per token) and one layer at a time is recomputed. Texts
  encoded at once: every text of this device's shard (skills + each graph's texts), or one GradCache
  mini-batch. One more layer of the largest pass is counted as backward working memory.
- **embedding cache** (GradCache: the cached token embeddings and their gradients) and **gathered texts** (DDP:
  every rank's text tokens and their gradients).
- **scoring**: :func:`uwe_lightning.model.pairwise.estimate_peak_bytes` per graph for this device's skill rows
  against all texts (``4-D`` tensors of the scorer; chunked and checkpointed as configured).

The **peak** is the static part (weights, AdamW states, autocast copies, DDP buckets) plus the larger of two
phases that do not overlap in time: *while scoring* (the scores' forward and backward: encoder activations are
still kept, unless GradCache dropped them, and no parameter gradient exists yet) and *while the encoder runs
backward* (activations, one layer's working memory and the parameter gradients, counted together although the
activations shrink as the gradients appear). A GradCache backward holds the mini-batch's gradients next to their
running sum, and the word embeddings' dense backward needs about one more copy of that matrix for a moment
(measured on CPU: 82 MiB peak for MiniLM's 44.7 MiB matrix, with ``backward()`` and ``torch.autograd.grad`` alike,
``experiments/checks/grad_copy_check.py``); in a plain step that moment is covered by counting the activations and the
gradients together.

Every text is assumed ``max_length`` tokens long (the budget) unless ``lengths`` gives each group's padded
length (``plan_memory --lengths auto`` measures them on the configured data): real batches need less. Sizes
under bf16-mixed (2 bytes per activation, fp32 attention maps) are the same rule, not measured on a GPU; the CPU
check is ``experiments/checks/memory_check.py`` (``experiments/results/memory/``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

from uwe_lightning.model.backbones import resolve_backbone
from uwe_lightning.model.pairwise import estimate_peak_bytes

LAYER_FLOATS_PER_TOKEN = (10, 2)
"""Floats kept per token by one transformer layer in training: ``10 * hidden + 2 * intermediate``."""
ATTENTION_MAPS = 3
"""``[L, L]`` maps kept per head and layer where attention is materialised (with dropout)."""
EMBEDDING_FLOATS_PER_TOKEN = 3
"""Floats per token (times hidden) kept by the embedding layer (sum, LayerNorm, dropout)."""
#: 4-D ``[rows, N, L, L]`` tensors a scorer keeps for backward / needs at once per chunk (two directions).
SCORER_4D = {"softmax": (3, 7), "maxsim": (2, 4), "mean": (0, 0), "softmax_ymean": (0, 0)}
GIB = 2**30


@dataclass(frozen=True)
class BackboneShape:
    """What the plan needs of a transformer: sizes, parameter count, how it materialises attention."""

    name: str
    hidden: int
    layers: int
    heads: int
    intermediate: int
    params: int
    attention: str = "eager"  # transformers' attn_implementation
    attention_dropout: float = 0.1
    largest_param: int = 0  # elements of the largest parameter tensor (the word embeddings)

    @classmethod
    def from_pretrained(cls, name_or_path: str, model_dir: str | None = None) -> BackboneShape:
        """Read the config only (no weights): the parameter count comes from a model built on the meta device."""
        import torch
        from transformers import AutoConfig, AutoModel

        config = AutoConfig.from_pretrained(resolve_backbone(name_or_path, model_dir))
        with torch.device("meta"):
            model = AutoModel.from_config(config)
        return cls(name=Path(str(name_or_path)).name, hidden=config.hidden_size, layers=config.num_hidden_layers,
                   heads=config.num_attention_heads, intermediate=config.intermediate_size,
                   params=sum(p.numel() for p in model.parameters()),
                   largest_param=max(p.numel() for p in model.parameters()),
                   attention=str(model.config._attn_implementation or "eager"),
                   attention_dropout=float(getattr(config, "attention_probs_dropout_prob", 0.1) or 0.0))


@dataclass(frozen=True)
class StepShape:
    """One training step on one device: the global batch, its sharding and the memory options."""

    skills: int = 512
    texts_per_graph: tuple[int, ...] = (512, 512, 512)
    max_length: int = 64
    world: int = 1
    grad_cache: int | None = None  # mini-batch size, in texts or tokens (grad_cache_unit)
    grad_cache_unit: str = "texts"
    backbone_checkpointing: bool = False
    scorer: str = "softmax"
    score_chunk_size: int | None = 64
    score_checkpoint: bool = True
    precision: str = "32-true"
    device: str = "cuda"
    lengths: tuple[int, ...] | None = None  # padded tokens of the skills and of each graph (None: max_length)

    def group_lengths(self) -> tuple[int, ...]:
        """Padded length of each group (skills, then each graph): ``lengths`` or the token budget for all."""
        lengths = self.lengths or (self.max_length,) * (1 + len(self.texts_per_graph))
        if len(lengths) != 1 + len(self.texts_per_graph):
            raise ValueError(f"lengths {lengths}: one per group (skills + {len(self.texts_per_graph)} graphs)")
        return tuple(min(int(n), self.max_length) for n in lengths)


def _shard(n: int, world: int) -> int:
    return math.ceil(n / world)  # the largest shard


def attention_maps(backbone: BackboneShape, device: str) -> int:
    """``[L, L]`` maps per head and layer kept for backward (see the module docstring)."""
    if backbone.attention == "sdpa" and device == "cuda":
        return 0
    return ATTENTION_MAPS if backbone.attention_dropout > 0 else 1


def encoder_pass_bytes(b: BackboneShape, texts: int, length: int, act_bytes: int, maps: int,
                       checkpointing: bool) -> tuple[int, int]:
    """(kept for backward, one layer's working memory) of encoding ``texts`` texts of ``length`` tokens."""
    tokens = texts * length
    layer = tokens * (LAYER_FLOATS_PER_TOKEN[0] * b.hidden + LAYER_FLOATS_PER_TOKEN[1] * b.intermediate) * act_bytes
    layer += texts * b.heads * length * length * maps * 4  # attention maps stay fp32 under autocast
    embeddings = tokens * EMBEDDING_FLOATS_PER_TOKEN * b.hidden * act_bytes
    kept = embeddings + (b.layers * tokens * b.hidden * act_bytes if checkpointing else b.layers * layer)
    return kept, layer


def plan(b: BackboneShape, s: StepShape) -> dict[str, int]:
    """Bytes per component, per phase and ``peak`` for one step of ``s`` on one device (see the module doc).

    >>> bert = BackboneShape("tiny", hidden=32, layers=2, heads=2, intermediate=64, params=100_000,
    ...                      largest_param=32_000)
    >>> step = StepShape(skills=64, texts_per_graph=(64, 64, 64), max_length=32, device="cpu")
    >>> plain, cached = plan(bert, step), plan(bert, replace(step, grad_cache=8))
    >>> static = 12 * bert.params  # fp32 weights + AdamW states (one device, no autocast)
    >>> plain["peak"] == static + max(plain["while_scoring"], plain["while_encoder_backward"])
    True
    >>> cached["encoder_activations"] < plain["encoder_activations"] // 8 and cached["peak"] < plain["peak"]
    True
    """
    bf16 = s.precision.startswith("bf16")
    act_bytes = 2 if bf16 else 4
    maps = attention_maps(b, s.device)
    local_texts = [_shard(s.skills, s.world)] + [_shard(n, s.world) for n in s.texts_per_graph]
    lengths = s.group_lengths()
    if s.grad_cache is None:
        kept, working = 0, 0
        for n, length in zip(local_texts, lengths, strict=True):  # every group's activations live until backward
            k, w = encoder_pass_bytes(b, n, length, act_bytes, maps, s.backbone_checkpointing)
            kept, working = kept + k, max(working, w)
    else:
        longest = max(lengths)
        per_pass = s.grad_cache if s.grad_cache_unit == "texts" else max(s.grad_cache // longest, 1)
        kept, working = encoder_pass_bytes(b, min(per_pass, max(local_texts)), longest, act_bytes, maps,
                                           s.backbone_checkpointing)
    token_bytes = [n * b.hidden * act_bytes for n in lengths]
    cache = 2 * sum(n * t for n, t in zip(local_texts, token_bytes, strict=True)) if s.grad_cache else 0
    gathered = 2 * sum(n * t for n, t in zip(s.texts_per_graph, token_bytes[1:], strict=True)) if s.world > 1 else 0
    saved_4d, working_4d = SCORER_4D.get(s.scorer, SCORER_4D["softmax"])
    rows, lq = _shard(s.skills, s.world), lengths[0]
    outputs = [2 * rows * n * 4 for n in s.texts_per_graph]  # fwd + rev scores, fp32
    tensors_4d = [estimate_peak_bytes(rows, n, lq, ly, 0, s.score_chunk_size, 4, s.score_checkpoint, saved_4d,
                                      working_4d) - out
                  for n, ly, out in zip(s.texts_per_graph, lengths[1:], outputs, strict=True)]  # h=0: no inputs
    kept_4d = [0 if s.score_checkpoint else saved_4d * rows * n * lq * ly * 4
               for n, ly in zip(s.texts_per_graph, lengths[1:], strict=True)]
    # graphs are scored one after another: what each keeps adds up, one works at a time
    scoring = sum(outputs) + sum(kept_4d) + max((t - k for t, k in zip(tensors_4d, kept_4d, strict=True)),
                                                default=0)
    p = b.params
    parts = {
        "weights": 4 * p,
        "adamw_states": 8 * p,
        "autocast_weights": 2 * p if bf16 else 0,
        "ddp_buckets": 4 * p if s.world > 1 else 0,
        "encoder_activations": kept,
        "backward_working": working,
        "gradients": 4 * p,
        # GradCache: each mini-batch's gradients (torch.autograd.grad) next to the running sum, plus the moment
        # the embeddings' dense backward needs one more copy of the largest matrix (82 MiB peak for 44.7 MiB)
        "grad_cache_gradients": 4 * p + 4 * b.largest_param if s.grad_cache is not None else 0,
        "embedding_cache": cache,
        "gathered_texts": gathered,
        "scoring": scoring,
    }
    static = parts["weights"] + parts["adamw_states"] + parts["autocast_weights"] + parts["ddp_buckets"]
    # Two phases that do not overlap: the scores' forward + backward (the encoder's activations are still kept,
    # unless GradCache dropped them; no parameter gradient exists yet), then the encoder's backward
    # (activations shrink while gradients appear; counted together, to be safe).
    parts["while_scoring"] = (kept if s.grad_cache is None else 0) + cache + gathered + scoring
    parts["while_encoder_backward"] = (kept + working + parts["gradients"] + parts["grad_cache_gradients"]
                                       + cache // 2)  # GradCache: the cache's gradients are still held
    parts["peak"] = static + max(parts["while_scoring"], parts["while_encoder_backward"])
    return parts


def variants(s: StepShape, grad_cache: int) -> dict[str, StepShape]:
    """The configured step and the same step with / without GradCache and backbone checkpointing."""
    return {
        "as configured": s,
        "plain": replace(s, grad_cache=None, backbone_checkpointing=False),
        "backbone checkpointing": replace(s, grad_cache=None, backbone_checkpointing=True),
        f"GradCache {grad_cache} {s.grad_cache_unit}": replace(s, grad_cache=grad_cache, backbone_checkpointing=False),
        f"GradCache {grad_cache} + checkpointing": replace(s, grad_cache=grad_cache, backbone_checkpointing=True),
    }


def largest_grad_cache(b: BackboneShape, s: StepShape, budget_bytes: int) -> int | None:
    """The largest GradCache mini-batch (texts) whose plan fits ``budget_bytes``; None if even 1 does not."""
    best, lo, hi = None, 1, max(s.skills, *s.texts_per_graph)
    while lo <= hi:
        mid = (lo + hi) // 2
        if plan(b, replace(s, grad_cache=mid, grad_cache_unit="texts"))["peak"] <= budget_bytes:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return best


def markdown(b: BackboneShape, rows: dict[str, StepShape]) -> str:
    """A table: one column per variant, one row per component (GiB)."""
    plans = {name: plan(b, s) for name, s in rows.items()}
    first = next(iter(rows.values()))
    tokens = (f"{first.max_length} tokens" if first.lengths is None else
              f"{'/'.join(map(str, first.group_lengths()))} padded tokens (skills/graphs; budget {first.max_length})")
    head = (f"{b.name} ({b.params / 1e6:.1f}M parameters, h={b.hidden}, {b.layers} layers, {b.attention} "
            f"attention) | {first.skills} skills + {'/'.join(map(str, first.texts_per_graph))} texts x {tokens} | "
            f"{first.world} device(s) | {first.precision} on {first.device} | scorer {first.scorer}, chunk "
            f"{first.score_chunk_size}, checkpoint {first.score_checkpoint}")
    lines = [head, "", "| GiB | " + " | ".join(plans) + " |", "|---|" + "---:|" * len(plans)]
    for key in next(iter(plans.values())):
        cells = [f"{p[key] / GIB:.2f}" for p in plans.values()]
        name = {"peak": "**peak** (weights, AdamW, ... + the larger phase)"}.get(key, key)
        lines.append(f"| {f'*{name}*' if key.startswith('while_') else name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
