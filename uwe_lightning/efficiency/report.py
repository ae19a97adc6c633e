"""Reporting: ``bench.md`` (the paper's Table 3 layout and the detail tables), ``bench.json``, the latency
plot, and publishing them under ``experiments/results``.

Pure functions of the result dict that :func:`uwe_lightning.efficiency.benchmark.run` returns, so a saved
``bench.json`` can be re-rendered without re-measuring.
"""

from __future__ import annotations

import math
from pathlib import Path

from uwe_lightning.efficiency.measure import quiet_cores
from uwe_lightning.io import atomic_copy, atomic_save_figure, atomic_write_json, atomic_write_text, make_dirs
from uwe_lightning.paths import REPO_DIR


def results_root() -> Path:
    """The project whose ``experiments/results`` ``publish=true`` writes to: the source checkout (as
    ``paths.REPO_DIR / "pyproject.toml"`` marks it), else the working directory (an installed package would
    otherwise write into site-packages)."""
    return REPO_DIR if (REPO_DIR / "pyproject.toml").is_file() else Path.cwd()


def default_results_dir() -> Path:
    """Where ``publish=true`` copies the outputs: ``<project>/experiments/results``."""
    return results_root() / "experiments" / "results"


# ----------------------------------------------------------------------------------------------------------
# Number formats
# ----------------------------------------------------------------------------------------------------------


def fmt_count(value: float) -> str:
    """1.23B / 45.6M / 7.8K."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.3g}"


def fmt_pm(stats: dict, scale: float = 1.0, digits: int = 1, unit: str = "") -> str:
    """``mean ± se`` of a :func:`~uwe_lightning.efficiency.measure.mean_se` dict; ``n/a`` when nothing was measured."""
    if not stats or stats.get("n", 0) == 0 or stats["mean"] is None or math.isnan(stats["mean"]):
        return "n/a"
    se = stats.get("se")
    se_txt = "" if se is None or math.isnan(se) else f" ± {se * scale:.{digits}f}"
    return f"{stats['mean'] * scale:.{digits}f}{se_txt}{unit}"


def fmt_flops(stats: dict) -> str:
    """``3.01 ± 0.94B``: FLOPs with the SE in the mean's unit."""
    if not stats or stats.get("n", 0) == 0:
        return "n/a"
    mean, se = stats["mean"], stats.get("se", math.nan)
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if mean >= scale:
            se_txt = "" if math.isnan(se) else f" ± {se / scale:.2f}"
            return f"{mean / scale:.2f}{se_txt}{unit}"
    return f"{mean:.0f}"


# ----------------------------------------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------------------------------------


