"""Attention maps of finished runs on the same test images (the 1.58-bit poster's figure).

Two ways to turn a ViT's attention into one map over the image patches:
  rollout  Abnar & Zuidema (2020): per layer, average the heads, add the identity (the residual path) and
           renormalise the rows; multiply the layers from the first to the last; read the class token's row
           over the patch tokens. Prefix tokens (class, DeiT's distillation token, registers) are skipped.
  last     the last layer's class-token attention over the patch tokens, averaged over heads.
The attention read is the one the model multiplies V with: softmax(q k^T / sqrt(d)) for timm's `Attention`,
the quantized map for bvbench's `QAttention` (binarized maps are 0/1-like). Negative entries are clipped to 0
and each row is scaled to sum to 1 before the rollout, which changes nothing for softmax maps.
"""

from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor, nn

from bvbench.build import build_row_model
from bvbench.data import build_dataset, data_root
from bvbench.errors import BvbenchError
from bvbench.models import unfused_attention
from bvbench.quant.qattention import attention_family, attention_modules
from bvbench.recipes.schema import Row
from bvbench.results import DONE, Metrics, RunDir, atomic_write_bytes

matplotlib.use("Agg")

METHODS = {  # figure title: (name, how)
    "rollout": ("Attention rollout (Abnar & Zuidema 2020)",
                "heads averaged, + identity, rows renormalised, layers multiplied; class-token row over the patches"),
    "last": ("Last-layer class-token attention", "averaged over heads"),
}


# ------------------------------------------------------------------------------------------ maths


def _row_stochastic(a: Tensor) -> Tensor:
    """Clip negatives to 0 and scale each row to sum to 1 (an all-zero row becomes uniform)."""
    a = a.float().clamp_min(0)
    s = a.sum(dim=-1, keepdim=True)
    uniform = torch.full_like(a, 1.0 / a.shape[-1])
    return torch.where(s > 0, a / s.clamp_min(1e-12), uniform)


def rollout(attentions: list[Tensor]) -> Tensor:
    """Attention rollout [B, N, N] of per-layer maps [B, H, N, N] (first layer first); rows sum to 1."""
    if not attentions:
        raise BvbenchError("attention rollout needs at least one attention layer")
    out: Tensor | None = None
    for a in attentions:
        a = _row_stochastic(a).mean(dim=1)  # average the heads
        eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = a + eye
        a = a / a.sum(dim=-1, keepdim=True)
        out = a if out is None else a @ out
    assert out is not None
    return out


def cls_map(attentions: list[Tensor], num_prefix: int, method: str = "rollout") -> Tensor:
    """[B, P] weight of each patch token seen from the class token (rollout or the last layer); with no class
    token (num_prefix == 0, average pooling) the mean over all token rows is used instead."""
    if method not in METHODS:
        raise BvbenchError(f"attention method {method!r}: choose one of {', '.join(METHODS)}")
    if method == "rollout":
        m = rollout(attentions)
    else:
        m = _row_stochastic(attentions[-1]).mean(dim=1)
    rows = m[:, 0] if num_prefix > 0 else m.mean(dim=1)
    return rows[:, num_prefix:]


# ------------------------------------------------------------------------------------------ models


def _vit_geometry(model: nn.Module) -> tuple[int, tuple[int, int]]:
    """(number of prefix tokens, patch grid) of a ViT/DeiT; a clear error for other models."""
    mods = attention_modules(model)
    if not mods:
        raise BvbenchError(f"{type(model).__name__} has no attention layers (a CNN?): there are no attention maps "
                           "to draw; pick ViT/DeiT runs")
    families = {attention_family(m) for _, _, m in mods}
    if families != {"vit"}:
        raise BvbenchError(f"{type(model).__name__} uses windowed attention ({', '.join(sorted(map(str, families)))}); "
                           "attention maps are drawn for ViT/DeiT models with global attention only")
    pe = getattr(model, "patch_embed", None)
    grid = getattr(pe, "grid_size", None)
    if grid is None:
        raise BvbenchError(f"{type(model).__name__} has no patch_embed.grid_size: cannot place its tokens on the image")
    return int(getattr(model, "num_prefix_tokens", 1)), (int(grid[0]), int(grid[1]))


