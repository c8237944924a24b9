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
    weights = "DEFAULT" if cfg.pretrained and not cfg.checkpoint else None  # model.checkpoint: no download
    try:
        model = getattr(torchvision.models, cfg.name)(weights=weights)
    except (OSError, RuntimeError) as e:  # no internet, no cache
        save = f"torch.save(torchvision.models.{cfg.name}(weights='DEFAULT').state_dict(), '{cfg.name}.pth')"
        raise BvbenchError(f"cannot load torchvision weights for {cfg.name} ({type(e).__name__}); {_advice(save, cfg)}"
                           ) from None
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
    # always the recipe's value: timm's own defaults differ by family (ViT 0, Swin 0.1, NesT 0.5)
    kwargs["drop_path_rate"] = cfg.drop_path_rate
    download = cfg.pretrained and not cfg.checkpoint  # model.checkpoint replaces the hub's weights: no download
    offline = download and not _hub_reachable()
    try:
        if cfg.kwargs and cfg.name in FIXED_SIZE_ENTRYPOINTS:
            if cfg.pretrained:
                raise BvbenchError(f"model {cfg.name!r}: pretrained weights do not fit the sizes in model.kwargs")
            import timm.models.nest as module

            return getattr(module, FIXED_SIZE_ENTRYPOINTS[cfg.name])(num_classes=num_classes, **kwargs)
        with _hub_offline(offline):
            return timm.create_model(cfg.name, pretrained=download, num_classes=num_classes, **kwargs)
    except TypeError as e:  # an override the architecture does not take
        raise BvbenchError(f"model {cfg.name!r} does not accept {sorted(kwargs)}: {e}") from None
    except AssertionError as e:  # timm's shape checks, e.g. a head count that does not divide the width
        raise BvbenchError(f"model {cfg.name!r} cannot be built with {kwargs}: {e}") from None
    except (OSError, RuntimeError) as e:
        if download:
            save = f"torch.save(timm.create_model('{cfg.name}', pretrained=True).state_dict(), '{cfg.name}.pth')"
            why = "the hub cannot be reached" if offline else f"the download failed: {type(e).__name__}"
            raise BvbenchError(f"cannot fetch timm pretrained weights for {cfg.name!r} (not in the Hugging Face "
                               f"cache, and {why}); {_advice(save, cfg)}") from None
        raise


def _advice(save: str, cfg: ModelConfig) -> str:
    """How to get the weights onto a machine without internet: a command that works, and the key to set."""
    lib = "timm" if "timm." in save else "torchvision"
    return (f"on a machine with internet run: python -c \"import torch, {lib}; {save}\", copy the file here and "
            f"pass --set model.checkpoint={cfg.name}.pth (with model.checkpoint nothing is downloaded)")


def _hub_reachable() -> bool:
    """Whether the Hugging Face hub (or $HF_ENDPOINT) answers within 3 s; asked once per model build, so an
    offline machine fails at once instead of after a minute of retries. True when offline mode is already set."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return True  # the hub is not asked at all; the cache answers
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=3).close()
    except OSError:
        return False
    return True


@contextmanager
def _hub_offline(on: bool) -> Iterator[None]:
    """Load from the local Hugging Face cache only while `on` (huggingface_hub's offline mode)."""
    if not on:
        yield
        return
    from huggingface_hub import constants

    saved, constants.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE, True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def safe_load(path: Path, advice: str = "") -> Any:
    """`torch.load(weights_only=True)` of a checkpoint; a one-line BvbenchError (+ `advice`) when it is truncated,
    foreign or holds pickled Python objects (whose loading could run code: refused, never executed)."""
    import pickle
    import warnings

    try:
        with warnings.catch_warnings():  # torch warns about odd pickle protocols of foreign files on stderr
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower():
            raise BvbenchError(f"checkpoint {path} holds Python objects, not only tensors: refused (bvbench loads "
                               f"checkpoints with weights_only=True and never runs their code){advice}") from None
        raise BvbenchError(f"checkpoint {path} is corrupt or not a PyTorch file (UnpicklingError){advice}") from None
    except Exception as e:  # torch raises many types for truncated/foreign files
        raise BvbenchError(f"checkpoint {path} is corrupt or not a PyTorch file ({type(e).__name__}){advice}") from None


def load_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A state_dict from a local file, loaded safely (weights_only=True); clear errors when it is bad."""
    p = Path(path)
    if not p.is_file():
        raise BvbenchError(f"checkpoint {p} does not exist")
    obj = safe_load(p)
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
        state = _fit_classifier(model, load_state(cfg.checkpoint), cfg)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or len(missing) == len(list(model.state_dict())):
            raise BvbenchError(
                f"checkpoint {cfg.checkpoint} does not fit model {cfg.name!r} "
                f"({len(missing)} missing, {len(unexpected)} unexpected keys)"
            )
    return model


def _fit_classifier(model: nn.Module, state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """`state` without the classifier tensors whose shape differs (a hub checkpoint's 1000-class head: the head
    stays freshly initialised for this data set, as with `pretrained`); any other shape mismatch is an error."""
    own = model.state_dict()
    pcfg = getattr(model, "pretrained_cfg", None) or {}
    heads = pcfg.get("classifier") or ("fc", "classifier")
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    out = {}
    for k, v in state.items():
        if k in own and own[k].shape != v.shape:
            if k.split(".")[0] in {h.split(".")[0] for h in heads}:
                continue
            raise BvbenchError(f"checkpoint {cfg.checkpoint} does not fit model {cfg.name!r}: {k} has shape "
                               f"{tuple(v.shape)}, the model {tuple(own[k].shape)}")
        out[k] = v
    return out


def input_size(model: nn.Module) -> int | None:
    """The square image size a timm ViT-style model requires, or None when it takes any size."""
    pe = getattr(model, "patch_embed", None)
    size = getattr(pe, "img_size", None)
    if size is None or getattr(pe, "dynamic_img_size", False) or not getattr(pe, "strict_img_size", True):
        return None
    return int(size[0]) if isinstance(size, tuple | list) else int(size)


def check_input_size(model: nn.Module, data_size: int, where: str) -> None:
    """A BvbenchError when the data's image size is not the one the model was built for."""
    need = input_size(model)
    if need is not None and need != data_size:
        raise BvbenchError(f"{where}: the data's images are {data_size}x{data_size} but the model takes "
                           f"{need}x{need}; set data.img_size and model.img_size to the same size")


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
