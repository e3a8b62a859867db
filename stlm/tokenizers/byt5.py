"""ByT5 tokenizer: UTF-8 bytes shifted by 3 under T5's specials, sentinels on top.

Layout (vocab_size = 384 by default, the embedding rows of every ByT5
checkpoint and the length of Hugging Face's ByT5Tokenizer):

    0          PAD   (also the decoder start id)
    1          EOS   (ends every document; T5 has no BOS)
    2          UNK   (never produced: every byte has an id)
    3..258     byte b is id b + 3
    259..383   125 sentinels counted down from the top: <extra_id_0> = 383

Sentinels count down from the top as for every T5 vocabulary, so
`<extra_id_k>` = vocab_size - 1 - k. (The original ByT5 pretraining reused
the top byte ids 258, 257, ... as sentinels instead; Hugging Face's
ByT5Tokenizer, despite its docstring, now numbers them upwards from 259.
Neither matters for fine-tuning a released checkpoint, whose inputs hold no
sentinels; a model pretrained here uses this layout consistently.)

Encoding is lossless for every string. Decoding never raises: non-byte ids
are dropped and invalid UTF-8 becomes U+FFFD.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from stlm.tokenizers.sentinels import TopSentinels

PAD_ID = 0
EOS_ID = 1
UNK_ID = 2
OFFSET = 3  # byte b is id b + OFFSET
N_BYTES = 256
N_SENTINELS = 125  # 256 + 3 + 125 = 384 = 3 * 128 embedding rows


class ByT5Tokenizer(TopSentinels):
    """UTF-8 bytes + 3, T5 specials (pad 0, eos 1, unk 2), sentinels from the top."""

    name = "byt5"
    pad_id = PAD_ID
    eos_id = EOS_ID
    unk_id = UNK_ID
    bos_id = None  # T5 has no BOS: `encode(bos=True)` is accepted and ignored

    def __init__(self, n_sentinels: int = N_SENTINELS) -> None:
        if n_sentinels < 0:
            raise ValueError(f"n_sentinels must be non-negative, got {n_sentinels}")
        self.n_sentinels = int(n_sentinels)
        self.vocab_size = OFFSET + N_BYTES + self.n_sentinels

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]:
        # surrogateescape: text read from bytes that are not UTF-8 (a shell argument such as $'\xff', which
        # Python holds as the surrogate U+DCFF) becomes those bytes again, as a byte model reads them.
        return self.encode_bytes(text.encode("utf-8", "surrogateescape"), bos=bos, eos=eos)

    def encode_bytes(self, data: bytes, *, bos: bool = False, eos: bool = False) -> list[int]:
        # `bos` is part of the shared tokenizer interface; T5 documents are
        # packed `doc EOS doc EOS`, so it does nothing here.
        ids = [b + OFFSET for b in data]
        if eos:
            ids.append(EOS_ID)
        return ids

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The byte ids as raw bytes; specials and sentinels are dropped."""
        return bytes(i - OFFSET for i in ids if OFFSET <= i < OFFSET + N_BYTES)

    def decode(self, ids: Iterable[int], *, sentinels: bool = False) -> str:
        """Text of the byte ids; never raises on invalid UTF-8 (U+FFFD instead).

        With `sentinels=True` each sentinel is rendered as `<extra_id_k>`
        (for reading span-corruption examples); otherwise it is dropped.
        """
        if not sentinels:
            return self.decode_bytes(ids).decode("utf-8", errors="replace")
        parts: list[str] = []
        run: list[int] = []
        for i in ids:
            k = self.sentinel_index(i)
            if k is None:
                run.append(i)
                continue
            parts.append(self.decode_bytes(run).decode("utf-8", errors="replace"))
            parts.append(f"<extra_id_{k}>")
            run = []
        parts.append(self.decode_bytes(run).decode("utf-8", errors="replace"))
        return "".join(parts)

    @staticmethod
    def count_bytes(ids: Sequence[int]) -> int:
        """How many ids are bytes (the denominator of bits per byte)."""
        return sum(1 for i in ids if OFFSET <= i < OFFSET + N_BYTES)

    def to_dict(self) -> dict:
        return {"name": self.name, "vocab_size": self.vocab_size, "n_sentinels": self.n_sentinels}
