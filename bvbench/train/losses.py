"""Training losses: cross-entropy (label smoothing / soft targets) and distillation from a teacher."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bvbench.recipes.schema import DistillConfig


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """-sum p * log softmax(logits), averaged over the batch (mixup/cutmix targets, KD)."""
    return torch.sum(-target_probs * F.log_softmax(logits, dim=-1), dim=-1).mean()


def kd_soft(student: torch.Tensor, teacher: torch.Tensor, tau: float) -> torch.Tensor:
    """Hinton KD: tau^2 * KL(softmax(t/tau) || softmax(s/tau)), batch mean."""
    log_s = F.log_softmax(student / tau, dim=-1)
    log_t = F.log_softmax(teacher / tau, dim=-1)
    return F.kl_div(log_s, log_t, reduction="batchmean", log_target=True) * tau * tau


def distribution_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """ReActNet / BiViT distribution loss: -sum_c softmax(teacher)_c * log softmax(student)_c, batch mean."""
    return soft_cross_entropy(student, F.softmax(teacher, dim=-1))


def psi(a: torch.Tensor) -> torch.Tensor:
    """Bi-ViT Eq. 13: psi(A)[..., n, :] = A[..., n, :] - A[..., n-1, :] for 0 < n <= N-1 and
    A[..., 0, :] - A[..., N-1, :] for n = 0 (differences of consecutive query rows, cyclic)."""
    return a - a.roll(1, dims=-2)


def ranking_loss(teacher_maps: list[torch.Tensor], student_maps: list[torch.Tensor], norm: str = "fro") -> torch.Tensor:
    """Bi-ViT Eq. 12: L_ranking = sum_l ||psi(A_l^T) - psi(A_l^S)||_2 over the L attention layers, each map
    [B, H, N, N]; the L2 norm is taken per sample over (H, N, N) and averaged over the batch. `norm="mean"`
    divides it by sqrt(H N N): the root mean square of the elements (the paper leaves the scale open)."""
    if norm not in ("fro", "mean"):
        raise ValueError(f"rank_norm must be 'fro' or 'mean', not {norm!r}")
    if len(teacher_maps) != len(student_maps) or not student_maps:
        raise ValueError(f"ranking loss needs one attention map per layer from both models "
                         f"(teacher {len(teacher_maps)}, student {len(student_maps)})")
    total = student_maps[0].new_zeros(())
    for t, s in zip(teacher_maps, student_maps, strict=True):
        d = (psi(t.detach().float()) - psi(s.float())).flatten(1)
        per_sample = d.norm(dim=1) / (d.shape[1] ** 0.5 if norm == "mean" else 1.0)
        total = total + per_sample.mean()
    return total


class ClassificationLoss(nn.Module):
    """CE on labels (hard or mixed soft targets), optionally combined with teacher distillation.

    Hard distillation (DeiT): (1-alpha) CE(cls, y) + alpha CE(dist, argmax teacher); a model with a
    distillation token returns (cls, dist) while training, otherwise both terms use the single output.
    Soft: (1-alpha) CE(out, y) + alpha tau^2 KL(teacher || student).
    Distribution: (1-alpha) CE(cls, y) + alpha distribution_loss(dist, teacher) (ReActNet, BiViT).
    Ranking (Bi-ViT Eq. 14): the hard loss + lam * ranking_loss(teacher maps, student maps); the maps come in
    `attention` = (teacher maps, student maps), collected by `bvbench.quant.qattention.attention_maps`.
    """

    @property
    def needs_attention(self) -> bool:
        """True when the loss needs the attention maps of student and teacher."""
        return self.distill.kind == "ranking"

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
        attention: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        cls, dist = outputs if isinstance(outputs, tuple) else (outputs, outputs)
        kind = self.distill.kind
        if kind == "none" or teacher_logits is None:
            if isinstance(outputs, tuple):  # distilled model without a teacher: train both heads on labels
                return (self.ce(cls, target) + self.ce(dist, target)) / 2
            return self.ce(cls, target)
        a = self.distill.alpha
        if kind in ("hard", "ranking"):
            loss = (1 - a) * self.ce(cls, target) + a * F.cross_entropy(dist, teacher_logits.argmax(dim=-1))
            if kind == "ranking":
                if attention is None:
                    raise ValueError("ranking distillation needs the attention maps (teacher, student)")
                loss = loss + self.distill.lam * ranking_loss(*attention, norm=self.distill.rank_norm)
            return loss
        if kind == "distribution":
            return (1 - a) * self.ce(cls, target) + a * distribution_loss(dist, teacher_logits)
        return (1 - a) * self.ce(cls, target) + a * kd_soft(dist, teacher_logits, self.distill.tau)
