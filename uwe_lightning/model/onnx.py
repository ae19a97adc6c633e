"""The encoder as an ONNX graph: export with torch's dynamo exporter, check parity, run it with ONNX Runtime.

Only the backbone is exported (``input_ids`` + ``attention_mask`` -> ``last_hidden_state``, batch and sequence
dynamic); tokenising, padding removal and every scorer stay in Python, so :class:`OnnxEncoder` is an
:class:`Encoder` whose ``forward`` runs the graph and everything downstream is unchanged. The dynamo exporter,
not the legacy one: the legacy TorchScript exporter (``dynamo=False``, opset 17) is silently wrong on shapes
other than the traced one (errors up to 1.5), which is why every export measures its parity on varied shapes
before it is published, and refuses to publish above ``tolerance``.

Beside ``model.onnx`` an ``export_info.json`` records the source (and its weights' sha256 where it is a
directory), the opset, the torch / onnx / onnxruntime versions and the measured parity. ``onnx``,
``onnxscript`` and ``onnxruntime`` are optional (``pip install 'uwe_lightning[onnx]'``), imported lazily.

int8. :func:`quantize_onnx` writes ``model_int8.onnx`` beside the export (ONNX Runtime's dynamic quantisation:
int8 weights per output channel, activations quantised per call), and :func:`torch_int8_encoder` is the torch
equivalent (``torch.ao`` dynamic quantisation of every ``nn.Linear``). Both are lossy on purpose; their effect
on WorkBench MAP is measured, not bounded (experiments/results/fast/agreement.md), so neither is a default:
``query_backend=onnx_int8`` / ``torch_int8`` ask for them.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from uwe_lightning.io import (
    ConfigError,
    ModelNotFoundError,
    atomic_write_json,
    atomic_write_path,
)
from uwe_lightning.io import (
    require as require_optional,
)
from uwe_lightning.model.encoder import Encoder, TokenEmbeddings, positions_from_mask

ONNX_DIR = "onnx"
ONNX_FILE = "model.onnx"
ONNX_INT8_FILE = "model_int8.onnx"
EXPORT_INFO_FILE = "export_info.json"
DEFAULT_OPSET = 18
#: Max abs difference (real tokens) above which an export is not published.
DEFAULT_TOLERANCE = 1e-3
EXPORT_COMMAND = "python -m uwe_lightning.export onnx"


def default_onnx_path(model_dir: str | Path) -> Path:
    """Where an export of ``model_dir`` goes by default, and where ``query_backend="onnx"`` looks."""
    return Path(model_dir) / ONNX_DIR / ONNX_FILE


def default_onnx_int8_path(model_dir: str | Path) -> Path:
    """Where :func:`quantize_onnx` writes by default, and where ``query_backend="onnx_int8"`` looks."""
    return Path(model_dir) / ONNX_DIR / ONNX_INT8_FILE


def require(module: str, feature: str = "ONNX export / the ONNX query backend"):
    """Import an optional ONNX package, or fail with one line naming the extra (:func:`uwe_lightning.io.require`)."""
    return require_optional(module, feature)


class _Backbone(nn.Module):
    """What is exported: the backbone with the Encoder's position-id rule folded in (always applied where the
    Encoder would apply it to a left-padded batch; on right padding it equals the default positions)."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.backbone = encoder.backbone
        self.with_positions = encoder.counts_positions_from_mask()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        kwargs = {"position_ids": positions_from_mask(attention_mask)} if self.with_positions else {}
        return self.backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state


