"""bvbench.quant: every quantizer and quantized module (weights, activations, attention maps, QLinear, QConv2d,
QAttention, LSQ, precisions), autograd functions with the papers' backward passes."""

from bvbench.quant import activations, attention, gsb, lsq, weights  # noqa: F401  (registers the quantizers)
from bvbench.quant.activations import (
    AbsMax,
    ApproxSign,
    Elastic,
    HeadElastic,
    RSign,
    SignAct,
    XnorAct,
    layer_norm,
)
from bvbench.quant.attention import (
    BiBERTAttention,
    LearnableScaleBinarizer,
    RectifiedLSF,
    SignScaledAttention,
    SoftmaxAwareBinarizer,
    optimal_threshold,
)
from bvbench.quant.base import FULL, SCALE_MIN, AttentionPrecision, LazyInit, Precision, Quantizer
from bvbench.quant.error import quant_error
from bvbench.quant.gsb import GSBAttention, GSBBaseline, GSBValue, gsb_coefficients
from bvbench.quant.linear import QConv2d, QLinear, quantize_linears
from bvbench.quant.lsq import LSQ
from bvbench.quant.qattention import (
    QAttention,
    attention_family,
    attention_maps,
    attention_modules,
    capturable,
    to_qattention,
)
from bvbench.quant.registry import QUANTIZERS, build_quantizer
from bvbench.quant.weights import BiRealWeight, BitNetWeight, SignWeight, TernaryWeight

__all__ = [
    "FULL",
    "LSQ",
    "QUANTIZERS",
    "SCALE_MIN",
    "AbsMax",
    "ApproxSign",
    "AttentionPrecision",
    "BiBERTAttention",
    "BiRealWeight",
    "BitNetWeight",
    "Elastic",
    "GSBAttention",
    "GSBBaseline",
    "GSBValue",
    "HeadElastic",
    "LazyInit",
    "LearnableScaleBinarizer",
    "Precision",
    "QAttention",
    "QConv2d",
    "QLinear",
    "Quantizer",
    "RSign",
    "RectifiedLSF",
    "SignAct",
    "SignScaledAttention",
    "SignWeight",
    "SoftmaxAwareBinarizer",
    "TernaryWeight",
    "XnorAct",
    "attention_family",
    "attention_maps",
    "attention_modules",
    "build_quantizer",
    "capturable",
    "gsb_coefficients",
    "layer_norm",
    "optimal_threshold",
    "quant_error",
    "quantize_linears",
    "to_qattention",
]