@torch.inference_mode()
def collect_attention(model: nn.Module, x: Tensor) -> tuple[list[Tensor], Tensor]:
    """Every attention layer's map [B, H, N, N] (forward order) and the logits of `x`, read with forward hooks
    on each attention module's `attn_drop` (its input is the map multiplied with V); timm's fused attention is
    turned off for the pass."""
    maps: list[Tensor] = []

    def hook(_mod: nn.Module, args: tuple[Any, ...]) -> None:
        maps.append(args[0].detach().float().cpu())

    mods = attention_modules(model)
    if not mods:
        raise BvbenchError(f"{type(model).__name__} has no attention layers: there are no attention maps to draw")
    handles = [m.attn_drop.register_forward_pre_hook(hook) for _, _, m in mods]
    was_training = model.training
    model.eval()
    try:
        with unfused_attention(model):
            out = model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if isinstance(out, tuple):  # a distilled model left in distilled-training mode
        out = (out[0] + out[1]) / 2
    if len(maps) != len(mods):
        raise BvbenchError(f"read {len(maps)} attention maps from {len(mods)} attention layers "
                           "(fused attention still on?)")
    return maps, out.float().cpu()


# ------------------------------------------------------------------------------------------ runs


@dataclass
class LoadedRun:
    """A finished run ready to draw: its row, metrics, model and data settings."""

    path: Path
    row: Row
    metrics: Metrics
    data_dir: str | None
    seed: int

    @property
    def title(self) -> str:
        top1 = self.metrics.top1
        acc = f"top-1 {100 * top1:.1f}%" if isinstance(top1, int | float) else "top-1 —"
        return f"{self.metrics.label or self.row.label}\n{acc}"

    def data_key(self) -> tuple[Any, ...]:
        """What decides which test images the run sees (the subset depends on the seed)."""
        d = self.row.data
        return (d.name, d.img_size, d.test_subset, self.seed if d.test_subset is not None else None)


def load_run(path: Path) -> LoadedRun:
    """config.yaml, metrics.json and the row of a finished run folder; BvbenchError otherwise."""
    path = Path(path)
    rd = RunDir(path)
    if not path.is_dir():
        raise BvbenchError(f"{path} is not a folder (expected a run folder results/<recipe>/<row>/<run-id>)")
    cfg = rd.config()
    if not rd.done:
        raise BvbenchError(f"{path}: the run is not finished (no {DONE}); expected a finished run "
                           "results/<recipe>/<row>/<run-id>")
    rd.checkpoint()
    return LoadedRun(path, cfg.row, rd.metrics(), cfg.data_dir, cfg.seed)