def markdown(result: dict) -> str:
    """The report: the Table 3 row per scorer, then per task, encoding, growth and naive-baseline tables."""
    model, machine = result["model"], result["machine"]
    lines = [
        f"# Inference and training cost: {model['name']} ({result['split']} target spaces)",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {machine['cpu_count']} CPUs ({machine['cpus_usable']} usable, {machine['torch_threads']} torch "
        f"threads), device `{machine['device']}`{' (' + machine['gpu'] + ')' if machine.get('gpu') else ''}, "
        f"torch {machine['torch']}, Python {machine['python']}; load average at start "
        f"{_load(machine.get('load_average_start'))}, at end {_load(machine.get('load_average_end'))}.  ",
        f"Wall time: {result['wall_s']:.0f} s.",
        *_shared_note(machine),
        "",
        f"Protocol (paper Appendix A): per task, target space cached; {result['protocol']['warmup']} warm-up "
        f"queries, {result['protocol']['timed_queries']} timed single queries end to end (tokenise, encode, "
        f"score, top-{result['protocol']['k']}), FLOPs on {result['protocol']['flop_queries']} more "
        "(FlopCounterMode, encode + score; 2 FLOPs per multiply-add). Mean ± SE over tasks.",
        "",
        "| Model | Scorer | Param. | h | Latency/query (ms) | FLOPs/query | Throughput (q/s, batch "
        f"{result['protocol']['throughput_batch']}) | Train step (ms) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for scorer, row in result["scorers"].items():
        lines.append(
            f"| {model['name']} | {scorer} | {fmt_count(model['params'])} | {model['hidden_size']} | "
            f"{fmt_pm(row['latency_ms'])} | {fmt_flops(row['flops'])} | {fmt_pm(row['throughput_qps'])} | "
            f"{fmt_pm(row.get('train_step', {}).get('ms', {}), digits=0)} |"
        )
    tasks = result["tasks"]
    lines += ["", f"Tasks measured: {', '.join(tasks['measured'])}."]
    if tasks["unavailable"]:
        lines.append("Unavailable (skipped): " + "; ".join(f"{n} ({r})" for n, r in tasks["unavailable"].items()))
    lines += ["", "## Per task (latency ms/query, mean ± SE over queries; FLOPs/query)", ""]
    names = tasks["measured"]
    lines.append("| Scorer | " + " | ".join(f"{n} ({tasks['n_targets'][n]:,} targets)" for n in names) + " |")
    lines.append("|---|" + "---|" * len(names))
    for scorer, row in result["scorers"].items():
        cells = [f"{fmt_pm(row['per_task'][n]['latency_ms'])} ms, {fmt_count(row['per_task'][n]['flops']['mean'])}"
                 for n in names]
        lines.append(f"| {scorer} | " + " | ".join(cells) + " |")

    lines += ["", "## Target-space encoding", "",
              "| Space (tasks) | Texts | Tokens/text | Encode rate (texts/s) | Full encode (s, est.) | Cache |",
              "|---|---|---|---|---|---|"]
    for enc in result["encoding"]:
        cache = ", ".join(f"{k}: {'hit' if v['hit'] else 'built'} {v['seconds']:.1f}s {v['bytes'] / 2**20:.1f} MiB"
                          for k, v in enc["cache"].items())
        lines.append(f"| {enc['space']} ({', '.join(enc['tasks'])}) | {enc['n_texts']:,} | {enc['tokens_per_text']} | "
                     f"{enc['texts_per_s']} | {enc['estimated_full_s']} | {cache} |")

    train = next(iter(result["scorers"].values())).get("train_step")
    if train:
        lines += ["", f"Train step: {train['skills']} skills + {train['texts'] - train['skills']} texts "
                  f"(J, V, A), max {train['max_length']} tokens, forward + backward + {train['optimizer']}, "
                  f"loss {train['loss']}; mean ± SE over steps."]

    growth = result.get("growth")
    if growth:
        lines += ["", f"## Latency vs target-space size ({growth['source']}, {growth['queries']} queries per point; "
                  "ms per query end to end, and scoring + top-k only with the query already encoded)",
                  "", "| Scorer | " + " | ".join(f"{s:,}" for s in growth["sizes"]) + " |",
                  "|---|" + "---|" * len(growth["sizes"])]
        for scorer, points in growth["latency_ms"].items():
            lines.append(f"| {scorer} | " + " | ".join(f"{p['mean']:.1f}" for p in points) + " |")
        for scorer, points in growth.get("score_ms", {}).items():
            lines.append(f"| {scorer}, scoring only | " + " | ".join(f"{p['mean']:.1f}" for p in points) + " |")
        for kind, values in growth.get("bytes", {}).items():
            lines.append(f"| _{kind} MiB_ | " + " | ".join(f"{v / 2**20:.1f}" for v in values) + " |")
        lines += ["", "![latency vs targets](latency_vs_targets.png)"]

    naive = result.get("naive") or {}
    if naive:
        lines += ["", f"## Against the straightforward way ({naive['task']}, {naive['n_targets']:,} targets)", "",
                  "| Method | Scorer | Latency/query (ms) | Cached ranker (ms) | Slowdown |", "|---|---|---|---|---|"]
        if "reencode" in naive:
            r = naive["reencode"]
            lines.append(f"| re-encode targets per query | {r['scorer']} | {fmt_pm(r['latency_ms'], digits=0)} | "
                         f"{r['cached_latency_ms']:.1f} | ×{r['slowdown']:.0f} |")
        for scorer, r in naive.get("python_loop", {}).items():
            lines.append(f"| Python loop over cached targets | {scorer} | {fmt_pm(r['latency_ms'], digits=0)} | "
                         f"{r['cached_latency_ms']:.1f} | ×{r['slowdown']:.1f} |")
    return "\n".join(lines) + "\n"


def _shared_note(machine: dict) -> list[str]:
    """How busy other processes kept the CPUs during the run, and a warning when they competed with it (timings
    inflated and noisy); runs that did not measure it fall back to the load average as they started."""
    if machine.get("device", "cpu") != "cpu":
        return []
    others = machine.get("others_cpus")
    start = (machine.get("load_average_start") or [0.0])[0]
    if others is not None:
        note = ["", f"Other processes kept {others:.2f} CPUs busy on average during the run (`/proc/stat` busy time "
                "minus this run's CPU time; the load average also counts this run's own threads)."]
        if not quiet_cores(others, start):
            note[-1] += (" **Shared machine:** CPU timings include contention with other processes and are upper "
                         "bounds.")
        return note
    if quiet_cores(None, start):
        return []
    end = (machine.get("load_average_end") or [math.nan])[0]
    return ["", f"**Shared machine:** the 1-minute load average was {start:.1f} on {machine['cpus_usable']} CPUs "
            f"before this run started ({end:.1f} at its end, its own work included): CPU timings include contention "
            "with other processes and are upper bounds."]


def _load(values: list[float] | None) -> str:
    return "n/a" if not values else "/".join(f"{v:.1f}" for v in values)


# ----------------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------------


def plot_growth(result: dict, path: Path) -> Path | None:
    """Latency vs target-space size on log-log axes (end to end solid, pre-encoded query dashed)."""
    growth = result.get("growth")
    if not growth:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, scorer in enumerate(growth["latency_ms"]):
        for key, style, label in (("latency_ms", "-", scorer), ("score_ms", "--", f"{scorer} (scoring only)")):
            series = growth.get(key, {}).get(scorer)
            if not series:
                continue
            means = [p["mean"] for p in series]
            errors = [0.0 if math.isnan(p["se"]) else p["se"] for p in series]
            ax.errorbar(growth["sizes"], means, yerr=errors, marker="o", capsize=3, linestyle=style,
                        color=colors[i % len(colors)], label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("targets in the (cached) target space")
    ax.set_ylabel("latency per query (ms)")
    ax.set_title(f"{result['model']['name']} on {result['machine']['device']}: single-query latency "
                 "(solid: end to end; dashed: query pre-encoded)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return atomic_save_figure(fig, path)


def write_outputs(result: dict, out_dir: Path) -> list[Path]:
    """``bench.json``, ``bench.md`` and (with a growth sweep) ``latency_vs_targets.png`` in ``out_dir``."""
    paths = [out_dir / "bench.json", out_dir / "bench.md"]
    atomic_write_json(paths[0], result, indent=1)
    atomic_write_text(paths[1], markdown(result))
    png = plot_growth(result, out_dir / "latency_vs_targets.png")
    return paths + ([png] if png else [])


def publish(out_dir: Path, dest: Path, model_name: str) -> list[Path]:
    """Copy the outputs as ``bench_<model>.md/.json`` and ``bench_<model>_latency_vs_targets.png``.

    The published text uses paths relative to :func:`results_root` and links the renamed plot.
    """
    make_dirs(dest)
    root, plot = f"{results_root()}/", f"bench_{model_name}_latency_vs_targets.png"
    copied = []
    for name, target in (("bench.md", f"bench_{model_name}.md"), ("bench.json", f"bench_{model_name}.json"),
                         ("latency_vs_targets.png", plot)):
        source, path = out_dir / name, dest / target
        if not source.is_file():
            continue
        if path.suffix in {".md", ".json"}:
            text = source.read_text().replace(root, "").replace("(latency_vs_targets.png)", f"({plot})")
            atomic_write_text(path, text)
        else:
            atomic_copy(source, path)
        copied.append(path)
    return copied
