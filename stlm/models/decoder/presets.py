"""Named sizes of the decoder family, as plain data.

Deep-narrow shapes (MobileLLM: at this scale depth beats width at equal
parameters), head width 64 (32 in the tiny debug size), byte vocabulary (264).
`stlm models` lists them with exact parameter counts (`config.count_params`):

    decoder-tiny      886,912   debug and CPU demo
    decoder-10m    10,248,000   320 x 8
    decoder-25m    25,833,984   512 x 8, the size of the GPT-2-style 25.9M peer in performance.md
    decoder-50m    51,532,288   512 x 16
    decoder-100m   99,318,400   640 x 20

Token-level baselines of the pooled byte models: a decoder over a small
byte-level BPE vocabulary whose transformer (blocks + final norm) has exactly
the parameters of the pooled preset's global core; only the embedding differs.
Their vocabulary size is part of the preset; the run's tokenizer must have
exactly that many ids (`stlm train-tokenizer --vocab-size N`), else the run
stops with an error saying so.

    bpe-tiny          770,944   V 1024; 128 x 3, the core of pooled-tiny (639,872)
    bpe-10m        10,203,840   V 4096; 320 x 7, the core of pooled-10m (8,893,120)
"""

from __future__ import annotations

from stlm.models.decoder.config import DecoderConfig

PRESETS: dict[str, DecoderConfig] = {
    "decoder-tiny": DecoderConfig(d_model=128, n_layers=4, n_heads=4),
    "decoder-10m": DecoderConfig(d_model=320, n_layers=8, n_heads=5),
    "decoder-25m": DecoderConfig(d_model=512, n_layers=8, n_heads=8),
    "decoder-50m": DecoderConfig(d_model=512, n_layers=16, n_heads=8),
    "decoder-100m": DecoderConfig(d_model=640, n_layers=20, n_heads=10),
    "bpe-tiny": DecoderConfig(vocab_size=1024, d_model=128, n_layers=3, n_heads=4),
    "bpe-10m": DecoderConfig(vocab_size=4096, d_model=320, n_layers=7, n_heads=5),
}