def _unnormalise(x: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """[3, H, W] normalised tensor -> [H, W, 3] floats in [0, 1]."""
    m = torch.tensor(mean).view(-1, 1, 1)
    s = torch.tensor(std).view(-1, 1, 1)
    return (x * s + m).clamp(0, 1).permute(1, 2, 0).numpy()


def attention_figure(run_dirs: list[Path], n_images: int, out: Path, *, data_dir: str | None = None,
                     method: str = "rollout") -> Path:
    """Draw the first `n_images` test images (rows) and each run's attention over them (columns, titled with
    the row label and top-1) into the PNG `out`; the method is named in the figure title."""
    if method not in METHODS:
        raise BvbenchError(f"--method {method!r}: choose one of {', '.join(METHODS)}")
    if not run_dirs:
        raise BvbenchError("give at least one run folder")
    if n_images < 1:
        raise BvbenchError(f"--images {n_images}: draw at least one image")
    runs = _same_data_runs(run_dirs)
    first = runs[0]
    ds, info = build_dataset(first.row.data, data_root(data_dir or first.data_dir), "test", seed=first.seed)
    n = min(n_images, len(ds))  # type: ignore[arg-type]
    items = [ds[i] for i in range(n)]
    x = torch.stack([it[0] for it in items])
    labels = [int(it[1]) for it in items]
    cols = [_run_maps(r, x, info.num_classes, method) for r in runs]
    fig = _draw(x, labels, cols, info, method)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    out = Path(out)
    atomic_write_bytes(out, buf.getvalue())
    return out


def _same_data_runs(run_dirs: list[Path]) -> list[LoadedRun]:
    """The runs, read; runs tested on different data (set, size, subset) are a user error."""
    runs = [load_run(Path(p)) for p in run_dirs]
    keys = {r.data_key() for r in runs}
    if len(keys) > 1:
        seen = "; ".join(f"{r.path.parent.name}: {r.row.data.name} {r.row.data.img_size or 'native'}px"
                         + (f", test_subset {r.row.data.test_subset}" if r.row.data.test_subset else "")
                         for r in runs)
        raise BvbenchError(f"the runs use different test data ({seen}); attention maps compare runs on the same images")
    return runs


def _run_maps(r: LoadedRun, x: Tensor, num_classes: int, method: str) -> tuple[LoadedRun, np.ndarray, list[int]]:
    """One run's attention maps [n, gh, gw] over the images `x` and its predictions."""
    model = build_row_model(r.row, num_classes, RunDir(r.path).checkpoint())
    num_prefix, grid = _vit_geometry(model)
    maps, logits = collect_attention(model, x)
    heat = cls_map(maps, num_prefix, method)
    if heat.shape[1] != grid[0] * grid[1]:
        raise BvbenchError(f"{r.path}: {heat.shape[1]} patch tokens do not fill a {grid[0]}x{grid[1]} grid")
    heat = heat.view(len(x), *grid)  # one value per patch: drawn as blocks, never smoothed
    return r, heat.numpy(), logits.argmax(dim=1).tolist()


def _draw(x: Tensor, labels: list[int], cols: list[tuple[LoadedRun, np.ndarray, list[int]]], info: Any,
          method: str) -> Any:
    """The figure: a row per image, the original then each run's map on one shared colour scale."""
    vmax = shared_scale([h for _, h, _ in cols])
    n, ncols = len(x), 1 + len(cols)
    size = 2.3
    fig, axes = plt.subplots(n, ncols, figsize=(size * ncols, size * n + 1.0), squeeze=False, layout="constrained")
    im = None
    for i in range(n):
        img = _unnormalise(x[i], info.mean, info.std)
        ax = axes[i, 0]
        ax.imshow(img, interpolation="nearest")
        ax.set_ylabel(f"#{i}: {info.classes[labels[i]]}", fontsize=8)
        if i == 0:
            ax.set_title("original", fontsize=9)
        for j, (r, heat, preds) in enumerate(cols, start=1):
            ax = axes[i, j]
            im = heat_panel(ax, img, heat[i], vmax)
            ok = preds[i] == labels[i]
            ax.set_xlabel(f"pred {info.classes[preds[i]]}", fontsize=7, color="green" if ok else "red")
            if i == 0:
                ax.set_title(r.title, fontsize=9)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    if im is not None:
        fig.colorbar(im, ax=axes[:, 1:].ravel().tolist(), shrink=0.6,
                     label="class-token attention per patch (one scale for every map)")
    name, how = METHODS[method]
    width = max(40, int(size * ncols * 12))  # characters that fit the figure's width at this font size
    fig.suptitle(textwrap.fill(f"{name} — {info.display}, first {n} test images", width) + "\n"
                 + textwrap.fill(f"({how})", width), fontsize=9)
    return fig


HEAT_CMAP = "viridis"  # perceptually uniform (not jet)


def shared_scale(heats: list[np.ndarray]) -> float:
    """One colour scale for every map of a figure: 0 to the largest patch attention of any of them."""
    return max([float(np.max(h)) for h in heats if h.size] + [1e-12])


def heat_panel(ax: Any, img: np.ndarray, heat: np.ndarray, vmax: float) -> Any:
    """The image with the patch-grid attention `heat` [gh, gw] over it: one block per patch (nearest),
    a perceptual colour map and the figure's shared scale [0, vmax]."""
    h, w = img.shape[:2]
    ax.imshow(img, interpolation="nearest")
    return ax.imshow(heat, cmap=HEAT_CMAP, alpha=0.6, vmin=0.0, vmax=vmax, interpolation="nearest",
                     extent=(-0.5, w - 0.5, h - 0.5, -0.5))


def default_out(run_dirs: list[Path], method: str) -> Path:
    """results/<recipe>/attention_<method>.png for the first run folder results/<recipe>/<row>/<run-id>."""
    return Path(run_dirs[0]).resolve().parent.parent / f"attention_{method}.png"


__all__ = ["METHODS", "attention_figure", "heat_panel", "shared_scale", "cls_map", "collect_attention", "default_out", "load_run", "rollout"]
