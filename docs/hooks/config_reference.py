"""MkDocs hook: fill ``reference/config.md`` from ``uwe_lightning/conf/`` at build time, so the configuration
reference cannot drift from the configs. Each command's primary config and each config group's options are
shown as they are (YAML with their comments); the ``hydra/`` group is left out except its launchers."""

from __future__ import annotations

from pathlib import Path

CONF = Path(__file__).resolve().parents[2] / "uwe_lightning" / "conf"
MARKER = "<!-- config-reference -->"
#: The commands whose primary config is in conf/, in the order a user meets them.
COMMANDS = ["train", "evaluate", "rank", "serve", "bench", "enrich", "fetch", "bundle", "campaign"]


def _yaml(path: Path) -> str:
    return f"```yaml\n{path.read_text().rstrip()}\n```\n"


def config_reference() -> str:
    out = ["## Commands (primary configs)\n"]
    for name in COMMANDS:
        path = CONF / f"{name}.yaml"
        if path.is_file():
            out.append(f"### `{name}` (`conf/{name}.yaml`)\n\n{_yaml(path)}")
    out.append("## Config groups\n\nPick one option of a group with `group=option` (`+experiment=...` for "
               "experiments, `hydra/launcher=...` for launchers).\n")
    groups = sorted(p for p in CONF.rglob("*") if p.is_dir() and any(p.glob("*.yaml")))
    for group in groups:
        rel = group.relative_to(CONF).as_posix()
        if rel.startswith("hydra") and rel != "hydra/launcher":
            continue
        options = sorted(group.glob("*.yaml"))
        out.append(f"### `{rel}`\n\nOptions: " + ", ".join(f"`{p.stem}`" for p in options) + "\n")
        for path in options:
            out.append(f"??? note \"`{rel}={path.stem}`\"\n\n" + _indent(_yaml(path)))
    return "\n".join(out)


def _indent(text: str) -> str:
    return "".join(f"    {line}" if line.strip() else line for line in text.splitlines(keepends=True))


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 (MkDocs hook signature)
    if page.file.src_uri == "reference/config.md" and MARKER in markdown:
        return markdown.replace(MARKER, config_reference())
    return markdown
