"""Model families, one module each; `stlm.registry` holds the table of them."""

from stlm.families.base import CausalFamily, ModelFamily
from stlm.families.decoder import DecoderFamily
from stlm.families.pooled import PooledFamily
from stlm.families.t5 import T5Family

__all__ = ["CausalFamily", "DecoderFamily", "ModelFamily", "PooledFamily", "T5Family"]
