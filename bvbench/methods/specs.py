"""The methods of the five papers as conversion plans, with their options (validated, extra keys forbidden).

Parts of every transformer block: qkv, proj (attention Linears), fc1, fc2 (MLP Linears), q, k, V and the
attention map A. Patch embedding and heads stay full precision unless a paper says otherwise (GSB: 8 bits).
The patch-merging Linear between Swin stages is body, not first or last layer (Bi-ViT Sec. 5.1 keeps only
those real; BiViT Sec. 4.1 only the input embedding and output layer): every method that binarizes the
blocks gives it the precision of a block Linear that, like it, reads a LayerNorm output (`_downsample`).
"""

from __future__ import annotations

from torch import nn

from bvbench.errors import BvbenchError
from bvbench.methods.base import register_method
from bvbench.methods.convert import AttnPart, LinearPart, Plan, Q, apply_plan
from bvbench.quant import (
    LSQ,
    AbsMax,
    ApproxSign,
    BiBERTAttention,
    BiRealWeight,
    BitNetWeight,
    Elastic,
    GSBAttention,
    GSBBaseline,
    GSBValue,
    HeadElastic,
    LearnableScaleBinarizer,
    RectifiedLSF,
    SignAct,
    SignScaledAttention,
    SignWeight,
    SoftmaxAwareBinarizer,
    TernaryWeight,
    XnorAct,
)
from bvbench.recipes.options import (
    BiBERTOptions,
    BitNetOptions,
    BiViTLSFOptions,
    BiViTOptions,
    GSBBaselineOptions,
    GSBOptions,
    NoOptions,
    QViTOptions,
)


def _downsample(plan: Plan, like: str) -> Plan:
    """`plan` with the patch merging's reduction quantized as the block Linear `like` (kept real if it is)."""
    plan.downsample = plan.linears.get(like)
    return plan


# ---------------------------------------------------------------- BitNet (papers 1 and 2)


def _bitnet_linears(weight: Q, bits: int, granularity: str) -> dict[str, LinearPart]:
    def act(shifted: bool) -> Q:
        return Q(AbsMax, bits=bits, granularity=granularity, shifted=shifted)

    # 1bit-vit-cifar10 Fig. 5: the shifted [0, Q_b] variant for activations headed into a non-linearity, i.e.
    # the input of fc1 (whose output feeds the GELU); LayerNorm before quantization (Fig. 7, `norm=True`).
    shifted = {"fc1": granularity == "tensor"}
    return {p: LinearPart(weight, act(shifted.get(p, False)), norm=True) for p in ("qkv", "proj", "fc1", "fc2")}


@register_method("bitnet", BitNetOptions, paper="1bit-vit-cifar10 (BitLinear, Fig. 3-7)", bits="1-8")
def bitnet(model: nn.Module, o: BitNetOptions) -> Plan:
    """1-bit BitLinear in qkv, proj, fc1, fc2: W~ = beta Sign(W - mean W), beta = ||W||_1/(nm); input LN then
    b-bit absmax per tensor (shifted variant at fc1's input); attention products, patch embedding and head
    full precision."""
    return _downsample(Plan(linears=_bitnet_linears(Q(BitNetWeight), o.act_bits, "tensor")), "qkv")


@register_method("bitnet158", BitNetOptions, paper="1.58bit-vit-poster (BitNet b1.58)", bits="1.58-8")
def bitnet158(model: nn.Module, o: BitNetOptions) -> Plan:
    """BitNet b1.58 in qkv, proj, fc1, fc2: W_q = gamma clip(round(W/(gamma+eps)), -1, 1), gamma = mean|W|;
    input LN then 8-bit absmax per token; the rest full precision."""
    return _downsample(Plan(linears=_bitnet_linears(Q(TernaryWeight), o.act_bits, "token")), "qkv")


# ---------------------------------------------------------------- Bi-ViT (Bi-Real baseline, LSF)


