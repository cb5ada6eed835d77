"""Shared fixtures: tiny tokenizers trained here, never downloaded."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from atelier.llm.assets.build import demo_texts, train_bpe


def pytest_configure(config: pytest.Config) -> None:
    """Atelier's caches (tokenizers, tiktoken verdicts) in a folder of this session's,
    not the developer's ~/.cache: each run starts cold, and leaves nothing behind."""
    cache = tempfile.mkdtemp(prefix="atelier-test-cache-")
    os.environ["XDG_CACHE_HOME"] = cache
    atexit.register(shutil.rmtree, cache, True)


# Special tokens of every built-in template, so each template tokenizes cleanly.
SPECIALS = [
    "<s>",
    "</s>",
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "[gMASK]",
    "sop",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
    "<reserved_106>",
    "<reserved_107>",
]


@pytest.fixture(scope="session")
def hf_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A byte-level BPE whose `tokenizer(text)` prepends BOS, like Llama's."""
    out = tmp_path_factory.mktemp("tok") / "hf"
    return train_bpe(
        demo_texts() * 3,
        out,
        vocab_size=600,
        special_tokens=SPECIALS,
        bos="<s>",
        eos="</s>",
        pad="</s>",
    )


@pytest.fixture(scope="session")
def hf_tokenizer(hf_tokenizer_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(hf_tokenizer_dir))


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), "utf-8")
    return path


@pytest.fixture
def texts() -> list[str]:
    base = demo_texts()
    return [f"{base[i % len(base)]} ({i})" for i in range(60)]
