"""``python -m uwe_lightning.export onnx <model dir or backbone name> [--out DIR] [--opset N] [--int8]`` and
``python -m uwe_lightning.export st <model dir> --out DIR [--pooled] [--overwrite]``.

Exports the encoder's backbone to ``<out>/model.onnx`` (default ``<model dir>/onnx/``, a run's own model dir;
a model in the shared model cache, ``UWE_MODEL_DIR``, needs ``--out``: the cache is never written to) with torch's dynamo
exporter, dynamic batch and sequence axes, and writes ``export_info.json`` beside it (source and its weights'
sha256, opset, versions, parity vs torch measured at export time); see :mod:`uwe_lightning.model.onnx`. The
export is what ``Ranker.from_pretrained(dir, query_backend="onnx")`` and ``evaluate query_backend=onnx`` load;
``--int8`` also writes its dynamically quantised twin ``model_int8.onnx`` (``query_backend=onnx_int8``).
``st`` copies a saved model (a run's ``best_model/``) into a sentence-transformers model directory of its own and
checks that ``SentenceTransformer(<out>)`` embeds as our encoder does (:mod:`uwe_lightning.model.st_export`); a model
whose scorer compares token embeddings is refused unless ``--pooled``.
Plain argparse rather than Hydra: one positional model and two options need no config tree or run directory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from uwe_lightning.cli import PLAIN_CLI
from uwe_lightning.cli.errors import run_reporting_user_errors, take_debug_flag
from uwe_lightning.io import ConfigError
from uwe_lightning.model.backbones import resolve_backbone
from uwe_lightning.model.encoder import Encoder
from uwe_lightning.model.onnx import (
    DEFAULT_OPSET,
    DEFAULT_TOLERANCE,
    EXPORT_INFO_FILE,
    ONNX_DIR,
    ONNX_FILE,
    ONNX_INT8_FILE,
    export_onnx,
    quantize_onnx,
)
from uwe_lightning.model.st_export import DEFAULT_TOLERANCE as ST_TOLERANCE
from uwe_lightning.model.st_export import EXPORT_INFO_FILE as ST_EXPORT_INFO_FILE
from uwe_lightning.model.st_export import export_sentence_transformers
from uwe_lightning.paths import default_model_dir
from uwe_lightning.ranking.cache import model_fingerprint


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m uwe_lightning.export", description=__doc__.splitlines()[0],
                                epilog="A run's best_model/ also loads in sentence-transformers as it is, "
                                       "SentenceTransformer('<run>/best_model') (mean pooling + normalize); "
                                       "`st` makes a checked copy of its own. "
                                       f"{PLAIN_CLI}: one model and two options need no config tree or run "
                                       "directory.")
    formats = p.add_subparsers(dest="format", required=True, metavar="FORMAT")
    onnx = formats.add_parser("onnx", help="the encoder backbone as ONNX (dynamo exporter, dynamic axes)")
    onnx.add_argument("model", help="a saved UWE model / HF directory, or a backbone name (minilm, mpnet)")
    onnx.add_argument("--out", type=Path, default=None, help=f"output directory (default <model dir>/{ONNX_DIR})")
    onnx.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    onnx.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                      help=f"max abs diff vs torch allowed at export time (default {DEFAULT_TOLERANCE:g})")
    onnx.add_argument("--int8", action="store_true",
                      help="also write model_int8.onnx (ONNX Runtime dynamic int8 quantisation; lossy, see README)")
    st = formats.add_parser("st", help="a checked sentence-transformers copy of a saved model (SentenceTransformer(out))")
    st.add_argument("model", type=Path, help="a saved UWE model directory (a run's best_model/)")
    st.add_argument("--out", type=Path, required=True, help="the new model directory (must not exist)")
    st.add_argument("--overwrite", action="store_true", help="replace --out if it exists (once the copy is checked)")
    st.add_argument("--pooled", action="store_true",
                    help="export a softmax/maxsim model's mean-pooled embedding anyway (refused without: "
                         "sentence-transformers cannot reproduce token-level scores)")
    st.add_argument("--tolerance", type=float, default=ST_TOLERANCE,
                    help=f"max abs difference vs our encoder, x the embedding norm (default {ST_TOLERANCE:g})")
    return p


def export(model: str, out: Path | None = None, opset: int = DEFAULT_OPSET,
           tolerance: float = DEFAULT_TOLERANCE, int8: bool = False) -> dict:
    """Export ``model`` to ``<out>/model.onnx`` (and ``model_int8.onnx`` with ``int8``); returns what
    ``export_info.json`` records (+ ``path``)."""
    if opset < 14:
        raise ConfigError(f"--opset {opset}: the dynamo exporter needs opset >= 14 (default {DEFAULT_OPSET})")
    path = Path(resolve_backbone(model))
    if out is None and not path.is_dir():
        raise ConfigError(f"model {model!r} is not a local directory: give --out DIR for the export")
    if out is None and path.resolve().is_relative_to(default_model_dir().resolve()):
        raise ConfigError(f"model {model!r} lives in the shared model cache ({default_model_dir()}), which an "
                          "export never writes into: give --out DIR (e.g. --out outputs/onnx/<name>)")
    out_file = (out if out is not None else path / ONNX_DIR) / ONNX_FILE
    encoder = Encoder.from_pretrained(str(path)).eval()
    info = {"source": model, "source_path": str(path.resolve()) if path.is_dir() else str(path)}
    if path.is_dir():
        info["source_sha256"] = model_fingerprint(path)
    record = export_onnx(encoder, out_file, opset=opset, tolerance=tolerance, info=info)
    if int8:
        record["int8"] = quantize_onnx(out_file)
    return {**record, "path": str(out_file)}


def onnx_model_dir(model_dir: str | Path, scratch: str | Path, int8: bool = True) -> Path:
    """A model directory with ``onnx/model.onnx`` (and ``model_int8.onnx`` with ``int8``): ``model_dir`` itself
    when it has them, else ``scratch``: symlinks to ``model_dir``'s files plus an export made there (same
    weights, hence the same cache keys), so a shared model cache is never written to."""
    model_dir, scratch = Path(model_dir).resolve(), Path(scratch)
    wanted = [ONNX_FILE] + ([ONNX_INT8_FILE] if int8 else [])
    if all((model_dir / ONNX_DIR / name).is_file() for name in wanted):
        return model_dir
    scratch.mkdir(parents=True, exist_ok=True)
    for entry in model_dir.iterdir():
        link = scratch / entry.name
        if entry.name != ONNX_DIR and not link.exists():
            link.symlink_to(entry)
    onnx_dir = scratch / ONNX_DIR
    if not (onnx_dir / ONNX_FILE).is_file():
        export(str(scratch))
    if int8 and not (onnx_dir / ONNX_INT8_FILE).is_file():
        quantize_onnx(onnx_dir / ONNX_FILE)
    return scratch


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    take_debug_flag(argv)
    args = parser().parse_args(argv)
    if args.format == "st":
        return main_st(args)
    record = run_reporting_user_errors(
        "export", lambda: export(args.model, args.out, args.opset, args.tolerance, args.int8))
    parity = record["parity"]
    print(f"[export] wrote {record['path']} (opset {record['opset']}; max abs diff vs torch "
          f"{parity['max_abs_diff']:.2g} over {len(parity['per_shape'])} shapes) and "
          f"{Path(record['path']).with_name(EXPORT_INFO_FILE)}")
    if "int8" in record:
        int8 = record["int8"]
        print(f"[export] wrote {Path(record['path']).with_name(int8['file'])} (int8, {int8['bytes_int8'] / 2**20:.0f} "
              f"MiB; fp32 {int8['bytes_fp32'] / 2**20:.0f} MiB)")
    return record


def main_st(args: argparse.Namespace) -> dict:
    record = run_reporting_user_errors("export", lambda: export_sentence_transformers(
        args.model, args.out, pooled=args.pooled, overwrite=args.overwrite, tolerance=args.tolerance))
    check = record["check"]
    what = (f"the mean-pooled embedding of a {record['scorer']}-scorer model (not its own ranking)" if record["pooled"]
            else f"a {record['scorer']}-scorer model (its own ranking)")
    print(f"[export] wrote {record['path']}: a sentence-transformers model, {what}, and "
          f"{Path(record['path']) / ST_EXPORT_INFO_FILE}")
    if "skipped" in check:
        print(f"[export] not checked: {check['skipped']}", file=sys.stderr)
    else:
        print(f"[export] checked: SentenceTransformer('{record['path']}') vs our encoder on {check['texts']} texts, "
              f"max abs diff {check['max_abs_diff']:.2g} (allowed {check['allowed']:.2g})")
    return record
