"""Every method compiles as one graph (issue 18.3): `torch.compile(fullgraph=True)` raises on any graph break.
The `eager` backend runs what dynamo captured (forward and the autograd Functions' backward) without generating
C++, so the test takes seconds; the captured model's outputs and gradients are the eager model's (the quantizers
take a compile-friendly path under the compiler that computes the same values)."""

from __future__ import annotations

import copy

import pytest
import timm
import torch

from bvbench import methods
from bvbench.methods.base import METHODS
from bvbench.recipes import MethodSpec

OPTIONS = {"gsb": [{}, {"stage": 1}], "bivit": [{"mlp_bits": "1/1"}], "bi-vit": [{"lsf": True}]}
CASES = [(name, o) for name in sorted(METHODS) for o in OPTIONS.get(name, [{}])]
SWIN = [("gsb", {}), ("bivit", {"mlp_bits": "1/1"})]  # the window-attention path, with the two attention binarizers


def _vit() -> torch.nn.Module:
    return timm.create_model("vit_tiny_patch16_224", num_classes=10, img_size=16, patch_size=4, embed_dim=32,
                             depth=2, num_heads=2)


def _swin() -> torch.nn.Module:
    return timm.create_model("swin_tiny_patch4_window7_224", num_classes=10, img_size=16, patch_size=2,
                             embed_dim=16, window_size=4, depths=(1, 1), num_heads=(1, 2), drop_path_rate=0.0)


@pytest.mark.parametrize(("arch", "name", "opts"), [(_vit, n, o) for n, o in CASES] + [(_swin, n, o) for n, o in SWIN],
                         ids=[f"{a}-{n}{'-' + str(o) if o else ''}" for a, cases in (("vit", CASES), ("swin", SWIN))
                              for n, o in cases])
def test_method_compiles_without_graph_breaks_and_matches_eager(arch, name: str, opts: dict) -> None:
    torch.manual_seed(0)
    model = methods.apply(arch(), MethodSpec(name=name, **opts)).train()
    x = torch.randn(4, 3, 16, 16)
    model(x)  # the first forward initialises lazy quantizer scales (eager, as in training)
    twin = copy.deepcopy(model)
    torch._dynamo.reset()
    compiled = torch.compile(twin, backend="eager", fullgraph=True)
    out_e, out_c = model(x), compiled(x)
    out_e.square().mean().backward()
    out_c.square().mean().backward()
    torch.testing.assert_close(out_c, out_e, rtol=1e-5, atol=1e-6)
    for (n, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=lambda m, n=n: f"{n}: {m}")
