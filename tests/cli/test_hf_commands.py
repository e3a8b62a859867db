"""stlm hf-import / hf-export on a tiny random transformers T5 saved locally."""

import pytest
import torch

from stlm.cli.main import main

transformers = pytest.importorskip("transformers")


def test_import_generate_export_round_trip(tmp_path, capsys):
    torch.manual_seed(0)
    hf_cfg = transformers.T5Config(
        vocab_size=384,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        feed_forward_proj="relu",
        tie_word_embeddings=True,
        decoder_start_token_id=0,
    )
    hf = transformers.T5ForConditionalGeneration(hf_cfg).eval()
    hf.save_pretrained(tmp_path / "hf")

    assert main(["hf-import", str(tmp_path / "hf"), "--out", str(tmp_path / "run")]) == 0
    assert main(["generate", str(tmp_path / "run"), "--prompt", "hi", "--max-new-bytes", "4", "--greedy"]) == 0
    assert main(["hf-export", str(tmp_path / "run"), "--out", str(tmp_path / "back")]) == 0
    again = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "back").eval()
    ids = torch.randint(3, 384, (2, 9))
    dec = torch.randint(3, 384, (2, 5))
    with torch.no_grad():
        torch.testing.assert_close(
            again(input_ids=ids, decoder_input_ids=dec).logits,
            hf(input_ids=ids, decoder_input_ids=dec).logits,
            rtol=0,
            atol=1e-5,
        )
    capsys.readouterr()

    assert main(["hf-import", str(tmp_path / "hf"), "--out", str(tmp_path / "run")]) == 2  # never overwrites
    (tmp_path / "broken").mkdir()
    assert main(["hf-import", str(tmp_path / "broken"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "config.json" in err and "Traceback" not in err
