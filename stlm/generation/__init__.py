"""Decoding: choosing tokens from logits, and loops that drive a model with explicit caches.

    sampling.py   temperature, top-k, top-p over one row of logits
    decoder.py    cached decoding of decoder-only models, one sequence or a greedy batch
    pooled.py     the same loop for pooled byte models (per-sequence patch state)
    seq2seq.py    encoder-decoders: encode once, decode with a self/cross-attention cache; beams
    rows.py       what a batch of rows that join and leave between steps offers (continuous
                  batching for a server): decoder.DecoderRows, seq2seq.Seq2SeqRows

Which loop a model uses is its family's choice (`stlm.registry` rows' `stream`
and `generate_greedy`).
"""

from stlm.generation.decoder import generate, generate_batch
from stlm.generation.sampling import sample_next

__all__ = ["generate", "generate_batch", "sample_next"]
