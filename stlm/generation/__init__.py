"""Decoding: choosing tokens from logits, and loops that drive a model with explicit caches."""

from stlm.generation.decoder import generate
from stlm.generation.sampling import sample_next

__all__ = ["generate", "sample_next"]
