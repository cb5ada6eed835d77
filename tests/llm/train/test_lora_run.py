"""RUN_TYPE=lora through `atelier llm train`'s request path: SFT data, LoRA, a filtered
save, and the same command again with more iterations resuming from that save."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import torch

from atelier.cli.llm_train import train_request
from atelier.cli.main import build_parser
from atelier.llm.convert.megatron_checkpoint import load_rank_file
from atelier.llm.data.preprocess import PreprocessConfig, preprocess
from atelier.llm.data.tokenizer import TokenizerSpec
from atelier.llm.train.env import ENV_TO_FIELD
from atelier.llm.train.launch import launch
from atelier.llm.train.run import run_training
from tests.conftest import write_jsonl
from tests.llm.convert.conftest import make_hf_model


@pytest.fixture
def sft(tmp_path: Path, hf_tokenizer_dir: Path, monkeypatch) -> tuple[Path, str]:
    from transformers import AutoTokenizer

    for var in [*ENV_TO_FIELD, "RUN_TYPE", "SN", "EPOCH", "CONVERT_MG2HF"]:
        monkeypatch.delenv(var, raising=False)
    tok = AutoTokenizer.from_pretrained(str(hf_tokenizer_dir))
    hf = make_hf_model(tmp_path / "hf", "llama", num_layers=1, vocab=len(tok))
    recs = [{"instruction": f"What is {i} plus {i}?", "output": f"{2 * i}."} for i in range(24)]
    prefix = str(tmp_path / "alpaca")
    preprocess(
        PreprocessConfig(
            input=str(write_jsonl(tmp_path / "alpaca.jsonl", recs)),
            output_prefix=prefix,
            tokenizer=TokenizerSpec(name_or_path=str(hf_tokenizer_dir)),
            handler_name="AlpacaStyleInstructionHandler",
            prompt_type="qwen",
            seq_length=64,
        )
    )
    return hf, prefix


def _train(line: str):
    return run_training(train_request(build_parser().parse_args(["llm", "train", *line.split()])))


def test_run_type_lora_trains_saves_adapters_and_resumes(
    sft, tmp_path: Path, hf_tokenizer_dir: Path, monkeypatch
) -> None:
    hf, prefix = sft
    monkeypatch.setenv("RUN_TYPE", "lora")
    save = tmp_path / "out"
    line = (
        f"--load {hf} --save {save} --data-path {prefix} --split 100,0,0 --seq-length 64 "
        f"--tokenizer-name-or-path {shlex.quote(str(hf_tokenizer_dir))} --micro-batch-size 2 "
        "--global-batch-size 4 --lr 1e-3 --eval-iters 0 --device cpu --lora-r 4 "
        "--lora-ckpt-filter --make-vocab-size-divisible-by 64"
    )
    first = _train(line + " --train-iters 2")
    assert first.iterations == 2 and len(first.losses) == 2
    model = load_rank_file(save / "iter_0000002/mp_rank_00/model_optim_rng.pt")["model"]
    assert model and all(".lora_A.default." in k or ".lora_B.default." in k for k in model)
    assert len(model) == 4 * 2  # one layer x four linears x (A, B)
    out = tmp_path / "hf_out"
    again = _train(line + f" --train-iters 3 --convert-mg2hf {out}")  # resumes, then merges
    assert again.iterations == 3 and len(again.losses) == 1 and again.hf_dir == out
    ours, merged = launch(_logits, (hf, save, out))
    torch.testing.assert_close(merged, ours, rtol=0, atol=2e-5)


def _logits(hf: Path, save: Path, out: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The trained LoRA model's logits (base + saved adapters) and the merged HF model's."""
    import transformers

    from atelier.llm.train.config import TrainConfig
    from atelier.llm.train.loop import setup
    from atelier.llm.train.lora import LoraSpec

    tokens = torch.arange(1, 33)[None]
    cfg = TrainConfig(
        load=hf,
        seq_length=64,
        train_iters=1,
        device="cpu",
        make_vocab_size_divisible_by=64,
        lora=LoraSpec(r=4, load=save / "iter_0000003"),
    )
    with torch.no_grad():
        ours = setup(cfg).model(tokens)
        model = transformers.AutoModelForCausalLM.from_pretrained(out, torch_dtype=torch.float32)
        return ours, model(tokens).logits