def parity_batches(encoder: Encoder, seed: int = 0) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Varied ``(name, input_ids, attention_mask)``: batch 1 / 3 / 7, lengths 1 to the model's limit, rows of
    different lengths right-padded with the pad id, and one left-padded batch."""
    limit = encoder.model_max_length()
    vocab = int(encoder.backbone.config.vocab_size)
    pad = encoder.tokenizer.pad_token_id or 0
    gen = torch.Generator().manual_seed(seed)
    out = []
    for batch, width in ((1, 1), (1, 2), (3, 9), (7, min(limit, 64)), (1, limit)):
        lengths = [max(1, width - (width * row) // batch) for row in range(batch)]
        out.append((f"right_b{batch}_l{width}", *_batch(gen, vocab, pad, lengths, width, left=False)))
    out.append(("left_b3_l12", *_batch(gen, vocab, pad, [12, 5, 1], 12, left=True)))
    return out


def _batch(gen: torch.Generator, vocab: int, pad: int, lengths: list[int], width: int, left: bool):
    ids = torch.full((len(lengths), width), pad, dtype=torch.long)
    mask = torch.zeros((len(lengths), width), dtype=torch.long)
    for row, n in enumerate(lengths):
        cols = slice(width - n, width) if left else slice(0, n)
        ids[row, cols] = torch.randint(0, vocab, (n,), generator=gen)
        mask[row, cols] = 1
    return ids, mask


@torch.inference_mode()
def parity(encoder: Encoder, onnx_encoder: Encoder, seed: int = 0) -> dict[str, float]:
    """Max abs difference of the token embeddings (real tokens only) per :func:`parity_batches` shape."""
    result = {}
    for name, ids, mask in parity_batches(encoder, seed):
        ref, got = encoder(ids, mask), onnx_encoder(ids, mask)
        result[name] = float((ref.embeddings - got.embeddings)[ref.mask].abs().max())
    return result


def export_onnx(
    encoder: Encoder,
    out: str | Path,
    opset: int = DEFAULT_OPSET,
    tolerance: float = DEFAULT_TOLERANCE,
    info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Export ``encoder``'s backbone to ``out`` (atomically) and ``export_info.json`` beside it; returns the info.

    The graph is written to a temporary file, checked against torch (:func:`parity`) and only then moved
    into place; an export worse than ``tolerance`` raises and leaves any previous export untouched.
    ``info``: extra entries to record (the source, its weights' sha256).
    """
    for module in ("onnx", "onnxscript", "onnxruntime"):
        require(module, "ONNX export")
    out = Path(out)
    wrapper = _Backbone(encoder).eval()
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence", max=encoder.model_max_length())
    # Example shapes away from 0/1, which torch.export would specialise on.
    ids, mask = _batch(torch.Generator().manual_seed(0), 100, 0, [8, 5], 8, left=False)
    ids = ids.clamp_max(int(encoder.backbone.config.vocab_size) - 1)
    with torch.inference_mode(False), torch.no_grad():
        program = torch.onnx.export(
            wrapper, (ids, mask), dynamo=True, opset_version=opset, verbose=False,
            input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
            dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}},
        )
    with atomic_write_path(out, suffix=".onnx") as tmp:
        program.save(str(tmp), external_data=False)
        diffs = parity(encoder, OnnxEncoder(encoder, tmp))
        worst = max(diffs.values())
        if not worst <= tolerance:
            raise ValueError(f"ONNX export of {encoder.name or 'the encoder'} differs from torch by {worst:.3g} "
                             f"(> tolerance {tolerance:g}) on {max(diffs, key=diffs.get)}; not written to {out}")
    record = {
        **dict(info or {}), "file": out.name, "opset": opset, "exporter": "torch.onnx.export(dynamo=True)",
        "inputs": ["input_ids", "attention_mask"], "output": "last_hidden_state",
        "dynamic_axes": {"batch": 0, "sequence": 1}, "max_sequence": encoder.model_max_length(),
        "positions_from_mask": wrapper.with_positions, "versions": _versions(),
        "parity": {"max_abs_diff": worst, "tolerance": tolerance, "per_shape": diffs},
    }
    atomic_write_json(out.parent / EXPORT_INFO_FILE, record)
    return record


def quantize_onnx(onnx_file: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """Dynamic int8 quantisation of an export (ONNX Runtime: int8 weights per channel, uint8 activations
    quantised per call) into ``out`` (default: ``model_int8.onnx`` beside it), written atomically; the record
    (also put into ``export_info.json`` under ``int8``) has the weight bytes before and after."""
    require("onnxruntime", "int8 quantisation of the ONNX export")
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = Path(onnx_file)
    out = Path(out) if out is not None else src.with_name(ONNX_INT8_FILE)
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)  # its advice to pre-process first (shape inference): not needed here
    try:
        with atomic_write_path(out, suffix=".onnx") as tmp:
            quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        logger.setLevel(level)
    record = {"file": out.name, "method": "onnxruntime.quantization.quantize_dynamic(weight_type=QInt8, "
              "per_channel=True)", "bytes_fp32": src.stat().st_size, "bytes_int8": out.stat().st_size}
    info_path = src.parent / EXPORT_INFO_FILE
    if out.parent == src.parent and info_path.is_file():
        atomic_write_json(info_path, {**read_export_info(src), "int8": record})
    return record


