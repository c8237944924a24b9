"""Bit-packed model files: `export_run` writes a finished run's model with its binarized weights as packed bits
(ternary weights as 2-bit codes, GSB's 8-bit LSQ patch embedding and heads as int8 codes), their fp32 scales and
every other tensor as fp32; `load_packed` rebuilds the model from such a file, `evaluate_packed` re-evaluates it.

File layout: one `torch.save`d dict of plain Python values and tensors (loads with ``weights_only=True``)::

    {"manifest": {"format": "bvbench-packed", "version": 1, "recipe", "profile", "seed", "run_id",
                  "row": <the run's Row as a dict>, "data_dir", "num_classes", "methods_version", "half",
                  "sizes": {"theoretical_bytes", "checkpoint_bytes"},
                  "entries": [{"name", "kind", "shape", "offset", "scale": {"kind", "shape", "offset"} | None,
                               "dequantized": bool}, ...],
                  "blobs": {kind: {"numel", "sha256"}}},
     "blobs": {kind: 1-D tensor}}

Every tensor of one storage kind lives in one flat blob (`offset` counts the blob's elements), because
`torch.save` spends about 150-200 bytes of zip records per tensor, which on a small model would be larger than
its packed weights. Kinds: ``bits1`` (uint8, 8 signs per byte, MSB first, +1 = bit set), ``bits2`` (uint8, four
2-bit codes ``c + 1`` for c in {-1, 0, +1} per byte, MSB first), ``bits8`` (int8 LSQ codes), ``fp32``,
``fp16`` (full-precision tensors with ``half=True``) and raw dtypes (``bool``, ``int64``: ``initialized`` buffers).

Exactness: a quantized weight is stored as codes and the fp32 scale(s) its quantizer multiplied them by,
both read off the quantizer's own fp32 output at export time (codes = its signs, scale = its magnitude, per
tensor when one scale reproduces it, else per output channel); the export checks that ``codes * scale``
equals that output bit for bit (up to the sign of zero) and otherwise stores the dequantized weight as fp32.
Scales are always fp32 (fp16 scales would change the weights). On loading, each such layer's weight holds
the dequantized value and its weight quantizer becomes `Dequantized` (identity, same ``precision``), so
inference runs the very same ``F.linear`` on the very same weights without binarizing again.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bvbench.build import build_row_model, methods_version, pick_device
from bvbench.data import build_dataset, data_root
from bvbench.data.loader import eval_loader
from bvbench.engine import cpu_model, kernel_path
from bvbench.engine.convert import compile_model
from bvbench.errors import BvbenchError
from bvbench.evaluate.complexity import theoretical_size
from bvbench.evaluate.metrics import classification_metrics, predict
from bvbench.models import build_model, load_state
from bvbench.quant.base import Precision, Quantizer
from bvbench.recipes.schema import Row
from bvbench.results import RunDir, atomic_torch_save, now

__all__ = [
    "FORMAT",
    "VERSION",
    "ENGINES",
    "Dequantized",
    "evaluate_packed",
    "export_run",
    "freeze_weights",
    "load_engine",
    "load_packed",
    "packed_file_bytes",
    "pack_bits",
    "pack_ternary",
    "unpack_bits",
    "unpack_ternary",
]

FORMAT = "bvbench-packed"
VERSION = 1
PACKED_KINDS = ("bits1", "bits2", "bits8")
_BLOB_DTYPES: dict[str, torch.dtype] = {
    "bits1": torch.uint8,
    "bits2": torch.uint8,
    "bits8": torch.int8,
    "fp32": torch.float32,
    "fp16": torch.float16,
}
_RAW_DTYPES: dict[str, torch.dtype] = {
    "bool": torch.bool,
    "uint8": torch.uint8,
    "int8": torch.int8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "float64": torch.float64,
    "bfloat16": torch.bfloat16,
}


class Dequantized(Quantizer):
    """Weight quantizer of a loaded packed model: the layer's weight already holds the dequantized value, so
    this returns it unchanged; `precision` is the original quantizer's (the complexity counter still sees it)."""

    def __init__(self, precision: Precision) -> None:
        super().__init__()
        self.precision = precision

    def forward(self, w: Tensor) -> Tensor:
        return w


