import pytest

from stlm.errors import UserError
from stlm.tokenizers import ByT5Tokenizer, ByteTokenizer, SentencePieceTokenizer, load_tokenizer, train_sentencepiece


def test_specs_name_the_tokenizers(tmp_path):
    assert isinstance(load_tokenizer("byte"), ByteTokenizer)
    assert isinstance(load_tokenizer("byt5"), ByT5Tokenizer)
    lines = [f"line {i} of some words about the number {i * 7}" for i in range(300)]
    model = train_sentencepiece(lines, tmp_path / "sp", vocab_size=60)
    tok = load_tokenizer(f"spiece:{model}")
    assert isinstance(tok, SentencePieceTokenizer) and tok.vocab_size == 160
    # A checkpoint's tokenizer record names its own spec.
    assert load_tokenizer(tok.to_dict()["spec"]).sha256 == tok.sha256


@pytest.mark.parametrize("spec", ["bpe", "spiece:", "", "BYTE"])
def test_unknown_specs_are_user_errors(spec):
    with pytest.raises(UserError):
        load_tokenizer(spec)


def test_a_missing_model_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_tokenizer(f"spiece:{tmp_path / 'nope.model'}")


def test_importing_the_package_does_not_import_sentencepiece():
    import subprocess
    import sys

    code = "import sys, stlm.tokenizers; print('sentencepiece' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