def torch_int8_encoder(encoder: Encoder) -> Encoder:
    """A copy of ``encoder`` whose ``nn.Linear`` layers are dynamically quantised to int8 (torch.ao, CPU)."""
    import copy
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao eager quantisation is deprecated in favour of torchao
        backbone = torch.ao.quantization.quantize_dynamic(copy.deepcopy(encoder.backbone).cpu().eval(),
                                                          {nn.Linear}, dtype=torch.qint8)
    out = Encoder(backbone, encoder.tokenizer, name=f"{encoder.name}+int8")
    return out.eval()


def read_export_info(onnx_file: str | Path) -> dict[str, Any]:
    """``export_info.json`` beside ``onnx_file`` (``{}`` when absent or unreadable: it is a record only)."""
    path = Path(onnx_file).parent / EXPORT_INFO_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _versions() -> dict[str, str]:
    versions = {"torch": torch.__version__}
    for module in ("onnx", "onnxscript", "onnxruntime"):
        versions[module] = getattr(importlib.import_module(module), "__version__", "?")
    return versions


class OnnxEncoder(Encoder):
    """An :class:`Encoder` whose backbone runs as an ONNX Runtime session on CPU (same tokenizer, token limit
    and :meth:`~Encoder.encode`; the torch backbone is kept only for its config, and is not run).

    The session gets torch's current thread count, so ``torch.set_num_threads`` sizes both backends alike, and
    its idle workers do not spin (``spinning=False``): ONNX Runtime's default keeps them busy-waiting after each
    run, on the cores the scorer needs next (2x slower end to end: experiments/fast/onnx_spinning.py).
    """

    def __init__(self, encoder: Encoder, onnx_file: str | Path, threads: int | None = None,
                 spinning: bool = False) -> None:
        super().__init__(encoder.backbone, encoder.tokenizer, name=encoder.name)
        ort = require("onnxruntime", "the ONNX query backend")
        self.onnx_file = Path(onnx_file)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        self.session = ort.InferenceSession(str(self.onnx_file), options, providers=["CPUExecutionProvider"])
        self.training = False

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def train(self, mode: bool = True) -> OnnxEncoder:
        """The graph has no training mode; never switch the shared torch backbone (``encode`` calls this)."""
        self.training = mode
        return self

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TokenEmbeddings:
        feed = {"input_ids": input_ids.cpu().long().numpy(), "attention_mask": attention_mask.cpu().long().numpy()}
        (hidden,) = self.session.run(["last_hidden_state"], feed)
        return TokenEmbeddings(torch.from_numpy(hidden), attention_mask.cpu().bool())


def load_onnx_encoder(
    encoder: Encoder, onnx_file: str | Path | None, model_dir: str | Path | None,
    weights_sha256: Callable[[], str] | None = None, int8: bool = False,
) -> OnnxEncoder:
    """The ONNX Runtime twin of ``encoder`` from ``onnx_file`` (default ``<model_dir>/onnx/model.onnx``, or
    ``model_int8.onnx`` with ``int8``).

    A missing file, or one exported from other weights than ``weights_sha256()`` (as its export_info.json
    records), is one :class:`ModelNotFoundError` naming the export command that makes a right one.
    """
    backend, name = ("onnx_int8", ONNX_INT8_FILE) if int8 else ("onnx", ONNX_FILE)
    if onnx_file is None and model_dir is None:
        raise ConfigError(f"query_backend={backend} needs onnx_file=... (or Ranker.from_pretrained(<model dir>, "
                          f"query_backend='{backend}'), which finds <model dir>/onnx/{name})")
    path = Path(onnx_file) if onnx_file is not None else Path(model_dir) / ONNX_DIR / name  # type: ignore[arg-type]
    source = model_dir or "<model dir>"
    if not path.is_file():
        command = f"{EXPORT_COMMAND} {source}" + (" --int8" if int8 else "")
        raise ModelNotFoundError(f"query_backend={backend}: no ONNX export at {path}; make it with "
                                 f"`{command}` (or pass onnx_file=...)")
    exported = read_export_info(path).get("source_sha256")
    if exported and weights_sha256 is not None and exported != (current := weights_sha256()):
        raise ModelNotFoundError(f"{path} was exported from other weights than {source} (sha256 {exported[:12]} "
                                 f"!= {current[:12]}); re-run `{EXPORT_COMMAND} {source}`")
    return OnnxEncoder(encoder, path)
