"""User mistakes end in one AtelierError naming the file or flag, never a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from atelier.cli.main import main
from atelier.core.errors import AtelierError
from atelier.llm.convert import Hf2MgOptions, hf2mg, mg2hf

from .helpers import rank_path


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_unsupported_architecture_lists_supported(hf_model, tmp_path: Path) -> None:
    hf = _copy(hf_model("llama"), tmp_path / "hf")
    cfg = json.loads((hf / "config.json").read_text())
    cfg["architectures"], cfg["model_type"] = ["GPTNeoXForCausalLM"], "gpt_neox"
    (hf / "config.json").write_text(json.dumps(cfg))
    (hf / "model.safetensors").unlink()  # the architecture is named before weights are read
    with pytest.raises(AtelierError, match=r"GPTNeoXForCausalLM.*LlamaForCausalLM.*Qwen2"):
        hf2mg(Hf2MgOptions(load_dir=hf, save_dir=tmp_path / "mg"))


def test_tp_not_dividing_groups_lists_valid(hf_model, tmp_path: Path) -> None:
    # mistral tiny model: 8 heads, 2 query groups -> valid TP 1, 2
    with pytest.raises(AtelierError, match=r"query groups \(2\).*valid sizes: 1, 2$"):
        hf2mg(Hf2MgOptions(load_dir=hf_model("mistral"), save_dir=tmp_path / "mg", tp=4))
    assert not (tmp_path / "mg").exists()


@pytest.mark.parametrize(
    ("layers", "pp", "layer_list", "match"),
    [
        (4, 3, None, "pp 3 does not divide 4 layers; pass num_layer_list"),
        (4, 2, [1, 2], "summing to 4 layers"),
        (4, 2, [4, 0], "positive entries"),
    ],
)
def test_bad_pipeline_split(hf_model, tmp_path: Path, layers, pp, layer_list, match) -> None:
    with pytest.raises(AtelierError, match=match):
        hf2mg(
            Hf2MgOptions(
                load_dir=hf_model("llama", layers),
                save_dir=tmp_path / "mg",
                pp=pp,
                num_layer_list=layer_list,
            )
        )


def test_truncated_safetensors_is_named(hf_model, tmp_path: Path) -> None:
    hf = _copy(hf_model("llama"), tmp_path / "hf")
    f = hf / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(AtelierError, match=r"model\.safetensors.*corrupt or truncated"):
        hf2mg(Hf2MgOptions(load_dir=hf, save_dir=tmp_path / "mg"))


def test_truncated_rank_file_is_named(hf_model, tmp_path: Path) -> None:
    hf2mg(Hf2MgOptions(load_dir=hf_model("llama"), save_dir=tmp_path / "mg", tp=2, pp=2))
    f = rank_path(tmp_path / "mg", 1, 1, 2)
    f.write_bytes(f.read_bytes()[:1000])
    with pytest.raises(AtelierError, match=r"mp_rank_01_001/model_optim_rng\.pt: corrupt"):
        mg2hf(tmp_path / "mg", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.*"))  # the temporary folder is gone too


def test_missing_rank_is_named(hf_model, tmp_path: Path) -> None:
    hf2mg(Hf2MgOptions(load_dir=hf_model("llama"), save_dir=tmp_path / "mg", tp=2, pp=2))
    shutil.rmtree(rank_path(tmp_path / "mg", 1, 0, 2).parent)
    with pytest.raises(AtelierError, match="missing mp_rank_01_000"):
        mg2hf(tmp_path / "mg", tmp_path / "out")


def test_missing_tensor_fails_before_writing(hf_model, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    hf = _copy(hf_model("llama"), tmp_path / "hf")
    state = load_file(str(hf / "model.safetensors"))
    del state["model.layers.3.mlp.down_proj.weight"]
    save_file(state, str(hf / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(AtelierError, match=r"model\.layers\.3\.mlp\.down_proj\.weight"):
        hf2mg(Hf2MgOptions(load_dir=hf, save_dir=tmp_path / "mg", pp=2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]


def test_unmappable_tensor_is_refused(hf_model, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    hf = _copy(hf_model("llama"), tmp_path / "hf")
    state = load_file(str(hf / "model.safetensors"))
    state["model.layers.0.self_attn.o_proj.bias"] = torch.zeros(64)
    save_file(state, str(hf / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(AtelierError, match=r"o_proj\.bias.*would lose them"):
        hf2mg(Hf2MgOptions(load_dir=hf, save_dir=tmp_path / "mg"))


def test_failure_midway_leaves_nothing(hf_model, tmp_path: Path, monkeypatch) -> None:
    """An error after some rank files were written leaves neither output nor temporaries."""
    from atelier.llm.convert.hf_checkpoint import HFSource

    real = HFSource.layer

    def failing(self, i):
        if i == 3:
            raise AtelierError("disk full (simulated)")
        return real(self, i)

    monkeypatch.setattr(HFSource, "layer", failing)
    with pytest.raises(AtelierError, match="simulated"):
        hf2mg(Hf2MgOptions(load_dir=hf_model("llama"), save_dir=tmp_path / "mg", tp=2, pp=2))
    assert list(tmp_path.iterdir()) == []


def test_megatron_dir_given_to_hf2mg(hf_model, tmp_path: Path) -> None:
    hf2mg(Hf2MgOptions(load_dir=hf_model("llama"), save_dir=tmp_path / "mg"))
    with pytest.raises(AtelierError, match=r"is a Megatron checkpoint.*use mg2hf or mg2mg"):
        hf2mg(Hf2MgOptions(load_dir=tmp_path / "mg", save_dir=tmp_path / "x"))


def test_save_dir_with_user_files_is_never_replaced(hf_model, tmp_path: Path) -> None:
    out = tmp_path / "mg"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    opts = Hf2MgOptions(load_dir=hf_model("llama"), save_dir=out)
    for overwrite in (False, True):
        opts.overwrite = overwrite
        with pytest.raises(AtelierError, match=r"holds files Atelier did not write \(keep\.txt\)"):
            hf2mg(opts)
        assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mg"]  # no temporaries left


def test_earlier_atelier_output_needs_overwrite(hf_model, tmp_path: Path) -> None:
    out = tmp_path / "mg"
    opts = Hf2MgOptions(load_dir=hf_model("llama"), save_dir=out)
    hf2mg(opts)
    first = (out / ".atelier-output.json").read_text()
    with pytest.raises(AtelierError, match="holds an earlier Atelier output; pass --overwrite"):
        hf2mg(opts)
    opts.overwrite, opts.tp = True, 2
    hf2mg(opts)
    assert (out / "latest_checkpointed_iteration.txt").read_text() == "1\n"
    assert (out / "iter_0000001" / "mp_rank_01").is_dir()
    assert (out / ".atelier-output.json").read_text() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mg"]


def test_embedding_config_vocab_mismatch_names_both(hf_model, tmp_path: Path) -> None:
    """The Yi case: config.json says one vocab size, the embedding has another."""
    hf = _copy(hf_model("yi"), tmp_path / "hf")
    cfg = json.loads((hf / "config.json").read_text())
    cfg["vocab_size"] = 320
    (hf / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(AtelierError, match=r"300 rows.*vocab_size is 320.*true_vocab_size 300"):
        hf2mg(Hf2MgOptions(load_dir=hf, save_dir=tmp_path / "mg"))
    hf2mg(Hf2MgOptions(load_dir=hf, save_dir=tmp_path / "mg", true_vocab_size=300))


def test_tokenizer_larger_than_embedding(hf_model, tmp_path: Path) -> None:
    hf = hf_model("yi")
    n = json.loads((hf / "tokenizer.json").read_text())["model"]["vocab"]
    size = max(n.values()) + 1
    with pytest.raises(
        AtelierError,
        match=rf"has {size} tokens but .* has 200 rows.*"
        rf"true_vocab_size {size}",
    ):
        hf2mg(Hf2MgOptions(load_dir=hf, save_dir=tmp_path / "mg", true_vocab_size=200))
    with pytest.raises(AtelierError, match="between 1 and 300"):
        hf2mg(Hf2MgOptions(load_dir=hf, save_dir=tmp_path / "mg", true_vocab_size=400))


def test_sentencepiece_tokenizer_larger_than_embedding(hf_model, tmp_path: Path) -> None:
    """Yi ships only tokenizer.model: its size is checked too."""
    import sentencepiece

    hf = _copy(hf_model("yi"), tmp_path / "hf")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (hf / name).unlink()
    text = tmp_path / "text.txt"
    text.write_text("\n".join(f"the quick brown fox {i} jumps over {i * 3}" for i in range(300)))
    sentencepiece.SentencePieceTrainer.train(
        input=str(text),
        model_prefix=str(hf / "tokenizer"),
        vocab_size=250,
        model_type="bpe",
        minloglevel=2,
    )
    with pytest.raises(AtelierError, match=r"tokenizer\.model has 250 tokens but .* 200 rows"):
        hf2mg(Hf2MgOptions(load_dir=hf, save_dir=tmp_path / "mg", true_vocab_size=200))
    hf2mg(Hf2MgOptions(load_dir=hf, save_dir=tmp_path / "mg", true_vocab_size=250))
    assert (tmp_path / "mg" / "hf_assets" / "tokenizer.model").is_file()


def test_not_a_megatron_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(AtelierError, match="not a Megatron checkpoint"):
        mg2hf(tmp_path / "empty", tmp_path / "out")


def test_distributed_checkpoint_is_named(tmp_path: Path) -> None:
    it = tmp_path / "mg" / "iter_0000010"
    it.mkdir(parents=True)
    (tmp_path / "mg" / "latest_checkpointed_iteration.txt").write_text("10")
    (it / "__0_0.distcp").write_bytes(b"x")
    with pytest.raises(AtelierError, match="torch_dist"):
        mg2hf(tmp_path / "mg", tmp_path / "out")


def test_cli_error_is_one_line_exit_2(hf_model, tmp_path: Path, capsys) -> None:
    hf = hf_model("mistral")
    capsys.readouterr()
    rc = main(
        [
            "llm",
            "convert",
            "hf2mg",
            "--load-dir",
            str(hf),
            "--save-dir",
            str(tmp_path / "mg"),
            "--target-tensor-parallel-size",
            "8",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("atelier: error: --tensor-model-parallel-size 8") and "\n" not in err
    assert "Traceback" not in err


def test_hf_config_dir_must_match(hf_model, tmp_path: Path) -> None:
    hf2mg(Hf2MgOptions(load_dir=hf_model("llama", 4), save_dir=tmp_path / "mg"))
    with pytest.raises(AtelierError, match="num_layers is 6 but the Megatron checkpoint has 4"):
        mg2hf(tmp_path / "mg", tmp_path / "out", hf_config_dir=hf_model("llama", 6))


def test_bf16_source_round_trip_keeps_dtype(tmp_path: Path, tiny_tokenizer: Path) -> None:
    from .conftest import make_hf_model
    from .helpers import assert_same_state, hf_state

    hf = make_hf_model(tmp_path / "hf", "qwen2", 4, dtype=torch.bfloat16, tokenizer=tiny_tokenizer)
    hf2mg(Hf2MgOptions(load_dir=hf, save_dir=tmp_path / "mg", tp=2, pp=2))
    mg2hf(tmp_path / "mg", tmp_path / "out")
    assert_same_state(hf_state(hf), hf_state(tmp_path / "out"))


def test_megatron_tensor_without_a_slot_is_refused(hf_model, tmp_path: Path) -> None:
    """A q_layernorm in a checkpoint whose args say no qk-norm would be dropped: refuse."""
    from .helpers import load_rank

    mg = tmp_path / "mg"
    hf2mg(Hf2MgOptions(load_dir=hf_model("llama"), save_dir=mg, pp=2))
    path = rank_path(mg, 0, 1, 2)
    ck = load_rank(path)
    ck["model"]["decoder.layers.1.self_attention.q_layernorm.weight"] = torch.ones(8)
    torch.save(ck, path)
    with pytest.raises(AtelierError, match=r"mp_rank_00_001.*1 tensors have no place.*q_layernorm"):
        mg2hf(mg, tmp_path / "out")
    assert not (tmp_path / "out").exists()