def _bireal_plan() -> Plan:
    lin = LinearPart(Q(BiRealWeight), Q(ApproxSign))
    # Bi-ViT Sec. 3.1, Bi-ViT Eq. 2: q, k, V and A all binarized by sign with the STE 1[|x| <= 1] (Bi-ViT Eq. 7); A, like
    # the linears' weights, carries XNOR-Net's [30] scale: alpha_row sign(A), alpha_row = mean|A_row| (for a
    # softmax map sign(A) = 1 and alpha = 1/N, the uniform map; the earlier 1[A > 0.5] zeroed almost every row).
    att = AttnPart(q=Q(SignAct), k=Q(SignAct), v=Q(SignAct), attn=Q(SignScaledAttention), attn_on="probs")
    return _downsample(Plan(linears=dict.fromkeys(("qkv", "proj", "fc1", "fc2"), lin), attention=att), "qkv")


@register_method("bireal", NoOptions, paper="Bi-ViT baseline (Bi-Real Net)", bits="1-1")
def bireal(model: nn.Module, o: NoOptions) -> Plan:
    """Bi-Real Net baseline of Bi-ViT: linears rowmean|W| sign(W) (grad through clamp(W,-1,1)) with ApproxSign
    inputs; q, k, V sign (clipped STE); attention map mean|A_row| sign(A) (Bi-ViT Eq. 2)."""
    return _bireal_plan()


@register_method("bi-vit", BiViTLSFOptions, paper="Bi-ViT (Li et al.)", bits="1-1")
def bi_vit(model: nn.Module, o: BiViTLSFOptions) -> Plan:
    """Bi-ViT: the Bi-Real linears plus, with `lsf`, alpha_h sign(x / alpha_h) per head for q, k, V (Bi-ViT Eq. 9-10)
    and alpha_h clip(round(A / alpha_h), 0, 1) for the softmax map; gradient clip range |x| <= alpha_h (Bi-ViT Eq. 11).
    Ranking-aware distillation is a loss (distill kind `ranking`), not part of the method."""
    plan = _bireal_plan()
    if o.lsf:
        s = Q(LearnableScaleBinarizer, num_heads="$heads", signed=True, variant=o.variant)
        a = Q(LearnableScaleBinarizer, num_heads="$heads", signed=False, variant=o.variant)
        plan.attention = AttnPart(q=s, k=s, v=s, attn=a, attn_on="probs")
    return plan


# ---------------------------------------------------------------- BiViT (BiBERT, BiT baselines, SAB)


# BiViT Eq. 1-2 (its BNN preliminaries, for the baselines too): Sign(0) = -1, STE 1[|x| < 1].
BIVIT_SIGN = {"ste": "clipped_open", "zero_to_positive": False}


def _bivit_family(o: BiBERTOptions, sab: bool, ls_attn: bool, ls_mlp: bool, beta: float) -> Plan:
    def weight(learnable: bool) -> Q:
        # BiViT Eq. 1-2: alpha_c sign(W - rowmean W); alpha_c learnable (init rowmean|W|) or not.
        if learnable:
            return Q(SignWeight, per_channel=True, learnable_scale=True, out_features="$out", **BIVIT_SIGN)
        return Q(SignWeight, per_channel=True, **BIVIT_SIGN)

    plan = Plan()
    sgn = Q(SignAct, **BIVIT_SIGN)
    if o.attn_bits != "32/32":  # "32/1" (traditional two-stage, stage 1): binary activations, real weights
        w_attn = weight(ls_attn) if o.attn_bits == "1/1" else None
        for p in ("qkv", "proj"):
            plan.linears[p] = LinearPart(w_attn, sgn)
        a = Q(SoftmaxAwareBinarizer, beta=beta) if sab else Q(BiBERTAttention)
        plan.attention = AttnPart(q=sgn, k=sgn, v=sgn, attn=a, attn_on="scores")
    if o.mlp_bits != "32/32":
        act = sgn if o.mlp_bits in ("1/1", "32/1") else None
        w_mlp = weight(ls_mlp) if o.mlp_bits != "32/1" else None
        for p in ("fc1", "fc2"):
            plan.linears[p] = LinearPart(w_mlp, act)
    return _downsample(plan, "fc1")  # mixes channels like the MLP (1x1 convs, BiViT Fig. 5): the MLP bits


@register_method("bibert", BiBERTOptions, paper="BiViT baseline (BiBERT)", bits="1-1")
def bibert(model: nn.Module, o: BiBERTOptions) -> Plan:
    """BiBERT as BiViT's baseline: weights rowmean|W| sign(W - rowmean W), inputs sign, q, k, V sign
    (BiViT Eq. 1-2: sign(0) = -1, STE 1[|x| < 1]), A = Bool(B_Q B_K^T / sqrt(d)) with no softmax (BiViT Eq. 5)."""
    return _bivit_family(o, sab=False, ls_attn=False, ls_mlp=False, beta=0.25)


