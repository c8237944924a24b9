"""Training losses: cross-entropy (label smoothing / soft targets) and distillation from a teacher."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bvbench.recipes import DistillConfig


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """-sum p * log softmax(logits), averaged over the batch (mixup/cutmix targets, KD)."""
    return torch.sum(-target_probs * F.log_softmax(logits, dim=-1), dim=-1).mean()


def kd_soft(student: torch.Tensor, teacher: torch.Tensor, tau: float) -> torch.Tensor:
    """Hinton KD: tau^2 * KL(softmax(t/tau) || softmax(s/tau)), batch mean."""
    log_s = F.log_softmax(student / tau, dim=-1)
    log_t = F.log_softmax(teacher / tau, dim=-1)
    return F.kl_div(log_s, log_t, reduction="batchmean", log_target=True) * tau * tau


class ClassificationLoss(nn.Module):
    """CE on labels (hard or mixed soft targets), optionally combined with teacher distillation.

    Hard distillation (DeiT): (1-alpha) CE(cls, y) + alpha CE(dist, argmax teacher); a model with a
    distillation token returns (cls, dist) while training, otherwise both terms use the single output.
    Soft: (1-alpha) CE(out, y) + alpha tau^2 KL(teacher || student).
    """

    def __init__(self, label_smoothing: float = 0.0, distill: DistillConfig | None = None) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing
        self.distill = distill or DistillConfig()

    def ce(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.dim() == 2:  # already soft (mixup/cutmix, smoothing included)
            return soft_cross_entropy(logits, target)
        return F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)

    def forward(
        self,
        outputs: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
        target: torch.Tensor,
        teacher_logits: torch.Tensor | None = None,
    ) -> torch.Tensor:
        cls, dist = outputs if isinstance(outputs, tuple) else (outputs, outputs)
        kind = self.distill.kind
        if kind == "none" or teacher_logits is None:
            if isinstance(outputs, tuple):  # distilled model without a teacher: train both heads on labels
                return (self.ce(cls, target) + self.ce(dist, target)) / 2
            return self.ce(cls, target)
        a = self.distill.alpha
        if kind == "hard":
            return (1 - a) * self.ce(cls, target) + a * F.cross_entropy(dist, teacher_logits.argmax(dim=-1))
        return (1 - a) * self.ce(cls, target) + a * kd_soft(dist, teacher_logits, self.distill.tau)
