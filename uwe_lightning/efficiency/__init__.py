"""``make bench``: latency, FLOPs, throughput and training cost of each scorer (paper Table 3, Appendix A).

Protocol (Appendix A, "Timing evaluation"): per WorkBench task the target space is encoded once (cached on
disk); then 30 warm-up single queries, 100 timed single queries end to end (tokenise, encode, score, top-k),
and 10 more queries under :class:`torch.utils.flop_counter.FlopCounterMode` (encode + score). Per task the
mean over queries; reported is the mean +- standard error over tasks, per scorer, with the model's parameter
count and embedding size ``h``.

Also measured in the same run: batched throughput (queries/s), target-space encoding rate, one training step
(forward + backward + AdamW on S skills + 3S texts with the scorer's all-pairs scores and the MTM loss),
latency as the target space grows from 1k to ~100k ESCO skill labels (``latency_vs_targets.png``), and the
straightforward way a user would do it today: re-encoding the target space for every query, or scoring the
cached targets one by one in a Python loop, as a slowdown ratio against the cached ranker.

Outputs in the run directory: ``bench.md``, ``bench.json``, ``latency_vs_targets.png``; ``publish=true``
copies them to ``experiments/results/bench_<model>*`` (of the source checkout, else of the working
directory; see :func:`~uwe_lightning.efficiency.report.default_results_dir`).

Modules: :mod:`~uwe_lightning.efficiency.measure` (timers, mean/SE, each measurement),
:mod:`~uwe_lightning.efficiency.spaces` (target spaces encoded once and cached),
:mod:`~uwe_lightning.efficiency.report` (markdown, JSON, plot, publish) and
:mod:`~uwe_lightning.efficiency.benchmark` (:func:`run`, the order of it all). The Hydra entry point is
:mod:`uwe_lightning.cli.bench`.
"""

from uwe_lightning.efficiency.benchmark import load_datasets, run
from uwe_lightning.efficiency.measure import flops_per_query, mean_se, sample_queries
from uwe_lightning.efficiency.report import fmt_count, fmt_flops, fmt_pm, markdown
from uwe_lightning.efficiency.spaces import SpaceInfo, TextMemo, build_space, encode_task_spaces

__all__ = [
    "SpaceInfo", "TextMemo", "build_space", "encode_task_spaces", "flops_per_query", "fmt_count", "fmt_flops",
    "fmt_pm", "load_datasets", "markdown", "mean_se", "run", "sample_queries",
]
