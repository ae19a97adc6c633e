"""The docs keep their promises: every Python and shell example in README.md and docs/ is marked and the runnable
ones run; every command's ``--help`` works; the site builds with ``mkdocs build --strict``; the repository paths
the pages name exist.

Each fenced ``python`` / ``bash`` block is preceded by a marker comment (invisible on the rendered page):

- ``<!-- example: run -->``   run in the default suite, on a tiny model (standing in for ``minilm`` / ``mpnet``
  through ``UWE_MODEL_DIR``) and the miniature data pack (``UWE_DATA_DIR``): it must be quick;
- ``<!-- example: slow -->``  the same environment, in ``make test-slow`` (command-line runs, short trainings);
- ``<!-- example: data -->``  the real data pack and encoders (``make models``), in ``make test-slow``; skipped
  where they are absent;
- ``<!-- example: skip (why) -->``  not run, with the reason (a GPU, a network, a server, hours of compute).

The blocks of one page run in order, each in its own process, in one scratch working directory (files written by
one block are there for the next), with ``tests/`` linked into it so the fixture files have their repository
paths. ``run`` blocks may only depend on earlier ``run`` blocks; ``slow`` runs the page's ``run`` and ``slow``
blocks together. Conventions for writing examples: docs/contributing.md.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.paths import MINI_DATA

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGES = sorted([REPO / "README.md", *(p for p in DOCS.rglob("*.md") if "_incoming" not in p.parts)])
MARKER = re.compile(r"<!--\s*example:\s*(run|slow|data|skip)\s*(?:\((.+)\))?\s*-->")
FENCE = re.compile(r"^(\s*)```(\w+)?")
LANGS = {"python", "bash", "sh", "shell", "console", "py"}
BLOCK_TIMEOUT_S = 900
#: A ``data`` block runs the real encoders on the real pack: reproduce.md's 20-step MiniLM training with its three
#: validations and the test took 59 min on 2 cores shared with a training study (load 4-9; 900 s ran out at load 14).
DATA_BLOCK_TIMEOUT_S = 7200


@dataclass
class Example:
    page: Path
    line: int
    lang: str
    mode: str | None
    reason: str | None
    code: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def examples(page: Path) -> list[Example]:
    """The fenced code blocks of ``page`` in a language we can run, with the marker just above each."""
    lines = page.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        indent, lang = fence.group(1), (fence.group(2) or "").lower()
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), len(lines))
        if lang in LANGS:
            above = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            marker = MARKER.search(above)
            code = "\n".join(line[len(indent):] for line in lines[i + 1:end]) + "\n"
            found.append(Example(page, i + 1, lang, marker and marker.group(1), marker and marker.group(2), code))
        i = end + 1
    return found


ALL = [example for page in PAGES for example in examples(page)]


def pages_with(*modes: str) -> list[Path]:
    return sorted({e.page for e in ALL if e.mode in modes}, key=str)


def test_every_example_is_marked():
    """A new example cannot go unchecked: each says whether it runs, and why not where it does not."""
    unmarked = [e.where for e in ALL if e.mode is None]
    assert not unmarked, f"examples without an `<!-- example: run|slow|data|skip (why) -->` marker: {unmarked}"
    unexplained = [e.where for e in ALL if e.mode == "skip" and not (e.reason or "").strip()]
    assert not unexplained, f"skipped examples must say why, `<!-- example: skip (why) -->`: {unexplained}"
    assert sum(e.mode in ("run", "slow", "data") for e in ALL) >= 20  # the docs keep runnable examples


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A model directory where the tiny test model stands in for both named backbones (a copy: examples may write
    into a model directory, e.g. an ONNX export, and the session's tiny model is shared with other tests)."""
    models = tmp_path_factory.mktemp("docs-models")
    shutil.copytree(tiny_model_dir, models / "tiny")
    for name in ("all-MiniLM-L6-v2", "all-mpnet-base-v2"):
        (models / name).symlink_to(models / "tiny", target_is_directory=True)
    return models


def run_page(page: Path, modes: tuple[str, ...], workdir: Path, env: dict[str, str],
             timeout: float = BLOCK_TIMEOUT_S) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "tests").symlink_to(REPO / "tests", target_is_directory=True)
    todo = [e for e in examples(page) if e.mode in modes]
    for n, example in enumerate(todo):
        script = workdir / f".example_{n}.{'py' if example.lang in ('python', 'py') else 'sh'}"
        script.write_text(example.code)
        cmd = [sys.executable, str(script)] if script.suffix == ".py" else ["bash", "-eo", "pipefail", str(script)]
        proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, (f"{example.where} failed (exit {proc.returncode}):\n{example.code}\n"
                                      f"--- output ---\n{(proc.stdout + proc.stderr)[-4000:]}")


