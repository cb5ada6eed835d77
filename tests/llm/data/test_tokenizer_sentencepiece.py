"""SentencePiece-BPE tokenizers (Metaspace) run on fastokens with exactly hf's ids.

A tiny real SentencePiece BPE model (byte fallback on) is trained here and converted by
transformers' own LlamaTokenizer converter, legacy (`prepend_scheme` always) and not
(first); `split` and `never` are the same JSON with the pre-tokenizer's fields changed.
"""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from atelier.llm.assets.build import demo_texts
from atelier.llm.data.fastokens_pipeline import rewrite_metaspace
from atelier.llm.data.preprocess import PreprocessConfig, preprocess
from atelier.llm.data.tokenizer import TokenizerSpec, choose_backend, load_tokenizer
from atelier.llm.data.tokenizer_backends import (
    BackendRefused,
    FastokensEncoder,
    HfEncoder,
    adversarial_texts,
)

from ...conftest import write_jsonl
from .helpers import files_bytes, instruction_rows
from .test_tokenizer_backends import _random_texts

spm = pytest.importorskip("sentencepiece")
pytest.importorskip("fastokens")

# tokenizer_config.json fields that make transformers' LlamaTokenizer write each scheme
SCHEME_CONFIG = {
    "first": {"legacy": False},
    "always": {"legacy": True},
    "never": {"add_prefix_space": False},
}


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 400-piece SentencePiece BPE model with byte fallback, trained on the demo texts."""
    lines = [line for t in demo_texts() for line in t.splitlines() if line.strip()]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        model_type="bpe",
        vocab_size=400,
        byte_fallback=True,
        character_coverage=0.9995,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    folder = tmp_path_factory.mktemp("sp") / "src"
    folder.mkdir()
    (folder / "tokenizer.model").write_bytes(model.getvalue())
    return folder


@pytest.fixture(scope="module")
def sp_dirs(sp_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Hugging Face folders converted from the model by transformers, one per prepend scheme."""
    from transformers import LlamaTokenizer

    out = {}
    for scheme, fields in SCHEME_CONFIG.items():
        folder = tmp_path_factory.mktemp(f"sp-{scheme}") / "hf"
        tok = LlamaTokenizer.from_pretrained(str(sp_model), add_bos_token=True, **fields)
        tok.save_pretrained(str(folder))
        config = json.loads((folder / "tokenizer_config.json").read_text("utf-8"))
        (folder / "tokenizer_config.json").write_text(json.dumps({**config, **fields}))
        out[scheme] = folder
    return out


def _loaded(sp_dirs: dict[str, Path], scheme: str, split: bool = False):
    loaded = load_tokenizer(TokenizerSpec(name_or_path=str(sp_dirs[scheme])))
    spec = json.loads(loaded.rust_json)
    assert spec["pre_tokenizer"]["type"] == "Metaspace"
    assert spec["pre_tokenizer"]["prepend_scheme"] == scheme
    assert spec["model"]["byte_fallback"] is True
    spec["pre_tokenizer"]["split"] = split
    return replace(loaded, rust_json=json.dumps(spec))


def _assert_identical(ref: HfEncoder, fast: FastokensEncoder, texts: list[str]) -> None:
    for add_special in (False, True):
        a_ids, a_len = ref.encode_flat(texts, add_special)
        b_ids, b_len = fast.encode_flat(texts, add_special)
        np.testing.assert_array_equal(a_len, b_len)
        np.testing.assert_array_equal(a_ids, b_ids)


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("scheme", ["first", "always", "never"])
def test_fastokens_ids_identical_for_every_metaspace_variant(sp_dirs, scheme, split):
    import fastokens

    loaded = _loaded(sp_dirs, scheme, split)
    with pytest.raises(Exception, match="Metaspace"):  # what the rewrite is for
        fastokens.Tokenizer.from_json_str(loaded.rust_json)
    ref, fast = HfEncoder(loaded.rust_json), FastokensEncoder(loaded.rust_json)
    added = list(loaded.added_tokens)
    assert added == ["<unk>", "<s>", "</s>"]
    pieces = [f"{a}{b}" for a in (*added, "x", " ", "\u2581", "") for b in (*added, "y", " y")]
    texts = adversarial_texts(loaded.added_tokens) + pieces + _random_texts(1500)
    _assert_identical(ref, fast, texts)
    # byte fallback is exercised: characters outside the 400 pieces become <0x..> ids
    ids, _ = ref.encode_flat(["𪚥😀"], False)
    assert ids.size >= 8
    # the post-processor's BOS comes with add_special_tokens
    assert fast.encode_flat(["hello"], True)[0][0] == loaded.bos
    chosen, notice = choose_backend(loaded, "auto", texts[-50:])
    assert chosen.backend == "fastokens" and notice is None


