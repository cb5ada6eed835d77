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
