"""Full-precision model builders: timm by name (with size overrides) and torchvision CNNs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from bvbench.errors import BvbenchError
from bvbench.registry import suggest

TORCHVISION_MODELS = ("resnet18", "resnet50", "vgg16", "vgg16_bn")
TIMM_OVERRIDES = ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio")
# timm entry points that fix their sizes (`dict(embed_dims=..., **kwargs)` rejects a second value): with
# `model.kwargs` set, bvbench builds the architecture's class itself, everything else at the class defaults.
FIXED_SIZE_ENTRYPOINTS = {"nest_tiny": "Nest", "nest_small": "Nest", "nest_base": "Nest"}


class ModelConfig(Protocol):
    """What the builders read from a model configuration (any object with these attributes, e.g. the recipe
    schema's `ModelConfig`; models/ never imports the schema)."""

    name: str
    source: str
    pretrained: bool
    checkpoint: str | None
    img_size: int | None
    patch_size: int | None
    embed_dim: int | None
    depth: int | None
    num_heads: int | None
    mlp_ratio: float | None
    drop_path_rate: float
    num_classes: int | None
    kwargs: dict[str, Any]


def list_models(pattern: str = "*") -> list[str]:
    """Model names bvbench can build: every timm architecture plus the torchvision CNNs."""
    import fnmatch

    import timm

    return sorted(set(timm.list_models(pattern)) | {m for m in TORCHVISION_MODELS if fnmatch.fnmatch(m, pattern)})


def _torchvision(cfg: ModelConfig, num_classes: int) -> nn.Module:
    import torchvision

    if cfg.name not in TORCHVISION_MODELS:
        raise BvbenchError(
            f"unknown torchvision model {cfg.name!r}.{suggest(cfg.name, TORCHVISION_MODELS)}"
        )
    if cfg.kwargs:
        raise BvbenchError(f"torchvision model {cfg.name!r} takes no model.kwargs ({', '.join(sorted(cfg.kwargs))})")
    weights = "DEFAULT" if cfg.pretrained else None
    try:
        model = getattr(torchvision.models, cfg.name)(weights=weights)
    except (OSError, RuntimeError) as e:  # no internet, no cache
        raise BvbenchError(f"cannot load torchvision weights for {cfg.name}: {e}") from None
    # Replace the classifier for the data set's classes (keeps pretrained features).
    if cfg.name.startswith("resnet"):
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    else:
        last = model.classifier[-1]
        model.classifier[-1] = nn.Linear(last.in_features, num_classes)
    return model


def _timm(cfg: ModelConfig, num_classes: int) -> nn.Module:
    import timm

    if not timm.is_model(cfg.name):
        raise BvbenchError(
            f"unknown timm model {cfg.name!r}.{suggest(cfg.name, timm.list_models())} (`bvbench list models`)"
        )
    kwargs = {k: getattr(cfg, k) for k in TIMM_OVERRIDES if getattr(cfg, k) is not None}
    kwargs.update(cfg.kwargs)
    if cfg.drop_path_rate:
        kwargs["drop_path_rate"] = cfg.drop_path_rate
    try:
        if cfg.kwargs and cfg.name in FIXED_SIZE_ENTRYPOINTS:
            if cfg.pretrained:
                raise BvbenchError(f"model {cfg.name!r}: pretrained weights do not fit the sizes in model.kwargs")
            import timm.models.nest as module

            return getattr(module, FIXED_SIZE_ENTRYPOINTS[cfg.name])(num_classes=num_classes, **kwargs)
        return timm.create_model(cfg.name, pretrained=cfg.pretrained, num_classes=num_classes, **kwargs)
    except TypeError as e:  # an override the architecture does not take
        raise BvbenchError(f"model {cfg.name!r} does not accept {sorted(kwargs)}: {e}") from None
    except (OSError, RuntimeError) as e:
        if cfg.pretrained:
            raise BvbenchError(
                f"cannot fetch timm pretrained weights for {cfg.name!r} ({type(e).__name__}); "
                "connect to the internet once (they are cached in ~/.cache/huggingface) or set "
                "model.checkpoint to a local file"
            ) from None
        raise


def load_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A state_dict from a local file, loaded safely (weights_only=True); clear errors when it is bad."""
    p = Path(path)
    if not p.is_file():
        raise BvbenchError(f"checkpoint {p} does not exist")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated/foreign files
        raise BvbenchError(f"checkpoint {p} is corrupt or not a PyTorch file ({type(e).__name__})") from None
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BvbenchError(f"checkpoint {p} holds no state_dict of tensors")
    return obj


def build_model(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """The full-precision model of a recipe row (random init unless `pretrained`/`checkpoint`)."""
    n = cfg.num_classes or num_classes
    model = _torchvision(cfg, n) if cfg.source == "torchvision" else _timm(cfg, n)
    if cfg.checkpoint:
        state = load_state(cfg.checkpoint)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or len(missing) == len(list(model.state_dict())):
            raise BvbenchError(
                f"checkpoint {cfg.checkpoint} does not fit model {cfg.name!r} "
                f"({len(missing)} missing, {len(unexpected)} unexpected keys)"
            )
    return model


def is_distilled(model: nn.Module) -> bool:
    """True for DeiT models with a distillation token (two heads)."""
    return hasattr(model, "set_distilled_training") and hasattr(model, "head_dist")


@contextmanager
def unfused_attention(model: nn.Module | None = None) -> Iterator[None]:
    """Turn timm's fused attention off (globally and on ``model``'s built modules), restore it on exit.

    Fused attention (``F.scaled_dot_product_attention``) hides ``q @ k^T`` and ``attn @ v`` from fvcore.
    """
    import timm.layers.config as timm_config

    saved_flag = timm_config._USE_FUSED_ATTN
    saved_modules: list[tuple[nn.Module, Any]] = []
    timm_config._USE_FUSED_ATTN = 0
    if model is not None:
        for module in model.modules():
            if isinstance(getattr(module, "fused_attn", None), bool):
                saved_modules.append((module, module.fused_attn))
                module.fused_attn = False
    try:
        yield
    finally:
        timm_config._USE_FUSED_ATTN = saved_flag
        for module, value in saved_modules:
            module.fused_attn = value
