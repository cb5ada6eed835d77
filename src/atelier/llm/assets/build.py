"""How the bundled demo tokenizer is made (and tiny test tokenizers too).

`python -m atelier.llm.assets.build` re-trains `tokenizer/` from the bundled
samples, so the asset is reproducible rather than an opaque file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

HERE = Path(__file__).parent
CHATML = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def train_bpe(
    texts: Iterable[str],
    out_dir: str | Path,
    vocab_size: int = 2000,
    special_tokens: list[str] | None = None,
    bos: str | None = None,
    eos: str = "<|endoftext|>",
    pad: str | None = "<|endoftext|>",
) -> Path:
    """Train a byte-level BPE and save it as a Hugging Face tokenizer folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = list(special_tokens or CHATML)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    if bos is not None:
        bos_id = tok.token_to_id(bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        additional_special_tokens=[t for t in specials if t not in (bos, eos, pad)],
    )
    out = Path(out_dir)
    fast.save_pretrained(str(out))
    # Name the class both transformers 4.x and 5.x know, so older installs load it too.
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text("utf-8"))
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    extra = cfg.pop("extra_special_tokens", None)
    if extra:
        cfg["additional_special_tokens"] = extra
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n", "utf-8")
    return out


def demo_texts() -> list[str]:
    texts = (HERE / "text_sample.txt").read_text("utf-8").splitlines()
    for rec in json.loads((HERE / "alpaca_sample.json").read_text("utf-8")):
        texts += [rec["instruction"], rec["input"], rec["output"]]
    for line in (HERE / "sharegpt_sample.jsonl").read_text("utf-8").splitlines():
        rec = json.loads(line)
        texts += [
            m.get("value") or m.get("content", "")
            for m in rec.get("conversations", rec.get("messages", []))
        ]
    return texts


if __name__ == "__main__":
    path = train_bpe(demo_texts(), HERE / "tokenizer", vocab_size=1200)
    print(f"wrote {path}")