@register_method("bivit", BiViTOptions, paper="BiViT (He et al.)", bits="1-1 / 1-32")
def bivit(model: nn.Module, o: BiViTOptions) -> Plan:
    """BiViT: SAB on the attention (A_b = 1[P > beta rowmax P], softmax gradient, BiViT Eq. 10-12), learnable
    channel-wise weight scales (Sec. 3.3), per-module bits. Cross-layer binarization (Sec. 3.3) is two stages:
    stage 1 `mlp_bits: "32/32"` (attention only), stage 2 `mlp_bits: "1/32"` or `"1/1"` (the attention
    quantizers and their learned scales carry over)."""
    return _bivit_family(o, o.sab, o.learnable_scale_attn, o.learnable_scale_mlp, o.beta)


@register_method("bit", BiBERTOptions, paper="BiViT baseline (BiT, elastic binarization)", bits="1-1")
def bit(model: nn.Module, o: BiBERTOptions) -> Plan:
    """BiT as BiViT's baseline: weights mean|W| sign(W) per tensor; elastic activations alpha sign(x - b)
    (learnable alpha, b) at qkv/proj/fc1 inputs and for q, k, V; alpha clip(round((x - b)/alpha), 0, 1) for the
    non-negative fc2 input (type-A) and the softmax map."""
    if "32/1" in (o.attn_bits, o.mlp_bits):
        raise BvbenchError("method 'bit': bits '32/1' (real weights, binary inputs) exist for bibert and bivit only")
    w = Q(SignWeight, center=False, **BIVIT_SIGN)
    plan = Plan()
    if o.attn_bits == "1/1":
        for p in ("qkv", "proj"):
            plan.linears[p] = LinearPart(w, Q(Elastic, signed=True))
        s = Q(Elastic, signed=True)
        plan.attention = AttnPart(q=s, k=s, v=s, attn=Q(Elastic, signed=False), attn_on="probs")
    if o.mlp_bits != "32/32":
        full = o.mlp_bits == "1/1"
        plan.linears["fc1"] = LinearPart(w, Q(Elastic, signed=True) if full else None)
        plan.linears["fc2"] = LinearPart(w, Q(Elastic, signed=False) if full else None)
    return _downsample(plan, "fc1")


# ---------------------------------------------------------------- GSB


@register_method("q-vit-1bit", QViTOptions, paper="GSB Table I-III, Q-ViT* (Q-ViT at 1 bit with sign)", bits="1-1")
def q_vit_1bit(model: nn.Module, o: QViTOptions) -> Plan:
    """Q-ViT* of GSB: Q-ViT's framework at 1 bit with sign replacing its quantizer. Weights alpha_c sign(W -
    rowmean W) with learnable channel scales; activations alpha sign(x - b) with learnable alpha, b (all
    linear inputs, sign everywhere); q, k rectified by LayerNorm (IRM) then head-wise learnable-scale sign; V
    head-wise learnable-scale sign; A (non-negative, where sign would give all ones) alpha_h clip(round(A /
    alpha_h), 0, 1). Not kept (no source bvbench has defines them): the IRM's learnable affine and Q-ViT's
    distribution-guided distillation (recipe note of the Q-ViT* rows)."""
    w = Q(SignWeight, per_channel=True, learnable_scale=True, out_features="$out", ste="clipped")
    lin = LinearPart(w, Q(Elastic, signed=True))
    qk = Q(RectifiedLSF, num_heads="$heads", signed=True)
    att = AttnPart(q=qk, k=qk, v=Q(LearnableScaleBinarizer, num_heads="$heads", signed=True),
                   attn=Q(LearnableScaleBinarizer, num_heads="$heads", signed=False), attn_on="probs")
    return _downsample(Plan(linears=dict.fromkeys(("qkv", "proj", "fc1", "fc2"), lin), attention=att), "qkv")


def _gsb_8bit(plan: Plan) -> Plan:
    """GSB keeps the patch embedding (per-output-channel LSQ weights) and both heads at 8 bits."""
    plan.patch_weight = Q(LSQ, bits=8, kind="weight", num_channels="$out")
    plan.head = LinearPart(Q(LSQ, bits=8, kind="weight", num_channels="$out"), Q(LSQ, bits=8, kind="activation"))
    return plan


