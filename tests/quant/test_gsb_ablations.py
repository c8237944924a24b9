"""GSB Table VII (offset Phi: 0, mean(A_re), learnable H x N, learnable H x N x N) and Table VIII (A_bin defined
like M_i): forward and backward against GSB Eq. 9-20 written out here."""

from __future__ import annotations

import pytest
import torch

from bvbench.quant import GSBAttention
from bvbench.quant.gsb import gsb_coefficients


def reference(a_ret: torch.Tensor, alpha: torch.Tensor, g: torch.Tensor, k: int, mask0: bool):
    """GSB Eq. 10-13 forward, Eq. 14-20 backward (scale gradients / (H N N)); `mask0`: A_bin = M_0, c_0 = 0.5."""
    rowmax = a_ret.amax(-1, keepdim=True)
    hnn = a_ret[0].numel()
    a0 = alpha[0]
    if mask0:
        a_bin = (a_ret > 0.5 * rowmax).float()
        diff = a_ret - 0.5 * rowmax
        d_ret = a0 * ((diff > 0) & (diff < 1)).float()  # as GSB Eq. 20
        d_alpha = [(g * a_bin).sum() / hnn]  # as GSB Eq. 15
    else:
        u = a_ret / a0
        a_bin = (u > 0.5).float()  # clip(round(A_ret / a0), 0, 1), GSB Eq. 11
        in0 = ((u > 0) & (u < 1)).float()
        d_ret = in0  # GSB Eq. 17-18
        d_alpha = [(g * (a_bin - u * in0)).sum() / hnn]  # GSB Eq. 14
    out = a0 * a_bin
    for i, c in enumerate(gsb_coefficients(k), start=1):
        m = (a_ret > c * rowmax).float()  # GSB Eq. 12-13
        out = out + alpha[i] * m
        diff = a_ret - c * rowmax
        d_ret = d_ret + alpha[i] * ((diff > 0) & (diff < 1)).float()  # GSB Eq. 20
        d_alpha.append((g * m).sum() / hnn)  # GSB Eq. 15
    return out, g * d_ret, torch.stack(d_alpha)


@pytest.mark.parametrize("phi", ["zero", "mean", "hn", "hnn"])
@pytest.mark.parametrize("a_bin", ["round", "mask"])
def test_table_vii_viii_settings(phi: str, a_bin: str) -> None:
    torch.manual_seed(0)
    q = GSBAttention(num_heads=2, num_tokens=6, k=2, phi=phi, a_bin=a_bin)
    shapes = {"hnn": (2, 6, 6), "hn": (2, 6, 1)}
    assert (tuple(q.phi.shape) if q.phi is not None else None) == shapes.get(phi)
    if q.phi is not None:
        with torch.no_grad():
            q.phi.copy_(torch.randn(q.phi.shape) * 0.02)
    a = (torch.randn(3, 2, 6, 6) * 2).softmax(-1).requires_grad_(True)
    q(a)  # initialise the scales (GSB Eq. 25)
    out = q(a)
    g = torch.randn_like(out)
    out.backward(g)
    ad = a.detach()
    learned = q.phi.detach() if q.phi is not None else 0.0
    off = {"zero": 0.0, "mean": ad.mean(dim=(1, 2, 3), keepdim=True)}.get(phi, learned)
    a_ret = ad - off  # GSB Eq. 9
    alpha = q.alpha.detach()
    want, d_ret, d_alpha = reference(a_ret, alpha.clamp_min(1e-5), g, 2, a_bin == "mask")
    d_alpha = d_alpha * (alpha > 1e-5)  # scales are clamped to >= 1e-5 (no gradient at the bound)
    torch.testing.assert_close(out.detach(), want)
    torch.testing.assert_close(a.grad, d_ret)
    torch.testing.assert_close(q.alpha.grad, d_alpha)
    if q.phi is not None:  # A_ret = A - Phi: dPhi = -dA_ret summed over the batch (and, for H x N, over m)
        torch.testing.assert_close(q.phi.grad, -d_ret.sum(0).sum(-1, keepdim=True) if phi == "hn" else -d_ret.sum(0))
