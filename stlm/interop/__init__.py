"""Conversion to and from other toolkits' checkpoint formats, one declarative key map per format."""

from stlm.interop.hf_t5 import export_hf_t5, key_map, load_hf_t5

__all__ = ["export_hf_t5", "key_map", "load_hf_t5"]
