"""The LLM suite's step of `atelier demo`: bundled samples -> indexed datasets -> inspect."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from rich.console import Console

from atelier.llm.data.inspect import inspect_dataset
from atelier.llm.data.preprocess import PreprocessConfig, preprocess
from atelier.llm.data.tokenizer import TokenizerSpec


def run(out: str | Path, workers: int = 2) -> None:
    console = Console()
    assets = resources.files("atelier.llm.assets")
    tokenizer = TokenizerSpec(name_or_path=str(assets / "tokenizer"))
    out = Path(out) / "llm"
    jobs = [
        ("pretraining text", "text_sample.txt", "GeneralPretrainHandler", None, "text"),
        (
            "Alpaca instructions",
            "alpaca_sample.json",
            "AlpacaStyleInstructionHandler",
            "qwen",
            "alpaca",
        ),
        (
            "ShareGPT conversations",
            "sharegpt_sample.jsonl",
            "SharegptStyleInstructionHandler",
            "qwen",
            "sharegpt",
        ),
    ]
    for title, data, handler, template, name in jobs:
        console.rule(f"[bold]llm preprocess: {title}")
        cfg = PreprocessConfig(
            input=str(assets / data),
            output_prefix=str(out / name),
            tokenizer=tokenizer,
            handler_name=handler,
            prompt_type=template,
            append_eod=handler == "GeneralPretrainHandler",
            workers=workers,
        )
        report = preprocess(cfg)
        console.print("\n".join(report.lines()))
        console.rule(f"[bold]llm inspect {out / name}")
        inspect_dataset(str(out / name), sample=1, tokenizer=tokenizer, console=console)
    convert_demo(out / "convert", str(assets / "tokenizer"), console)


def convert_demo(out: Path, tokenizer_dir: str, console: Console) -> None:
    """A tiny random Llama: HF -> Megatron (TP 2, PP 2, uneven stages) -> HF, checked exact."""
    import shutil

    import torch
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    from atelier.llm.convert import Hf2MgOptions, hf2mg, inspect_checkpoint, mg2hf

    hf_logging.disable_progress_bar()

    console.rule("[bold]llm convert: tiny Llama HF -> Megatron (T=2, P=2) -> HF")
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
    )
    hf_dir, mg_dir, back = out / "hf", out / "megatron", out / "hf-back"
    for d in (hf_dir, mg_dir, back):
        shutil.rmtree(d, ignore_errors=True)
    LlamaForCausalLM(config).save_pretrained(hf_dir)
    tok.save_pretrained(hf_dir)
    layout = hf2mg(
        Hf2MgOptions(load_dir=hf_dir, save_dir=mg_dir, tp=2, pp=2, num_layer_list=[2, 1])
    )
    console.print(
        f"hf2mg -> {mg_dir}: {layout.fmt}, T={layout.tp} P={layout.pp}, layers "
        f"{layout.layer_list}, padded vocab {layout.padded_vocab}"
    )
    for key, value in inspect_checkpoint(mg_dir).items():
        console.print(f"  {key:<18} {value}")
    files = mg2hf(mg_dir, back)
    console.print(f"mg2hf -> {back}: {', '.join(files)}")
    before = load_file(hf_dir / "model.safetensors")
    after = {}
    for f in back.glob("*.safetensors"):
        after.update(load_file(f))
    same = before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    console.print(f"round trip bit-identical: {same} ({len(before)} tensors)")