def example_env(tmp: Path, model_dir: Path, data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}".rstrip(os.pathsep),
        UWE_MODEL_DIR=str(model_dir),
        UWE_DATA_DIR=str(data_dir),
        UWE_CACHE_DIR=str(tmp / "cache"),
        XDG_CACHE_HOME=str(tmp / "xdg-cache"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        WANDB_MODE="disabled",
        WANDB_DIR=str(tmp),
        OMP_NUM_THREADS=env.get("UWE_TEST_THREADS", "1"),
    )
    return env


@pytest.mark.parametrize("page", pages_with("run"), ids=lambda p: str(p.relative_to(REPO)))
def test_run_examples(page: Path, tmp_path: Path, tiny_models: Path):
    run_page(page, ("run",), tmp_path / "work", example_env(tmp_path, tiny_models, MINI_DATA))


@pytest.mark.slow
@pytest.mark.parametrize("page", pages_with("slow"), ids=lambda p: str(p.relative_to(REPO)))
def test_slow_examples(page: Path, tmp_path: Path, tiny_models: Path):
    run_page(page, ("run", "slow"), tmp_path / "work", example_env(tmp_path, tiny_models, MINI_DATA))


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.parametrize("page", pages_with("data"), ids=lambda p: str(p.relative_to(REPO)))
def test_data_examples(page: Path, tmp_path: Path, real_data_dir: Path):
    from uwe_lightning.paths import default_model_dir

    models = default_model_dir()
    if not (models / "all-MiniLM-L6-v2" / "config.json").is_file():
        pytest.skip(f"the encoders are not assembled in {models} (run `make models` or set UWE_MODEL_DIR)")
    run_page(page, ("data",), tmp_path / "work", example_env(tmp_path, models, real_data_dir),
             timeout=DATA_BLOCK_TIMEOUT_S)


#: Every ``python -m uwe_lightning.<module>`` entry point (pyproject's scripts and the rest).
ENTRY_POINTS = ["train", "evaluate", "rank", "serve", "bench", "report", "export", "plan_memory", "bundle", "publish",
                "campaign", "enrich", "data.fetch"]
#: The CLI convention each entry point follows, as its --help and the table of docs/reference/cli.md say it.
CONVENTIONS = {
    "Hydra app": ("Convention: Hydra overrides (key=value, group=option, -m for a sweep); one run directory per run",
                  ["train", "evaluate", "rank", "serve", "bench", "enrich", "data.fetch"]),
    "Hydra compose": ("Convention: Hydra overrides (key=value) composed without a run directory",
                      ["campaign", "bundle", "publish"]),
    "plain CLI": ("Convention: plain CLI (argparse), not Hydra", ["report", "export", "plan_memory"]),
}

_HELP_LOOP = r"""
import contextlib, io, json, runpy, sys
from hydra.core.global_hydra import GlobalHydra
out = {}
for module in sys.argv[1:]:
    buf = io.StringIO()
    sys.argv = [module, "--help"]
    code = None
    with contextlib.redirect_stdout(buf):
        try:
            runpy.run_module(f"uwe_lightning.{module}", run_name="__main__", alter_sys=True)
        except SystemExit as stop:
            code = stop.code
    GlobalHydra.instance().clear()
    out[module] = {"code": code or 0, "text": buf.getvalue()}
print(json.dumps(out))
"""


