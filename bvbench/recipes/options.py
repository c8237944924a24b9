"""The options of every method, typed (one pydantic model per method, unknown keys forbidden), validated when
a recipe loads: `check_method(name, options)` raises one line naming the method, the option and the closest
valid names. The methods that use them are registered in `bvbench.methods`; this table is what a recipe may
name."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bvbench.errors import BvbenchError
from bvbench.registry import suggest

BitsMLP = Literal["1/1", "1/32", "32/1", "32/32"]  # W/A; "32/1": binary inputs, real weights (TS stage 1)
BitsAttn = Literal["1/1", "32/1", "32/32"]


class Options(BaseModel):
    """Base of every method's options: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class BitNetOptions(Options):
    act_bits: int = Field(8, ge=2, le=16, description="absmax activation bits b (Q_b = 2^(b-1))")


class NoOptions(Options):
    """A method without options (fp, bireal)."""


class BiViTLSFOptions(Options):
    lsf: bool = Field(True, description="learnable head-wise scaling factors for q, k, V and A (Bi-ViT Eq. 9-11)")
    variant: Literal["paper", "code"] = Field("paper", description="code: LSF with the public code's zero point")


class BiBERTOptions(Options):
    attn_bits: BitsAttn = Field("1/1", description="W/A bits of the attention module (qkv, proj, q.k, A.V)")
    mlp_bits: BitsMLP = Field("1/1", description="W/A bits of the MLP (fc1, fc2); 32/32 keeps it real")


class BiViTOptions(BiBERTOptions):
    sab: bool = Field(True, description="Softmax-aware Binarization of A (BiViT Eq. 10-12); false: BiBERT Bool")
    learnable_scale_attn: bool = Field(True, description="learnable channel scales of qkv/proj weights")
    learnable_scale_mlp: bool = Field(False, description="learnable channel scales of fc1/fc2 weights")
    beta: float = Field(0.25, gt=0, le=1, description="SAB threshold T = beta * rowmax P (BiViT Eq. 11)")


class QViTOptions(Options):
    """Q-ViT* takes no options."""


class GSBBaselineOptions(Options):
    stage: Literal[1, 2] = Field(2, description="1: weights only (TSTS stage 1; code variant: MLP weights only); 2: all")
    attn_scale: Literal["eq2", "eq8"] = Field("eq8", description="scale of A: mean|A| (GSB Eq. 2) or GSB Eq. 8 w/ switch")
    variant: Literal["paper", "code"] = Field("paper", description="code: stage 1 binarizes only the MLP weights")


class GSBOptions(Options):
    gsb_att: bool = Field(True, description="GSB on the attention map (GSB Eq. 9-25); false: baseline GSB Eq. 7-8")
    gsb_v: bool = Field(True, description="GSB on V (GSB Eq. 26-34); false: elastic sign with a [H,1,d] bias")
    k_att: int = Field(2, ge=0, le=8, description="extra masks on A (Table VI k_a)")
    k_v: int = Field(2, ge=0, le=8, description="extra masks on V (Table VI k_v)")
    act_type_a: Literal["round", "sign"] = Field("round", description="fc2 input: round-clip (type-A) or sign")
    stage: Literal[1, 2] = Field(2, description="1: every linear's weights binarized, nothing else; 2: everything")
    variant: Literal["paper", "code"] = Field("paper", description="code: GSB-att A + Phi (paper A - Phi) and the "
                                              "MLP-only stage 1")
    phi: Literal["hnn", "hn", "zero", "mean"] = Field("hnn", description="GSB Table VII offset of A: learnable "
                                                      "H x N x N (paper), H x N, 0 or mean(A)")
    a_bin: Literal["round", "mask"] = Field("round", description="GSB Table VIII A_bin: clip(round(A_ret / a0), 0, "
                                            "1) (GSB Eq. 11) or defined like M_i (1[A_ret > 0.5 rowmax])")


METHOD_OPTIONS: dict[str, type[Options]] = {
    "fp": NoOptions,
    "bitnet": BitNetOptions,
    "bitnet158": BitNetOptions,
    "bireal": NoOptions,
    "bi-vit": BiViTLSFOptions,
    "bibert": BiBERTOptions,
    "bivit": BiViTOptions,
    "bit": BiBERTOptions,
    "q-vit-1bit": QViTOptions,
    "gsb-baseline": GSBBaselineOptions,
    "gsb": GSBOptions,
}
"""Every method a recipe may name, with its options model (`bvbench list methods` shows the registered ones)."""


def check_method(name: str, options: dict[str, Any]) -> Options:
    """The validated options of method `name`, or a BvbenchError (one line) with the closest valid names."""
    model = METHOD_OPTIONS.get(name)
    if model is None:
        raise BvbenchError(f"unknown method {name!r}.{suggest(name, list(METHOD_OPTIONS))} "
                           "(`bvbench list methods` shows all)")
    try:
        return model(**options)
    except ValidationError as e:
        fields = list(model.model_fields)
        lines = []
        for err in e.errors():
            opt = str(err["loc"][0]) if err["loc"] else "?"
            if err["type"] == "extra_forbidden":
                valid = ", ".join(fields) or "none"
                lines.append(f"method {name!r}: unknown option {opt!r}.{suggest(opt, fields)} (options: {valid})")
            else:
                lines.append(f"method {name!r}: option {opt!r}: {err['msg']}")
        raise BvbenchError("; ".join(lines)) from None