# ------------------------------------------------------------------------------------------ bit packing


def pack_bits(bits: Tensor) -> Tensor:
    """Booleans (any shape) -> uint8, 8 per byte, first element in the most significant bit (numpy.packbits)."""
    return torch.from_numpy(np.packbits(bits.detach().cpu().reshape(-1).numpy().astype(np.bool_)))


def unpack_bits(packed: Tensor, count: int) -> Tensor:
    """Inverse of `pack_bits`: the first `count` booleans (flat)."""
    return torch.from_numpy(np.unpackbits(packed.numpy(), count=count).astype(np.bool_))


_SHIFTS2 = torch.tensor([6, 4, 2, 0], dtype=torch.uint8)


def pack_ternary(codes: Tensor) -> Tensor:
    """Codes in {-1, 0, +1} (any shape) -> uint8 holding four 2-bit values `c + 1` per byte, MSB first."""
    c = (codes.detach().cpu().reshape(-1).to(torch.int16) + 1).to(torch.uint8)
    pad = (-c.numel()) % 4
    if pad:
        c = torch.cat([c, c.new_ones(pad)])  # pad with code 0 (stored as 1)
    c = c.view(-1, 4) << _SHIFTS2
    return c[:, 0] | c[:, 1] | c[:, 2] | c[:, 3]


def unpack_ternary(packed: Tensor, count: int) -> Tensor:
    """Inverse of `pack_ternary`: the first `count` codes as int8 in {-1, 0, +1}; ValueError on the unused
    2-bit value 3 (a corrupt file)."""
    c = ((packed.view(-1, 1) >> _SHIFTS2) & 3).reshape(-1)[:count]
    if bool((c == 3).any()):
        raise ValueError("invalid 2-bit ternary code")
    return c.to(torch.int8) - 1


# ------------------------------------------------------------------------------------------ weights


def _scale_candidates(mag: Tensor) -> Iterator[Tensor]:
    """One scale for the tensor, then one per output channel (shape [out, 1, ...])."""
    yield mag.amax().reshape(())
    if mag.dim() > 1:
        yield mag.flatten(1).amax(dim=1).view(-1, *([1] * (mag.dim() - 1)))


def split_weight(quantizer: nn.Module, weight: Tensor) -> tuple[str, Tensor, Tensor] | None:
    """(kind, codes, fp32 scale) with `codes * scale` equal to `quantizer(weight)`, or None when that output
    is not representable that way (the caller then stores it dequantized). `codes`: bool for ``bits1``
    (True = +1), int8 in {-1, 0, 1} for ``bits2``, int8 for ``bits8`` (LSQ)."""
    with torch.no_grad():
        wq = quantizer(weight.detach()).float()
        bits = getattr(getattr(quantizer, "precision", None), "weight_bits", 32)
        step_of = getattr(quantizer, "step", None)
        step = step_of(weight.detach()) if callable(step_of) else None
        if step is not None:  # integer codes times a step size (LSQ)
            codes = torch.round(wq / step)
            if bool((codes < -128).any() or (codes > 127).any()):
                return None
            if torch.equal(codes * step, wq):
                return "bits8", codes.to(torch.int8), step.float().contiguous()
            return None
        if bits == 1:
            positive = ~torch.signbit(wq)
            for s in _scale_candidates(wq.abs()):
                if torch.equal(torch.where(positive, s, -s), wq):
                    return "bits1", positive, s.contiguous()
        elif bits == 2:
            codes = torch.sign(wq)
            for s in _scale_candidates(wq.abs()):
                if torch.equal(codes * s, wq):
                    return "bits2", codes.to(torch.int8), s.contiguous()
    return None


def _dequantize(kind: str, codes: Tensor, scale: Tensor) -> Tensor:
    if kind == "bits1":
        return torch.where(codes, scale, -scale)
    return codes.to(torch.float32) * scale


