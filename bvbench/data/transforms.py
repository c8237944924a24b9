"""Train and test transforms: PIL image in, normalised float tensor `[3, S, S]` out."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Protocol

import torch
from PIL import Image
from torchvision import transforms as T

from bvbench.data.base import DatasetInfo
from bvbench.errors import BvbenchError

SMALL = 64  # images up to this size: pad-and-crop, plain resize; larger: RandomResizedCrop, resize + center crop
CROP_PCT = 0.875



class AugmentConfig(Protocol):
    """What the train transform reads (any object with these attributes, e.g. the recipe schema's
    `AugmentConfig`; data/ never imports the schema)."""

    hflip: bool
    random_crop: bool
    randaugment: str | None
    color_jitter: float
    random_erasing: float

    @property
    def random(self) -> bool: ...


def _resize(info: DatasetInfo, size: int) -> list[Callable]:
    """Resize to `size`: directly for small images, to size/0.875 then center-crop for large ones."""
    if info.img_size <= SMALL:
        return [] if size == info.img_size else [T.Resize((size, size), interpolation=T.InterpolationMode.BICUBIC)]
    return [
        T.Resize(int(size / CROP_PCT), interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(size),
    ]


def eval_transform(info: DatasetInfo, size: int) -> Callable[[Image.Image], torch.Tensor]:
    """Resize (if needed) and normalise."""
    return T.Compose([*_resize(info, size), T.ToTensor(), T.Normalize(info.mean, info.std)])


def train_transform(info: DatasetInfo, size: int, augment: AugmentConfig) -> Callable[[Image.Image], torch.Tensor]:
    """Crop, flip, RandAugment, colour jitter, normalise, random erasing, as `augment` asks."""
    ops: list[Callable] = []
    if augment.random_crop:
        if size <= SMALL:
            if info.img_size != size:
                ops.append(T.Resize((size, size), interpolation=T.InterpolationMode.BICUBIC))
            ops.append(T.RandomCrop(size, padding=4))
        else:
            ops.append(T.RandomResizedCrop(size, interpolation=T.InterpolationMode.BICUBIC))
    else:
        ops.extend(_resize(info, size))
    if augment.hflip:
        ops.append(T.RandomHorizontalFlip())
    if augment.randaugment:
        from timm.data.auto_augment import rand_augment_transform

        hparams = {
            "translate_const": int(size * 0.45),
            "img_mean": tuple(round(255 * m) for m in info.mean),
        }
        try:
            ops.append(_posterize_keeps_one_bit(rand_augment_transform(augment.randaugment, hparams)))
        except (AssertionError, KeyError, ValueError, IndexError) as e:
            raise BvbenchError(
                f"train.augment.randaugment {augment.randaugment!r} is not a valid timm RandAugment string "
                f"(e.g. rand-m9-mstd0.5-inc1){': ' + str(e) if str(e) else ''}"
            ) from None
    if augment.color_jitter > 0:
        cj = augment.color_jitter
        ops.append(T.ColorJitter(brightness=cj, contrast=cj, saturation=cj))
    ops += [T.ToTensor(), T.Normalize(info.mean, info.std)]
    if augment.random_erasing > 0:
        from timm.data.random_erasing import RandomErasing

        ops.append(RandomErasing(probability=augment.random_erasing, mode="pixel", max_count=1, device="cpu"))
    return T.Compose(ops)


def _posterize_keeps_one_bit(ra: Any) -> Any:
    """timm's increasing Posterize maps magnitude 10 to 0 kept bits, which Pillow >= 11 rejects with a ValueError
    (older Pillow returned a black image). With magnitude noise (mstd) that draw happens a few times per epoch
    and would kill a run; keep at least 1 bit, the strongest posterize Pillow accepts."""
    for op in getattr(ra, "ops", []):
        if "Posterize" in getattr(op, "name", "") and op.level_fn is not None:
            op.level_fn = functools.partial(_at_least_one_bit, op.level_fn)
    return ra


def _at_least_one_bit(level_fn: Any, magnitude: float, hparams: Any) -> tuple[int, ...]:
    bits, *rest = level_fn(magnitude, hparams)
    return (max(1, int(bits)), *rest)