def test_every_command_help_is_short_and_exits_0():
    """``python -m uwe_lightning.<cli> --help`` exits 0 and prints its own usage and examples, not Hydra's list
    of every config group (one process for all, so the loop costs one import of torch)."""
    import json

    env = {**os.environ, "PYTHONPATH": str(REPO), "UWE_DATA_DIR": str(MINI_DATA)}
    proc = subprocess.run([sys.executable, "-c", _HELP_LOOP, *ENTRY_POINTS], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    helps = json.loads(proc.stdout.strip().splitlines()[-1])
    for module in ENTRY_POINTS:
        text = helps[module]["text"]
        assert helps[module]["code"] == 0, f"{module} --help exited {helps[module]['code']}"
        assert f"uwe_lightning.{module}" in text, f"{module} --help does not name its command:\n{text}"
        assert "== Configuration groups ==" not in text and "hparams_search:" not in text, module
        assert len(text.splitlines()) <= 60, f"{module} --help is {len(text.splitlines())} lines"
    table = {line.split("|")[1].strip().strip("`"): line for line in (DOCS / "reference" / "cli.md").read_text()
             .splitlines() if line.startswith("| `")}
    assert sorted(m for _, modules in CONVENTIONS.values() for m in modules) == sorted(ENTRY_POINTS)
    for kind, (phrase, modules) in CONVENTIONS.items():
        for module in modules:
            assert phrase in " ".join(helps[module]["text"].split()), f"{module} --help does not say: {phrase}"
            assert f"| {kind} " in table[module], f"docs/reference/cli.md: {module} is a {kind}"


#: Backticked repository paths in the docs (`experiments/...`, `uwe_lightning/...`, `tests/...`, `conf/...`).
REPO_PATH = re.compile(r"`((?:experiments|uwe_lightning|tests|conf|docs)/[A-Za-z0-9_./-]+)`")


def test_repository_paths_named_in_the_docs_exist():
    missing = []
    for page in PAGES:
        for match in REPO_PATH.finditer(page.read_text()):
            path = match.group(1).rstrip(".")
            if not (REPO / path).exists():
                missing.append(f"{page.relative_to(REPO)}: {path}")
    assert not missing, "the docs name paths that do not exist:\n" + "\n".join(missing)


def test_mkdocs_build_strict(tmp_path: Path):
    """The site builds with no broken link, missing page or unresolved API reference (~10-20 s)."""
    for module in ("mkdocs", "material", "mkdocstrings_handlers.python"):
        if importlib.util.find_spec(module.split(".")[0]) is None or (
                "." in module and importlib.util.find_spec(module) is None):
            pytest.skip(f"{module} is not installed: pip install -e '.[docs]' (then `make docs` builds the site)")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (tmp_path / "site" / "reference" / "config" / "index.html").is_file()


#: A number with a decimal point, as the tables print them (`37.6`, `-0.428`, `1,638.5`).
DECIMAL = re.compile(r"(?<![\w.])[-+]?\d[\d,]*\.\d+")


def _decimals(text: str) -> set[float]:
    return {float(m.group().replace(",", "")) for m in DECIMAL.finditer(text)}


def _study_text(section: str) -> str:
    """The committed results a section of docs/results.md names: its `experiments/results/...` files and folders."""
    text = ""
    for name in sorted(set(re.findall(r"`(experiments/results/[A-Za-z0-9_./-]+)`", section))):
        path = REPO / name.rstrip(".")
        files = [path] if path.is_file() else sorted([*path.rglob("*.md"), *path.rglob("*.json")])
        text += "".join(f.read_text(errors="ignore") for f in files)
    return text


def test_results_tables_show_the_committed_numbers():
    """Every decimal number in a table of docs/results.md is, rounded to the digits shown, a number of the
    committed results its section names (`experiments/results/...`), so the page cannot drift from the studies.
    The generated "Where the time goes" block is checked against its generator below instead."""
    text = (DOCS / "results.md").read_text()
    generated = re.compile(r"<!-- where-the-time-goes:start -->.*?<!-- where-the-time-goes:end -->", re.S)
    wrong = []
    for section in re.split(r"(?m)^(?=##+ )", generated.sub("", text)):
        rows = [line for line in section.splitlines() if line.startswith("|") and not line.startswith("|---")]
        if not rows:
            continue
        committed = _decimals(_study_text(section))
        assert committed, f"a results table without the `experiments/results/...` it comes from: {section[:80]!r}"
        for row in rows:
            for match in DECIMAL.finditer(row):
                shown = match.group().replace(",", "").lstrip("+")
                digits = len(shown.split(".")[1])
                if not any(round(value, digits) == float(shown) for value in committed):
                    wrong.append(f"{shown} in {row[:90]}")
    assert not wrong, "numbers in docs/results.md that no committed result rounds to:\n" + "\n".join(wrong)


def test_where_the_time_goes_is_what_its_generator_writes_from_the_committed_json(tmp_path: Path):
    page = tmp_path / "results.md"
    shutil.copy(DOCS / "results.md", page)
    proc = subprocess.run([sys.executable, "experiments/fast/where_the_time_goes.py", "--results",
                           "experiments/results", "--out", str(tmp_path / "block.md"), "--readme", str(page)],
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert page.read_text() == (DOCS / "results.md").read_text(), (
        "docs/results.md's 'Where the time goes' differs from experiments/fast/where_the_time_goes.py's output: "
        "regenerate it with --readme docs/results.md")


def test_readme_results_are_the_docs_results():
    """The README's headline table quotes docs/results.md (and the paper numbers quoted there)."""
    readme = (REPO / "README.md").read_text()
    table = readme.split("## Results", 1)[1].split("\n## ", 1)[0]
    results = {m.group().replace(",", "").lstrip("+-") for m in DECIMAL.finditer((DOCS / "results.md").read_text())}
    missing = [m.group() for line in table.splitlines() if line.startswith("|")
               for m in DECIMAL.finditer(line) if m.group().replace(",", "").lstrip("+-") not in results]
    assert not missing, f"README results not in docs/results.md: {missing}"
