"""Optimizers and per-step learning-rate schedules (linear warm-up, then cosine / step / constant)."""

from __future__ import annotations

import math

import torch
from torch import nn

from bvbench.quant.base import Quantizer
from bvbench.recipes.schema import TrainConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases, norms, 1-d tensors (timm's convention) and on any parameter of a quantizer
    (scales, offsets, GSB's Phi and Omega, LSF alphas, channel scales: whatever their shape)."""
    quant = {id(p) for m in model.modules() if isinstance(m, Quantizer) for p in m.parameters()}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        keep = p.ndim <= 1 or name.endswith(".bias") or "pos_embed" in name or "token" in name or id(p) in quant
        (no_decay if keep else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def effective_lr(cfg: TrainConfig, lr: float) -> float:
    """DeiT's linear scaling rule when `lr_base_batch` is set: lr * batch / base (the batch: `global_batch` when
    set, else `batch_size`)."""
    return lr * (cfg.global_batch or cfg.batch_size) / cfg.lr_base_batch if cfg.lr_base_batch else lr


def build_optimizer(model: nn.Module, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=cfg.betas)
    if cfg.optimizer == "adam":  # Adam's coupled L2 (the papers that say "Adam")
        return torch.optim.Adam(groups, lr=lr, betas=cfg.betas)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    from timm.optim import Lamb

    return Lamb(groups, lr=lr, betas=cfg.betas)


def lr_at(step: int, total_steps: int, steps_per_epoch: int, cfg: TrainConfig, lr: float) -> float:
    """The learning rate of optimizer step `step` (0-based) of a stage."""
    warm = int(round(cfg.warmup_epochs * steps_per_epoch))
    if step < warm:
        return cfg.warmup_lr + (lr - cfg.warmup_lr) * (step + 1) / warm
    if cfg.schedule == "constant":
        return lr
    if cfg.schedule == "step":
        return lr * cfg.gamma ** ((step // max(steps_per_epoch, 1)) // cfg.step_size)
    t = (step - warm) / max(total_steps - warm, 1)
    return cfg.min_lr + 0.5 * (lr - cfg.min_lr) * (1 + math.cos(math.pi * min(t, 1.0)))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr
