"""No quantizer parameter is weight-decayed, whatever its shape (GSB's Phi [H, N, N] and Omega [H, 1, d], q/k
offsets [H, 1, d], BiViT channel scales [out, 1], LSF alphas, LSQ steps); the linears' weights are."""

from __future__ import annotations

import pytest
import torch

from bvbench import methods
from bvbench.quant.base import Quantizer
from bvbench.recipes import MethodSpec
from bvbench.train.schedule import param_groups
from tests.methods.test_methods_convert import deit


@pytest.mark.parametrize(("name", "opts"), [("gsb", {}), ("bivit", {"mlp_bits": "1/1", "learnable_scale_attn": True,
                                                                   "learnable_scale_mlp": True}),
                                            ("bi-vit", {"lsf": True}), ("q-vit-1bit", {})])
def test_quantizer_parameters_are_never_decayed(name: str, opts: dict) -> None:
    model = deit()
    methods.apply(model, MethodSpec(name=name, **opts))
    model(torch.randn(2, 3, 32, 32))  # lazy scales initialised
    quant = {n: p for n, p in model.named_parameters()
             if any(isinstance(model.get_submodule(n.rsplit(".", k)[0]), Quantizer) for k in range(1, n.count(".") + 1))}
    assert quant and (name == "bi-vit" or any(p.ndim >= 2 for p in quant.values())), name  # old rule: decayed
    decay, no_decay = param_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    decayed = {id(p) for p in decay["params"]}
    assert not [n for n, p in quant.items() if id(p) in decayed]
    assert id(model.blocks[0].attn.qkv.weight) in decayed and id(model.blocks[0].mlp.fc1.weight) in decayed
    every = {id(p) for p in model.parameters() if p.requires_grad}
    assert decayed | {id(p) for p in no_decay["params"]} == every
