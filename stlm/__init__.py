"""stlm: super tiny language models."""

__version__ = "0.1.0"