def test_older_llama_format_loads_as_it_is_and_is_identical(sp_dirs):
    """Llama-2's tokenizer.json as first published: Prepend + Replace normalizers, no
    pre-tokenizer. fastokens has both steps, so nothing is rewritten."""
    loaded = _loaded(sp_dirs, "always")
    steps = [
        {"type": "Prepend", "prepend": "\u2581"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
    ]
    old = _with(loaded, normalizer={"type": "Sequence", "normalizers": steps}, pre_tokenizer=None)
    fast = FastokensEncoder(old)
    assert fast.rewritten.rust_json == old and fast.rewritten.prepend is None
    texts = adversarial_texts(loaded.added_tokens) + _random_texts(500, seed=5)
    _assert_identical(HfEncoder(old), fast, texts)


def test_template_tokens_added_to_the_tokenizer_stay_identical(sp_dirs):
    """Added tokens, special or not, inside words, at the start, one after another."""
    from tokenizers import AddedToken, Tokenizer

    loaded = _loaded(sp_dirs, "first")
    tok = Tokenizer.from_str(loaded.rust_json)
    tok.add_special_tokens([AddedToken("<|im_start|>", normalized=False), "<|im_end|>"])
    tok.add_tokens([AddedToken("[INST]", normalized=False), "madeup"])
    rust_json = tok.to_str()
    added = ("<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>", "[INST]", "madeup")
    texts = [*adversarial_texts(added), "madeupword", "<|im_start|>user\nhi<|im_end|>[INST]x"]
    _assert_identical(HfEncoder(rust_json), FastokensEncoder(rust_json), texts)


def _with(loaded, **changes) -> str:
    spec = json.loads(loaded.rust_json)
    for path, value in changes.items():
        spec[path] = value
    return json.dumps(spec)


def test_unrewritable_pipelines_are_refused_with_the_reason(sp_dirs):
    loaded = _loaded(sp_dirs, "first")
    meta = json.loads(loaded.rust_json)["pre_tokenizer"]
    nfc = _with(loaded, normalizer={"type": "NFC"})
    with pytest.raises(BackendRefused, match=r"Metaspace.*a normalizer before Metaspace"):
        FastokensEncoder(nfc)
    chosen, notice = choose_backend(replace(loaded, rust_json=nfc), "auto", [])
    assert chosen.backend == "hf"
    assert notice.startswith("fastokens cannot load this tokenizer (") and "normalizer" in notice

    nested = _with(loaded, pre_tokenizer={"type": "Sequence", "pretokenizers": [meta]})
    with pytest.raises(BackendRefused, match="inside a pre-tokenizer Sequence"):
        FastokensEncoder(nested)

    spec = json.loads(loaded.rust_json)
    spec["added_tokens"].append({**spec["added_tokens"][0], "id": 400, "content": "\u2581x"})
    with pytest.raises(BackendRefused, match="contains the Metaspace replacement"):
        rewrite_metaspace(json.dumps(spec))
    spec["added_tokens"][-1].update(content="a b", normalized=True)
    with pytest.raises(BackendRefused, match="normalized added token 'a b'"):
        rewrite_metaspace(json.dumps(spec))
    spec["added_tokens"][-1].update(content="ab", normalized=False, single_word=True)
    with pytest.raises(BackendRefused, match="single_word added token 'ab'"):
        rewrite_metaspace(json.dumps(spec))
    assert rewrite_metaspace(_with(loaded, pre_tokenizer={**meta, "prepend_scheme": "always"}))


def test_tokenizers_fastokens_loads_as_they_are_are_not_rewritten(hf_tokenizer_dir):
    loaded = load_tokenizer(TokenizerSpec(name_or_path=str(hf_tokenizer_dir)))
    fast = FastokensEncoder(loaded.rust_json)
    assert fast.rewritten.rust_json == loaded.rust_json and fast.rewritten.prepend is None
    with pytest.raises(BackendRefused, match="no Metaspace pre-tokenizer"):
        rewrite_metaspace(loaded.rust_json)


def _preprocess(tok_dir: Path, src: Path, prefix: Path, backend: str, **kw):
    cfg = PreprocessConfig(
        input=str(src),
        output_prefix=str(prefix),
        tokenizer=TokenizerSpec(name_or_path=str(tok_dir), backend=backend),
        **kw,
    )
    return preprocess(cfg)


@pytest.mark.parametrize("scheme", ["first", "always"])
def test_pretraining_output_byte_identical_to_hf(tmp_path, sp_dirs, scheme):
    texts = [*_random_texts(150, seed=3), " leading space", "\u2581literal", "", "<s>start"]
    src = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in texts])
    outs = {}
    for backend in ("hf", "auto"):
        report = _preprocess(
            sp_dirs[scheme], src, tmp_path / backend, backend, append_eod=True, seq_length=60
        )
        assert report.backend == ("hf" if backend == "hf" else "fastokens")
        outs[backend] = files_bytes(tmp_path / backend, ["text"])
    assert outs["hf"] == outs["auto"]


SFT = [
    {
        "instruction": "Say hi to <s> and \u2581 literally",
        "input": " with a leading space",
        "output": "hi 😀 𪚥",
        "system": "Be brief.",
        "history": [["What is one plus one?", "Two."]],
    },
    {"instruction": "中文问题", "input": "", "output": "回答。\n  indented"},
]


@pytest.mark.parametrize("template", ["mistral", "llama2"])
def test_instruction_output_byte_identical_to_hf(tmp_path, sp_dirs, template):
    src = write_jsonl(tmp_path / "a.jsonl", SFT * 3)
    outs = {}
    for backend in ("hf", "auto"):
        report = _preprocess(
            sp_dirs["first"],
            src,
            tmp_path / backend,
            backend,
            handler_name="AlpacaStyleInstructionHandler",
            prompt_type=template,
            map_keys='{"system": "system", "history": "history"}',
        )
        assert report.backend == ("hf" if backend == "hf" else "fastokens")
        assert len(instruction_rows(tmp_path / backend)) == len(SFT) * 3
        keys = [f"packed_{k}" for k in ("input_ids", "attention_mask", "labels")]
        outs[backend] = files_bytes(tmp_path / backend, keys)
    assert outs["hf"] == outs["auto"]