def _weight_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules whose forward quantizes their own `weight` (QLinear, QConv2d) with a weight quantizer."""
    return [
        (n, m)
        for n, m in model.named_modules()
        if getattr(m, "weight_quant", None) is not None and isinstance(getattr(m, "weight", None), Tensor)
    ]


# ------------------------------------------------------------------------------------------ blobs


class _Blobs:
    """Flat per-kind storage: `add` appends a flat tensor and returns its offset (in elements)."""

    def __init__(self) -> None:
        self.parts: dict[str, list[Tensor]] = {}
        self.sizes: dict[str, int] = {}

    def add(self, kind: str, flat: Tensor) -> int:
        offset = self.sizes.get(kind, 0)
        self.parts.setdefault(kind, []).append(flat.reshape(-1))
        self.sizes[kind] = offset + flat.numel()
        return offset

    def tensors(self) -> dict[str, Tensor]:
        return {k: torch.cat(v).contiguous() for k, v in self.parts.items()}


def _sha256(t: Tensor) -> str:
    return hashlib.sha256(t.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()


def _plain_kind(t: Tensor, half: bool) -> str:
    if t.dtype == torch.float32:
        return "fp16" if half else "fp32"
    name = str(t.dtype).removeprefix("torch.")
    if name not in _RAW_DTYPES:
        raise BvbenchError(f"cannot export a tensor of dtype {name}")
    return name


# ------------------------------------------------------------------------------------------ export


def _num_classes(row: Any, state: dict[str, Tensor]) -> int:
    """The class count the run's model was built with, read off its checkpoint (no data set needed)."""
    if row.model.num_classes:
        return int(row.model.num_classes)
    with torch.device("meta"):  # shapes only: no memory, no weight initialisation work
        probe = build_model(row.model.model_copy(update={"pretrained": False, "checkpoint": None}), 2)
    for name, t in probe.state_dict().items():
        saved = state.get(name)
        if (
            saved is not None
            and t.dim() >= 1
            and t.shape[0] == 2
            and saved.dim() == t.dim()
            and saved.shape[0] != 2
            and saved.shape[1:] == t.shape[1:]
        ):
            return int(saved.shape[0])
    return 2


def freeze_weights(model: nn.Module) -> dict[str, tuple[str, Tensor, Tensor]]:
    """Quantize every weight once, as a packed file stores it: each layer's `weight` becomes its quantizer's
    fp32 output and its quantizer `Dequantized`. Returns layer name -> (kind, codes, scale) for the weights
    `split_weight` could store as codes (the others stay dequantized fp32); `compile_model` takes this map."""
    codes: dict[str, tuple[str, Tensor, Tensor]] = {}
    for name, module in _weight_modules(model):
        quantizer: nn.Module = module.weight_quant  # type: ignore[assignment]
        weight: Tensor = module.weight  # type: ignore[assignment]
        split = split_weight(quantizer, weight)
        with torch.no_grad():
            weight.copy_(quantizer(weight.detach()).float() if split is None else _dequantize(*split))
        module.weight_quant = Dequantized(getattr(quantizer, "precision", Precision()))
        if split is not None:
            codes[name] = split
    return codes


def _weight_entries(model: nn.Module, codes: dict[str, tuple[str, Tensor, Tensor]], blobs: _Blobs
                    ) -> tuple[list[dict[str, Any]], list[str]]:
    """Manifest entries of the frozen quantized weights (codes and scale, or dequantized fp32) and the names
    of the layers stored dequantized."""
    entries: list[dict[str, Any]] = []
    dequantized: list[str] = []
    for name, module in _weight_modules(model):
        weight: Tensor = module.weight  # type: ignore[assignment]
        entry: dict[str, Any] = {"name": _weight_key(name), "shape": list(weight.shape), "dequantized": True}
        if name not in codes:
            entry.update(kind="fp32", offset=blobs.add("fp32", weight.detach().float()), scale=None)
            dequantized.append(name)
        else:
            kind, c, scale = codes[name]
            data = pack_bits(c) if kind == "bits1" else pack_ternary(c) if kind == "bits2" else c
            entry.update(kind=kind, offset=blobs.add(kind, data),
                         scale={"kind": "fp32", "shape": list(scale.shape), "offset": blobs.add("fp32", scale)})
        entries.append(entry)
    return entries, dequantized


def _weight_key(layer: str) -> str:
    return f"{layer}.weight" if layer else "weight"


