"""bvbench.quant: weight, activation and attention quantizers with paper-faithful backward passes."""

from bvbench.quant import activations, attention, gsb, weights  # noqa: F401  (registers the quantizers)
from bvbench.quant.activations import AbsMax, ApproxSign, Elastic, RSign, SignAct, layer_norm
from bvbench.quant.attention import (
    BiBERTAttention,
    LearnableScaleBinarizer,
    SoftmaxAwareBinarizer,
    optimal_threshold,
)
from bvbench.quant.base import FULL, SCALE_MIN, LazyInit, Precision, Quantizer
from bvbench.quant.error import quant_error
from bvbench.quant.gsb import GSBAttention, GSBBaseline, GSBValue, gsb_coefficients
from bvbench.quant.linear import QLinear, quantize_linears
from bvbench.quant.registry import QUANTIZERS, build_quantizer
from bvbench.quant.weights import BiRealWeight, BitNetWeight, SignWeight, TernaryWeight

__all__ = [
    "FULL",
    "QUANTIZERS",
    "SCALE_MIN",
    "AbsMax",
    "ApproxSign",
    "BiBERTAttention",
    "BiRealWeight",
    "BitNetWeight",
    "Elastic",
    "GSBAttention",
    "GSBBaseline",
    "GSBValue",
    "LazyInit",
    "LearnableScaleBinarizer",
    "Precision",
    "QLinear",
    "Quantizer",
    "RSign",
    "SignAct",
    "SignWeight",
    "SoftmaxAwareBinarizer",
    "TernaryWeight",
    "build_quantizer",
    "gsb_coefficients",
    "layer_norm",
    "optimal_threshold",
    "quant_error",
    "quantize_linears",
]
