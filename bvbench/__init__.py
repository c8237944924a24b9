"""bvbench: reproduce, compare and extend binarized and 1.58-bit Vision Transformers."""

__version__ = "0.1.0"