def _plain_entries(model: nn.Module, skip: set[str], blobs: _Blobs, half: bool) -> list[dict[str, Any]]:
    """Manifest entries of every other tensor of the state dict (fp32, fp16 with `half`, or its raw dtype)."""
    entries = []
    for key, t in model.state_dict().items():
        if key in skip:
            continue
        kind = _plain_kind(t, half)
        stored = t.detach().cpu().to(_BLOB_DTYPES.get(kind) or _RAW_DTYPES[kind])
        entries.append({"name": key, "kind": kind, "shape": list(t.shape), "offset": blobs.add(kind, stored),
                        "scale": None, "dequantized": False})
    return entries


def _pack(model: nn.Module, codes: dict[str, tuple[str, Tensor, Tensor]], half: bool
          ) -> tuple[list[dict[str, Any]], list[str], dict[str, Tensor]]:
    """Manifest entries, layers stored dequantized and the blobs of a frozen model."""
    blobs = _Blobs()
    entries, dequantized = _weight_entries(model, codes, blobs)
    entries += _plain_entries(model, {_weight_key(n) for n, _ in _weight_modules(model)}, blobs, half)
    return entries, dequantized, blobs.tensors()


def _blob_info(tensors: dict[str, Tensor]) -> dict[str, dict[str, Any]]:
    return {k: {"numel": v.numel(), "sha256": _sha256(v)} for k, v in tensors.items()}


class _ByteCounter:
    """A write-only file that counts the bytes `torch.save` writes to it."""

    def __init__(self) -> None:
        self.n = 0

    def write(self, data: bytes) -> int:
        self.n += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def packed_file_bytes(model: nn.Module, manifest: dict[str, Any] | None = None) -> int:
    """Bytes of the packed file `model` is written as (`bvbench export`'s layout with `manifest`'s extra keys,
    e.g. the row), without writing it; `model` is unchanged (a frozen copy is packed)."""
    frozen = copy.deepcopy(model)
    entries, _, tensors = _pack(frozen, freeze_weights(frozen), False)
    head = {"format": FORMAT, "version": VERSION, "created": now(), **(manifest or {})}
    sink = _ByteCounter()
    torch.save({"manifest": {**head, "entries": entries, "blobs": _blob_info(tensors)}, "blobs": tensors}, sink)
    return sink.n


def _manifest(cfg: Any, run_dir: Path, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": FORMAT, "version": VERSION, "created": now(), "recipe": cfg.recipe, "profile": cfg.profile,
        "seed": cfg.seed, "run_id": cfg.run_id or run_dir.name, "data_dir": cfg.data_dir,
        "row": cfg.row.model_dump(mode="json"), **extra,
    }  # fmt: skip


def export_run(run_dir: str | Path, out_file: str | Path, *, half: bool = False) -> dict[str, Any]:
    """Write the finished run in `run_dir` as a packed model file `out_file`; returns the sizes.

    `half=True` stores the full-precision tensors (not the scales) as fp16: smaller, but predictions are then
    no longer guaranteed identical. Returns ``file_bytes`` (the packed file), ``theoretical_bytes`` /
    ``theoretical_mb`` (`theoretical_size` of the run's model), ``checkpoint_bytes`` (its fp32 checkpoint.pt),
    ``packed_layers`` and ``dequantized_layers`` (quantized weights stored as fp32 because codes * scale
    could not reproduce them exactly).
    """
    rd = RunDir(Path(run_dir))
    cfg = rd.config()
    ckpt = rd.checkpoint()
    num_classes = _num_classes(cfg.row, load_state(ckpt))
    model = build_row_model(cfg.row, num_classes, ckpt).eval()
    theo = theoretical_size(model)  # before freezing: learnable weight scales still count as parameters
    codes = freeze_weights(model)
    entries, dequantized, tensors = _pack(model, codes, half)
    manifest = _manifest(cfg, Path(run_dir), {
        "num_classes": num_classes, "methods_version": methods_version(), "half": half,
        "sizes": {"theoretical_bytes": theo["bytes"], "checkpoint_bytes": ckpt.stat().st_size},
        "entries": entries, "blobs": _blob_info(tensors),
    })  # fmt: skip
    out = Path(out_file)
    try:
        atomic_torch_save({"manifest": manifest, "blobs": tensors}, out)
    except OSError as e:
        raise BvbenchError(f"cannot write {out}: {e.strerror}") from None
    file_bytes = out.stat().st_size
    return {
        "file": str(out), "run": str(run_dir), "file_bytes": file_bytes, "theoretical_bytes": theo["bytes"],
        "theoretical_mb": theo["mb"], "checkpoint_bytes": ckpt.stat().st_size,
        "file_vs_theoretical": file_bytes / theo["bytes"] if theo["bytes"] else math.nan,
        "packed_layers": len(codes), "dequantized_layers": dequantized, "half": half,
    }  # fmt: skip