def _gsb_stage1(variant: str) -> Plan:
    """GSB two-stage training (TSTS, GSB Sec. IV-D), stage 1: "we only binarize the weights of the model": every
    binarized linear's weights (qkv, proj, fc1, fc2; sign, mean|W| scale), activations and attention real.
    `variant="code"`: the public code's stage 1, only the MLP weights (fc1, fc2) binarized."""
    w = Q(SignWeight)
    parts = ("fc1", "fc2") if variant == "code" else ("qkv", "proj", "fc1", "fc2")
    return _downsample(_gsb_8bit(Plan(linears={p: LinearPart(w) for p in parts})), "qkv")


@register_method("gsb-baseline", GSBBaselineOptions, paper="GSB Sec. III (Ours-baseline)", bits="1-1")
def gsb_baseline(model: nn.Module, o: GSBBaselineOptions) -> Plan:
    """GSB baseline: weights mean|W| sign(W - mean W), identity STE (GSB Eq. 2, 6); linear inputs XNOR statistics
    beta sign(x - a_mu) (type-B) or beta clip(round(x / beta), 0, 1) at fc2 (type-A, GSB Eq. 3); q, k sign; V
    beta sign(V); A gamma clip(round(A / gamma), 0, 1) with gamma of GSB Eq. 2 or GSB Eq. 8 (GSB Eq. 7-8). The
    baseline trains in two stages (GSB Sec. III-B): `attn_scale: eq2` first, then `attn_scale: eq8`. `stage: 1`
    is the weights-only stage of GSB's TSTS (`variant: code`: MLP weights only)."""
    if o.stage == 1:
        return _gsb_stage1(o.variant)
    w = Q(SignWeight)
    b, a = LinearPart(w, Q(XnorAct, signed=True)), LinearPart(w, Q(XnorAct, signed=False))
    att = AttnPart(q=Q(SignAct), k=Q(SignAct), v=Q(XnorAct, signed=True, center=False),
                   attn=Q(GSBBaseline, stage=1 if o.attn_scale == "eq2" else 2), attn_on="probs")
    return _downsample(_gsb_8bit(Plan(linears={"qkv": b, "proj": b, "fc1": b, "fc2": a}, attention=att)), "qkv")


@register_method("gsb", GSBOptions, paper="GSB (Gao et al.)", bits="1-1")
def gsb(model: nn.Module, o: GSBOptions) -> Plan:
    """GSB: weights as the baseline; linear inputs a sign(x - b) (learnable a, per-feature b; GSB Eq. 4-5) or
    a clip(round((x - b)/a), 0, 1) at fc2 (type-A); q, k a sign(x - b) with b [H, 1, d]; A by GSB (a0
    clip(round(A_ret / a0), 0, 1) + sum_i a_i M_i, GSB Eq. 10-13) and V by GSB (sum_i b_i sign(V0) M_i, GSB Eq. 26-27).
    `stage: 1`: TSTS stage 1, every binarized linear's weights only (`variant: code`: the MLP weights only)."""
    if o.stage == 1:
        return _gsb_stage1(o.variant)
    w = Q(SignWeight)
    b = LinearPart(w, Q(Elastic, signed=True, num_features="$in"))
    a = LinearPart(w, Q(Elastic, signed=o.act_type_a == "sign", num_features="$in"))
    qk = Q(HeadElastic, num_heads="$heads", head_dim="$head_dim")
    extra = {k: v for k, v in (("phi", o.phi), ("a_bin", o.a_bin)) if v != GSBOptions.model_fields[k].default}
    attn = (Q(GSBAttention, num_heads="$heads", num_tokens="$tokens", k=o.k_att, variant=o.variant, **extra)
            if o.gsb_att else Q(GSBBaseline, stage=2))
    v = Q(GSBValue, num_heads="$heads", head_dim="$head_dim", k=o.k_v) if o.gsb_v else qk
    att = AttnPart(q=qk, k=qk, v=v, attn=attn, attn_on="probs")
    return _downsample(_gsb_8bit(Plan(linears={"qkv": b, "proj": b, "fc1": b, "fc2": a}, attention=att)), "qkv")


__all__ = ["apply_plan"]
