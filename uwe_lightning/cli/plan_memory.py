"""``python -m uwe_lightning.plan_memory [train overrides ...] [--budget-gib 24] [--grad-cache N] [--lengths auto]``.

Prints the expected peak memory per device of one training step of the train config that the same overrides
give ``python -m uwe_lightning.train`` (backbone, skills per step, token budget, devices, precision, scorer,
GradCache and checkpointing settings), with and without GradCache / backbone checkpointing
(:mod:`uwe_lightning.efficiency.memory`). ``--budget-gib`` also prints the largest GradCache mini-batch that fits.
Every text counts as ``train.max_length`` tokens unless ``--lengths`` gives the padded length of the skills and of
each graph (``12,20,64,16``), or ``auto`` measures them: the widest of ``--length-steps`` steps of the configured
data, tokenised with the backbone's tokenizer (loads the data).
Reads only the backbone's config (no weights); plain argparse around Hydra's compose API: no run directory.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from uwe_lightning.cli import PLAIN_CLI
from uwe_lightning.cli.errors import run_reporting_user_errors, take_debug_flag
from uwe_lightning.efficiency.memory import (
    GIB,
    BackboneShape,
    StepShape,
    largest_grad_cache,
    markdown,
    variants,
)
from uwe_lightning.io import ConfigError
from uwe_lightning.paths import CONF_DIR


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m uwe_lightning.plan_memory", description=__doc__.splitlines()[0],
                                epilog=f"{PLAIN_CLI}: its options wrap the train config's Hydra overrides "
                                       "(given as arguments), composed without a run directory.")
    p.add_argument("overrides", nargs="*", help="train config overrides, e.g. +experiment=uwe trainer=gpu")
    p.add_argument("--budget-gib", type=float, default=None, help="device memory to fit (GiB)")
    p.add_argument("--grad-cache", type=int, default=None,
                   help="GradCache mini-batch of the variants (default: train.grad_cache_size)")
    p.add_argument("--world", type=int, default=None, help="devices in all (default: trainer.devices x num_nodes)")
    p.add_argument("--lengths", default=None, help="padded tokens of skills,<graphs...>, or 'auto' (from the data)")
    p.add_argument("--length-steps", type=int, default=5, help="steps sampled by --lengths auto")
    return p


def measured_lengths(cfg, steps: int) -> tuple[int, ...]:
    """The widest padded length of the skills and of each trained graph over the first ``steps`` steps."""
    from transformers import AutoTokenizer

    from uwe_lightning.model.backbones import resolve_backbone
    from uwe_lightning.training.run import build_datamodule, build_loss

    graphs = build_loss(cfg).active_graphs
    datamodule = build_datamodule(cfg)
    datamodule.set_tokenizer(AutoTokenizer.from_pretrained(resolve_backbone(str(cfg.model.backbone),
                                                                            cfg.paths.model_dir)))
    datamodule.setup("fit")
    widths = [0] * (1 + len(graphs))
    for step in range(steps):
        batch = datamodule.dataset.batch(step)
        found = [batch.skill_inputs["input_ids"]] + [batch.graphs[g].text_inputs["input_ids"] if g in batch.graphs
                                                     else None for g in graphs]
        widths = [max(w, t.shape[1] if t is not None else 0) for w, t in zip(widths, found, strict=True)]
    return tuple(widths)


def parse_lengths(value: str | None, cfg, steps: int) -> tuple[int, ...] | None:
    if value is None:
        return None
    if value == "auto":
        return measured_lengths(cfg, steps)
    try:
        return tuple(int(v) for v in value.split(","))
    except ValueError:
        raise ConfigError(f"--lengths {value!r}: comma-separated whole numbers (skills,J,V,A) or 'auto'") from None


def step_from_config(cfg, world: int | None = None) -> StepShape:
    """The :class:`StepShape` of a composed train config."""
    from hydra.utils import instantiate

    from uwe_lightning.training.owndata import resolve_data_graphs

    resolve_data_graphs(cfg)  # data=edges: the graphs with an edge file
    graphs = instantiate(cfg.loss, graphs=list(cfg.data.graphs)).active_graphs
    skills = int(cfg.data.skills_per_step)
    if world is None:
        devices, nodes = cfg.trainer.get("devices", 1), cfg.trainer.get("num_nodes", 1)
        if not isinstance(devices, int):
            raise ConfigError(f"trainer.devices={devices!r}: give the number of devices with --world N")
        world = devices * int(nodes or 1)
    t = cfg.train
    return StepShape(
        skills=skills, texts_per_graph=(skills,) * len(graphs), max_length=int(t.max_length), world=world,
        grad_cache=int(t.grad_cache_size) if t.grad_cache else None, grad_cache_unit=str(t.grad_cache_unit),
        backbone_checkpointing=bool(t.backbone_checkpointing), scorer=str(cfg.scorer.name),
        score_chunk_size=t.score_chunk_size, score_checkpoint=bool(t.score_checkpoint),
        precision=str(cfg.trainer.precision), device="cpu" if cfg.trainer.accelerator == "cpu" else "cuda",
    )


def plan_memory(overrides: list[str], budget_gib: float | None = None, grad_cache: int | None = None,
                world: int | None = None, lengths: str | None = None, length_steps: int = 5) -> str:
    from hydra import compose, initialize_config_dir

    import uwe_lightning.training.config  # noqa: F401  (the train schema)

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides))
    step = replace(step_from_config(cfg, world), lengths=parse_lengths(lengths, cfg, length_steps))
    try:
        step.group_lengths()
    except ValueError as err:
        raise ConfigError(f"--lengths: {err}") from None
    backbone = BackboneShape.from_pretrained(str(cfg.model.backbone), cfg.paths.model_dir)
    size = grad_cache or int(cfg.train.grad_cache_size)
    text = markdown(backbone, variants(step, size))
    if budget_gib is not None:
        for ckpt in (False, True):
            best = largest_grad_cache(backbone, replace(step, backbone_checkpointing=ckpt), int(budget_gib * GIB))
            what = "with" if ckpt else "without"
            text += (f"\n\nLargest GradCache mini-batch within {budget_gib:g} GiB {what} backbone checkpointing: "
                     + (f"{best} texts (train.grad_cache=true train.grad_cache_size={best})" if best else
                        "none (the rest of the step does not fit: fewer skills per step, or more devices)"))
    return text


def main(argv: list[str] | None = None) -> str:
    take_debug_flag(argv)
    args = parser().parse_args(argv)
    text = run_reporting_user_errors(
        "plan_memory", lambda: plan_memory(args.overrides, args.budget_gib, args.grad_cache, args.world, args.lengths,
                                           args.length_steps))
    print(text)
    return text
