"""Distillation losses against hand-computed values: KD, DeiT hard (GSB Eq. 36), distribution (ReActNet /
BiViT) and Bi-ViT's ranking-aware distillation (Eq. 12-14) written out with loops."""

from __future__ import annotations

import math

import pytest
import torch

from bvbench.recipes import DistillConfig
from bvbench.train.losses import ClassificationLoss, distribution_loss, kd_soft, psi, ranking_loss


def _softmax(v: list[float]) -> list[float]:
    e = [math.exp(x) for x in v]
    return [x / sum(e) for x in e]


def test_distribution_loss_by_hand() -> None:
    s, t = [1.0, 0.0, -1.0], [0.0, 2.0, 0.0]
    pt, ps = _softmax(t), _softmax(s)
    want = -sum(a * math.log(b) for a, b in zip(pt, ps, strict=True))
    got = distribution_loss(torch.tensor([s]), torch.tensor([t]))
    assert got.item() == pytest.approx(want, rel=1e-6)
    # inside ClassificationLoss: (1 - alpha) CE(cls, y) + alpha * L_distr(dist, teacher)
    fn = ClassificationLoss(0.0, DistillConfig(kind="distribution", alpha=0.25))
    ce = -math.log(ps[2])
    loss = fn(torch.tensor([s]), torch.tensor([2]), torch.tensor([t]))
    assert loss.item() == pytest.approx(0.75 * ce + 0.25 * want, rel=1e-6)


def test_kd_soft_by_hand() -> None:
    s, t, tau = [0.5, -0.5], [1.0, 1.0], 2.0
    ps, pt = _softmax([x / tau for x in s]), _softmax([x / tau for x in t])
    want = tau**2 * sum(a * math.log(a / b) for a, b in zip(pt, ps, strict=True))
    assert kd_soft(torch.tensor([s]), torch.tensor([t]), tau).item() == pytest.approx(want, rel=1e-6)


def test_gsb_loss_is_hard_distillation_with_lambda() -> None:
    # GSB Eq. 36: (1 - lambda) L_cls + lambda L_dis, L_dis = CE(dist head, argmax teacher); lambda = 0.3 here
    cls, dist = torch.tensor([[1.0, 2.0, 0.0]]), torch.tensor([[0.0, 0.0, 3.0]])
    teacher = torch.tensor([[0.0, 0.0, 9.0]])
    loss = ClassificationLoss(0.0, DistillConfig(kind="hard", alpha=0.3))((cls, dist), torch.tensor([1]), teacher)
    l_cls = -math.log(_softmax([1.0, 2.0, 0.0])[1])
    l_dis = -math.log(_softmax([0.0, 0.0, 3.0])[2])
    assert loss.item() == pytest.approx(0.7 * l_cls + 0.3 * l_dis, rel=1e-6)


def _psi_loop(a: torch.Tensor) -> torch.Tensor:
    """Eq. 13 literally: row n minus row n-1 for 0 < n <= N-1, row 0 minus row N-1 otherwise."""
    out = torch.empty_like(a)
    n_rows = a.shape[-2]
    for n in range(n_rows):
        out[..., n, :] = a[..., n, :] - (a[..., n - 1, :] if n > 0 else a[..., n_rows - 1, :])
    return out


def test_ranking_loss_matches_eq_13_written_out() -> None:
    torch.manual_seed(0)
    teacher = [torch.rand(2, 3, 4, 4).softmax(-1) for _ in range(3)]
    student = [torch.rand(2, 3, 4, 4).softmax(-1) for _ in range(3)]
    for a in teacher:
        torch.testing.assert_close(psi(a), _psi_loop(a))
    want = 0.0
    for t, s in zip(teacher, student, strict=True):  # Eq. 12: sum over layers of an L2 norm
        for b in range(2):  # per sample, averaged over the batch
            d = _psi_loop(t[b]) - _psi_loop(s[b])
            want += math.sqrt(sum(float(x) ** 2 for x in d.flatten())) / 2
    assert ranking_loss(teacher, student).item() == pytest.approx(want, rel=1e-5)
    assert ranking_loss(teacher, student, norm="fro").item() == pytest.approx(want, rel=1e-5)
    # rank_norm mean: each per-sample norm over H x N x N = 3 x 4 x 4 elements is divided by sqrt(48)
    assert ranking_loss(teacher, student, norm="mean").item() == pytest.approx(want / math.sqrt(48), rel=1e-5)
    assert ranking_loss(teacher, teacher).item() == 0.0
    # a map that differs only by a constant added to every row has the same ranking
    shifted = [a + 0.5 for a in teacher]
    assert ranking_loss(teacher, shifted).item() == pytest.approx(0.0, abs=1e-6)


def test_ranking_distillation_total_is_hard_plus_lambda_ranking() -> None:
    # Bi-ViT Eq. 14: L = L_dist + lambda L_ranking, lambda = 10 by default
    torch.manual_seed(1)
    t_maps = [torch.rand(1, 2, 3, 3).softmax(-1)]
    s_maps = [torch.rand(1, 2, 3, 3).softmax(-1).requires_grad_(True)]
    logits, teacher, y = torch.tensor([[0.2, 0.1]]), torch.tensor([[0.0, 1.0]]), torch.tensor([0])
    cfg = DistillConfig(kind="ranking", alpha=0.5)
    assert cfg.lam == 10.0
    fn = ClassificationLoss(0.0, cfg)
    assert fn.needs_attention
    loss = fn(logits, y, teacher, (t_maps, s_maps))
    hard = ClassificationLoss(0.0, DistillConfig(kind="hard", alpha=0.5))(logits, y, teacher)
    assert loss.item() == pytest.approx(hard.item() + 10.0 * ranking_loss(t_maps, s_maps).item(), rel=1e-6)
    mean = ClassificationLoss(0.0, DistillConfig(kind="ranking", alpha=0.5, rank_norm="mean"))
    want = hard.item() + 10.0 * ranking_loss(t_maps, s_maps, norm="mean").item()
    assert mean(logits, y, teacher, (t_maps, s_maps)).item() == pytest.approx(want, rel=1e-6)
    loss.backward()
    assert s_maps[0].grad is not None and s_maps[0].grad.abs().sum() > 0
    with pytest.raises(ValueError, match="attention maps"):
        fn(logits, y, teacher)
