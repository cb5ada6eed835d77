"""The LLM suite's step of `atelier demo`: bundled samples -> indexed datasets -> inspect,
checkpoint conversion, and training (pretrain, SFT, CONVERT_MG2HF, generate; LoRA merged)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

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
        if name == "text":
            ray_demo(cfg, console)
    convert_demo(out / "convert", str(assets / "tokenizer"), console)
    train_demo(out, str(assets / "tokenizer"), console)


def ray_demo(cfg: PreprocessConfig, console: Console) -> None:
    """`--ray`: the same pretraining job on a local 2-CPU Ray, cut into 4 ranges; its files
    must be the single run's bytes (the demo fails otherwise)."""
    import dataclasses

    console.rule("[bold]llm preprocess --ray (local Ray, 2 CPUs)")
    try:
        import ray  # noqa: F401
    except ImportError:
        console.print("skipped: Ray is not installed (pip install 'atelier[ray]')")
        return
    from atelier.llm.data.ray_run import preprocess_on_ray

    single = f"{cfg.output_prefix}_text_document"
    on_ray = dataclasses.replace(cfg, output_prefix=f"{cfg.output_prefix}-ray")
    report = preprocess_on_ray(on_ray, num_shards=4, num_cpus=2)
    console.print("\n".join(report.lines()))
    for ext in (".bin", ".idx"):
        got = Path(f"{on_ray.output_prefix}_text_document{ext}").read_bytes()
        if got != Path(single + ext).read_bytes():
            raise RuntimeError(f"--ray wrote other bytes than the single run ({ext})")
    console.print("byte-identical to the single run: .bin and .idx")


def tiny_llama(folder: Path, tokenizer_dir: str, num_layers: int = 2, hidden: int = 64) -> Any:
    """A seeded random Llama sized for the bundled tokenizer, saved with it; returns the
    tokenizer. The demo's convert and train steps (and their tests) start from it."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return tok


def convert_demo(out: Path, tokenizer_dir: str, console: Console) -> None:
    """A tiny random Llama: HF -> Megatron (TP 2, PP 2, uneven stages) -> HF, checked exact."""
    import shutil

    import torch
    from safetensors.torch import load_file
    from transformers.utils import logging as hf_logging

    from atelier.llm.convert import Hf2MgOptions, hf2mg, inspect_checkpoint, mg2hf

    hf_logging.disable_progress_bar()

    console.rule("[bold]llm convert: tiny Llama HF -> Megatron (T=2, P=2) -> HF")
    hf_dir, mg_dir, back = out / "hf", out / "megatron", out / "hf-back"
    for d in (hf_dir, mg_dir, back):
        shutil.rmtree(d, ignore_errors=True)
    tiny_llama(hf_dir, tokenizer_dir, num_layers=3)
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


def train_demo(out: Path, tokenizer_dir: str, console: Console) -> None:
    """A tiny Llama pretrained a few steps on the demo corpus, fine-tuned on the demo Alpaca
    set, exported with CONVERT_MG2HF's path, then loaded by transformers to generate."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from atelier.llm.convert import Hf2MgOptions, hf2mg
    from atelier.llm.train.run import TrainRequest, run_training

    root = out / "train"
    shutil.rmtree(root, ignore_errors=True)
    tok = tiny_llama(root / "hf", tokenizer_dir, num_layers=2)
    hf2mg(Hf2MgOptions(load_dir=root / "hf", save_dir=root / "mcore"))
    common = {
        "micro_batch_size": 2,
        "global_batch_size": 4,
        "lr": 1e-3,
        "min_lr": 1e-4,
        "lr_decay_style": "cosine",
        "lr_warmup_iters": 1,
        "log_interval": 2,
        "eval_iters": 0,
        "device": "cpu",
    }
    console.rule("[bold]llm train: pretrain a tiny Llama (hf2mg output, 4 iterations)")
    pre = run_training(
        TrainRequest(
            data_path=[str(out / "text_text_document")],
            split="100,0,0",
            seq_length=64,
            tokenizer=tokenizer_dir,
            load=root / "mcore",
            save=root / "pretrain",
            config={**common, "train_iters": 5, "save_interval": 5},
        )
    )
    console.print("\n".join(pre.lines()))
    console.rule("[bold]llm train: SFT on the Alpaca sample (finetune), then CONVERT_MG2HF")
    sft = run_training(
        alpaca_request(out, root, tokenizer_dir, "sft", {**common, "train_iters": 4})
    )
    console.print("\n".join(sft.lines()))
    console.rule(f"[bold]transformers loads {sft.hf_dir} and generates")
    model = AutoModelForCausalLM.from_pretrained(sft.hf_dir)
    hf_tok = AutoTokenizer.from_pretrained(sft.hf_dir)
    ids = hf_tok("The quick brown fox", return_tensors="pt").input_ids
    with torch.no_grad():
        gen = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
    console.print(f"generated {gen.shape[1] - ids.shape[1]} tokens: {hf_tok.decode(gen[0])!r}")
    lora_demo(root, tokenizer_dir, common, out, console, tok.pad_token_id)


def alpaca_request(out: Path, root: Path, tokenizer_dir: str, name: str, config: dict) -> Any:
    """A fine-tuning run (SFT or LoRA) on the demo Alpaca set from the pretrained checkpoint,
    saved to `root/name` and exported to `root/name-hf` by CONVERT_MG2HF's path."""
    from atelier.llm.train.run import TrainRequest

    return TrainRequest(
        data_path=[str(out / "alpaca")],
        split="100,0,0",
        seq_length=128,
        is_instruction=True,
        tokenizer=tokenizer_dir,
        load=root / "pretrain",
        save=root / name,
        convert_mg2hf=root / f"{name}-hf",
        config={**config, "finetune": True},
    )


def lora_demo(
    root: Path, tokenizer_dir: str, common: dict, out: Path, console: Console, pad_id: int
) -> None:
    """LoRA on the SFT data (RUN_TYPE=lora's four linears, adapters-only checkpoint), merged
    into the base by CONVERT_MG2HF's path; transformers loads the merged model."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from atelier.llm.train.lora.spec import LoraSpec
    from atelier.llm.train.run import run_training

    console.rule("[bold]llm train: LoRA (r 8, adapters only), then CONVERT_MG2HF merges them")
    lora = run_training(
        alpaca_request(
            out,
            root,
            tokenizer_dir,
            "lora",
            {
                **common,
                "train_iters": 4,
                "lr": 1e-2,
                "lora": LoraSpec(r=8, alpha=16.0, ckpt_filter=True),
            },
        )
    )
    console.print("\n".join(lora.lines()))
    saved = sorted((root / "lora").rglob("model_optim_rng.pt"))
    names = torch.load(saved[-1], map_location="cpu", weights_only=False)["model"].keys()
    adapters = [n for n in names if ".lora_" in n]
    console.print(f"LoRA checkpoint holds {len(adapters)} adapter tensors of {len(names)} entries")
    model = AutoModelForCausalLM.from_pretrained(lora.hf_dir)
    merged = {}
    for f in sorted(Path(lora.hf_dir).glob("*.safetensors")):
        merged.update(load_file(f))
    ids = torch.tensor([[1, 5, 9, 13, 17]])
    with torch.no_grad():
        gen = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=pad_id)
    console.print(
        f"transformers loads the merged model from {lora.hf_dir}: {len(merged)} tensors, "
        f"generated {gen.shape[1] - ids.shape[1]} tokens"
    )