# ------------------------------------------------------------------------------------------ loading


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise BvbenchError(f"packed model file {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or foreign file
        raise BvbenchError(
            f"{path} is corrupt or not a bvbench packed model file ({type(e).__name__})"
        ) from None
    manifest = obj.get("manifest") if isinstance(obj, dict) else None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BvbenchError(
            f"{path} is not a bvbench packed model file (no {FORMAT!r} manifest); "
            "write one with `bvbench export RUN_DIR --out FILE`"
        )
    if not isinstance(manifest.get("version"), int) or manifest["version"] > VERSION:
        raise BvbenchError(
            f"{path} is packed format version {manifest.get('version')!r}; this bvbench reads "
            f"versions up to {VERSION} (upgrade bvbench)"
        )
    return obj


def _slice(blobs: dict[str, Tensor], kind: str, offset: int, count: int) -> Tensor:
    blob = blobs[kind]
    if not (isinstance(offset, int) and 0 <= offset and offset + count <= blob.numel()):
        raise ValueError(f"{kind} slice [{offset}, {offset} + {count}) is outside its blob of {blob.numel()}")
    return blob[offset : offset + count]


def _codes(entry: dict[str, Any], blobs: dict[str, Tensor]) -> tuple[str, Tensor, Tensor]:
    """(kind, codes, scale) of a packed entry, as `split_weight` returned them at export."""
    kind, shape, offset = entry["kind"], [int(d) for d in entry["shape"]], entry["offset"]
    n = math.prod(shape)
    sc = entry["scale"]
    sshape = [int(d) for d in sc["shape"]]
    scale = _slice(blobs, "fp32", sc["offset"], math.prod(sshape)).reshape(sshape)
    if kind == "bits1":
        codes: Tensor = unpack_bits(_slice(blobs, kind, offset, (n + 7) // 8), n).reshape(shape)
    elif kind == "bits2":
        codes = unpack_ternary(_slice(blobs, kind, offset, (n + 3) // 4), n).reshape(shape)
    else:
        codes = _slice(blobs, kind, offset, n).reshape(shape)
    return kind, codes, scale


def _decode(entry: dict[str, Any], blobs: dict[str, Tensor]) -> Tensor:
    """The fp32 (or raw-dtype) tensor an entry describes."""
    kind, shape, offset = entry["kind"], [int(d) for d in entry["shape"]], entry["offset"]
    n = math.prod(shape)
    if kind in PACKED_KINDS:
        return _dequantize(*_codes(entry, blobs))
    if kind in ("fp32", "fp16"):
        return _slice(blobs, kind, offset, n).reshape(shape).float()
    if kind in _RAW_DTYPES:
        return _slice(blobs, kind, offset, n).reshape(shape)
    raise ValueError(f"unknown storage kind {kind!r}")


def _corrupt(path: Path, detail: str) -> BvbenchError:
    return BvbenchError(f"packed model file {path} is corrupt: {detail}")


def _check_blobs(path: Path, obj: dict[str, Any]) -> tuple[Row, int, list[dict[str, Any]]]:
    """The row, class count and entries of a read file whose blobs match their checksums."""
    manifest, blobs = obj["manifest"], obj.get("blobs")
    try:
        if not isinstance(blobs, dict) or set(blobs) != set(manifest["blobs"]):
            raise _corrupt(path, "its tensor blobs do not match the manifest")
        for kind, info in manifest["blobs"].items():
            t = blobs[kind]
            want = _BLOB_DTYPES.get(kind) or _RAW_DTYPES.get(kind)
            if (
                not isinstance(t, Tensor)
                or t.dtype != want
                or t.numel() != info["numel"]
                or _sha256(t) != info["sha256"]
            ):
                raise _corrupt(path, f"the {kind} blob fails its checksum")
        return Row.model_validate(manifest["row"]), int(manifest["num_classes"]), manifest["entries"]
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise _corrupt(path, f"bad manifest ({type(e).__name__}: {e})") from None


def _rebuild(path: Path, obj: dict[str, Any]) -> tuple[nn.Module, dict[str, tuple[str, Tensor, Tensor]]]:
    """The file's model with its dequantized weights loaded, and layer name -> (kind, codes, scale)."""
    row, num_classes, entries = _check_blobs(path, obj)
    blobs = obj["blobs"]
    model = build_row_model(row, num_classes)
    state: dict[str, Tensor] = {}
    codes: dict[str, tuple[str, Tensor, Tensor]] = {}
    try:
        for entry in entries:
            name = entry["name"]
            if entry.get("dequantized"):
                layer = name.rpartition(".")[0]
                owner = model.get_submodule(layer)
                wq = getattr(owner, "weight_quant", None)
                if wq is None:
                    raise ValueError(f"{name} is stored quantized but its layer has no weight quantizer")
                owner.weight_quant = Dequantized(getattr(wq, "precision", Precision()))
                if entry["kind"] in PACKED_KINDS:
                    codes[layer] = _codes(entry, blobs)
            state[name] = _decode(entry, blobs)
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:
        raise _corrupt(path, f"{type(e).__name__}: {e}") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise _corrupt(path, f"its tensors do not fit row {row.name!r}: {str(e).splitlines()[0]}") from None
    return model.eval(), codes


def load_packed(file: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The model stored in a packed file (eval mode, on the CPU) and the file's manifest.

    Rebuilds the row's model (random init, every stage's method applied), makes each packed layer's weight
    quantizer `Dequantized` and loads the unpacked weights: the simulated (fake-quantized) model. Any
    inconsistency is a BvbenchError."""
    path = Path(file)
    obj = _read_file(path)
    return _rebuild(path, obj)[0], obj["manifest"]


def load_engine(file: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The packed file's model compiled into the packed engine (`bvbench.engine.compile_model`): its linear
    layers and attention products run from the stored codes on the bit kernels. BvbenchError where the
    engine does not support the model's family or a layer."""
    path = Path(file)
    obj = _read_file(path)
    model, codes = _rebuild(path, obj)
    return compile_model(model, codes), obj["manifest"]


ENGINES = ("simulated", "packed")


def evaluate_packed(file: str | Path, data_dir: str | None = None, device: str = "auto",
                    engine: str = "simulated") -> dict[str, Any]:
    """Evaluate a packed model file on its run's test split (`bvbench eval FILE`), like `evaluate_run`:
    `engine` "simulated" runs the fake-quantized model (any device), "packed" the packed engine (CPU)."""
    if engine not in ENGINES:
        raise BvbenchError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine == "packed" and device not in ("auto", "cpu"):
        raise BvbenchError(f"the packed engine runs on the CPU only, not on {device}")
    model, manifest = (load_engine if engine == "packed" else load_packed)(file)
    row = Row.model_validate(manifest["row"])
    dev = pick_device("cpu" if engine == "packed" else device)
    ds, info = build_dataset(row.data, data_root(data_dir or manifest.get("data_dir")), "test")
    if info.num_classes != manifest["num_classes"]:
        raise BvbenchError(
            f"{file} predicts {manifest['num_classes']} classes but {info.display} has {info.num_classes}"
        )
    loader = eval_loader(ds, row.eval.batch_size, row.data.num_workers)
    logits, targets = predict(model.to(dev), loader, dev)
    metrics, _ = classification_metrics(logits, targets, info.num_classes, row.eval.topk)
    extra = {"kernel_path": kernel_path(), "cpu": cpu_model()} if engine == "packed" else {}
    return {
        "file": str(file),
        "run": manifest.get("run_id"),
        "data": info.display,
        "engine": engine,
        **extra,
        "file_bytes": Path(file).stat().st_size,
        **manifest.get("sizes", {}),
        **metrics,
    }
