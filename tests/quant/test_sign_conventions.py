"""sign(0) and the STE bounds of every sign-based quantizer a method builds, as its paper writes them:
BiViT Eq. 1-2 (bibert, bivit, bit): Sign(0) = -1, dL/dx = dL/dx^ if |x| < 1 else 0;
GSB Eq. 4-5 (gsb, gsb-baseline): sign(0) = +1, G_sign = 1[|x| <= 1] (weights: identity, Eq. 6);
Bi-ViT Sec. 3.1 (bireal, bi-vit): STE 1[|x| <= 1]."""

from __future__ import annotations

import pytest
import torch

from bvbench import methods
from bvbench.quant import SignAct, SignWeight
from bvbench.recipes import MethodSpec
from tests.methods.test_methods_convert import deit

X = torch.tensor([-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5])


def bivit_sign(x: torch.Tensor) -> torch.Tensor:
    """BiViT Eq. 1: +1 if x > 0, -1 otherwise."""
    return torch.where(x > 0, 1.0, -1.0)


def gsb_sign(x: torch.Tensor) -> torch.Tensor:
    """GSB Eq. 4: 1 if x >= 0, -1 if x < 0."""
    return torch.where(x >= 0, 1.0, -1.0)


CASES = [  # method, options, sign, STE of the activation sign, STE of the weight sign (None: not checked)
    ("bibert", {}, bivit_sign, lambda x: (x.abs() < 1).float(), lambda x: (x.abs() < 1).float()),
    ("bivit", {"mlp_bits": "1/1"}, bivit_sign, lambda x: (x.abs() < 1).float(), lambda x: (x.abs() < 1).float()),
    ("bit", {}, bivit_sign, None, lambda x: (x.abs() < 1).float()),
    ("bireal", {}, gsb_sign, lambda x: (x.abs() <= 1).float(), None),
    ("gsb-baseline", {}, gsb_sign, lambda x: (x.abs() <= 1).float(), lambda x: torch.ones_like(x)),
]


def _act_grad(q: SignAct) -> tuple[torch.Tensor, torch.Tensor]:
    x = X.clone().requires_grad_(True)
    y = q(x)
    y.sum().backward()
    return y.detach(), x.grad


@pytest.mark.parametrize(("name", "opts", "sgn", "act_ste", "w_ste"), CASES, ids=[c[0] for c in CASES])
def test_sign_conventions_per_paper(name, opts, sgn, act_ste, w_ste) -> None:  # noqa: ANN001
    model = deit()
    methods.apply(model, MethodSpec(name=name, **opts))
    acts = [m for m in model.modules() if type(m) is SignAct]
    weights = [m for m in model.modules() if isinstance(m, SignWeight)]
    assert acts or act_ste is None
    for q in acts:
        y, g = _act_grad(q)
        assert torch.equal(y, sgn(X)), name
        if act_ste is not None:
            assert torch.equal(g, act_ste(X)), name
    assert weights or w_ste is None
    for q in weights:
        q.center = False  # W - mu with mu = 0: the convention of sign itself at 0 and at |W| = 1
        w = X.view(1, -1).clone().requires_grad_(True)
        out = q(w)
        alpha = w.detach().abs().mean() if q.scale is None else q.scale.detach().view(-1, 1)
        assert torch.allclose(out.detach(), alpha * sgn(X)), name
        out.sum().backward()
        if w_ste is not None and q.scale is None:
            assert torch.allclose(w.grad, alpha * w_ste(X)), name
