"""`atelier llm convert ...`: flags, MindSpeed-LLM spellings, inspect output."""

from __future__ import annotations

from pathlib import Path

from atelier.cli.main import main

from .helpers import assert_same_state, flat, hf_state, load_rank, rank_path


def test_mindspeed_spellings_and_full_cycle(hf_model, tmp_path: Path, capsys) -> None:
    hf = hf_model("llama", 6)
    mg, mg2, out = tmp_path / "mg", tmp_path / "mg2", tmp_path / "out"
    assert (
        main(
            [
                "llm",
                "convert",
                "hf2mg",
                "--model-type",
                "GPT",
                "--loader",
                "llama2_hf",
                "--saver",
                "megatron",
                "--target-tensor-parallel-size",
                "2",
                "--target-pipeline-parallel-size",
                "3",
                "--num-layer-list",
                "1,2,3",
                "--load-dir",
                str(hf),
                "--save-dir",
                str(mg),
                "--tokenizer-model",
                str(hf / "tokenizer.json"),
                "--make-vocab-size-divisible-by",
                "16",
                "--params-dtype",
                "fp32",
            ]
        )
        == 0
    )
    ck = load_rank(rank_path(mg, 1, 2, 3))
    assert "language_model" in ck["model"] and ck["args"].padded_vocab_size == 320
    assert (
        main(
            [
                "llm",
                "convert",
                "mg2mg",
                "--load-dir",
                str(mg),
                "--save-dir",
                str(mg2),
                "-T",
                "4",
                "-P",
                "2",
                "--use-mcore-models",
                "--mcore-norms",
                "te",
            ]
        )
        == 0
    )
    assert "decoder.layers.0.self_attention.linear_qkv.layer_norm_weight" in flat(
        load_rank(rank_path(mg2, 3, 1, 2))["model"]
    )
    assert (
        main(
            [
                "llm",
                "convert",
                "mg2hf",
                "--load-dir",
                str(mg2),
                "--save-dir",
                str(out),
                "--hf-config-dir",
                str(hf),
                "--load-model-type",
                "mg",
                "--save-model-type",
                "hf",
            ]
        )
        == 0
    )
    assert_same_state(hf_state(hf), hf_state(out))
    capsys.readouterr()
    assert main(["llm", "convert", "inspect", str(mg2)]) == 0
    text = capsys.readouterr().out
    for line in (
        "format: mcore (te norms)",
        "tp: 4",
        "pp: 2",
        "layers_per_stage: 3,3",
        "true_vocab: 300",
        "padded_vocab: 320",
        "dtype: float32",
        "family: llama",
    ):
        assert line in text, line
    import transformers

    n = transformers.AutoModelForCausalLM.from_pretrained(out).num_parameters()
    assert f"parameters: {n}\n" in text


def test_inspect_hf_and_bad_dir(hf_model, tmp_path: Path, capsys) -> None:
    assert main(["llm", "convert", "inspect", str(hf_model("qwen2"))]) == 0
    text = capsys.readouterr().out
    assert "format: huggingface" in text and "qkv_bias: True" in text
    assert "tied_embeddings: True" in text
    assert main(["llm", "convert", "inspect", str(tmp_path / "nope")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_inspect_qwen3_counts_qk_norms(hf_model, capsys) -> None:
    import transformers

    hf = hf_model("qwen3")
    assert main(["llm", "convert", "inspect", str(hf)]) == 0
    text = capsys.readouterr().out
    assert "family: qwen3" in text and "qk_norm: True" in text and "head_dim: 16" in text
    n = transformers.AutoModelForCausalLM.from_pretrained(hf).num_parameters()
    assert f"parameters: {n}\n" in text


def test_cli_maps_parameter_names_to_flags(hf_model, tmp_path: Path, capsys) -> None:
    """The library says `num_layer_list`, `pp`, `fmt`; the user reads the flags they typed."""
    hf = str(hf_model("qwen3"))
    base = ["llm", "convert", "hf2mg", "--load-dir", hf, "--save-dir", str(tmp_path / "mg")]
    capsys.readouterr()
    assert main([*base, "-P", "2", "--num-layer-list", "1,2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("atelier: error: --num-layer-list 1,2 must have 2 positive entries")
    assert main([*base, "-P", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--pipeline-model-parallel-size 3 does not divide 4 layers; pass --num-layer-list" in err
    assert main([*base, "--format", "legacy"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("atelier: error: --format legacy: ") and err.endswith(
        "use --format mcore"
    )
    assert not (tmp_path / "mg").exists()
