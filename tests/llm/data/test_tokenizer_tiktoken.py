"""tiktoken gives hf's ids where its conditions hold, and is refused (naming why) where not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atelier.llm.assets.build import demo_texts
from atelier.llm.data import tokenizer_backends as backends
from atelier.llm.data import tokenizer_tiktoken as tt
from atelier.llm.data.tokenizer import TokenizerSpec, choose_backend, load_tokenizer
from atelier.llm.data.tokenizer_backends import (
    BackendRefused,
    HfEncoder,
    adversarial_texts,
    first_mismatch,
)
from atelier.llm.data.tokenizer_tiktoken import TiktokenEncoder, byte_decoder

from ...conftest import write_jsonl
from .helpers import files_bytes
from .test_tokenizer_backends import BUNDLED, _random_texts

tiktoken = pytest.importorskip("tiktoken")

LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Verdicts go to this test's folder (workers inherit the variable)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _split_regex_json(nfc: bool) -> str:
    """A Llama-3-style (Qwen2-style with `nfc`) tokenizer trained here by BpeTrainer."""
    from tokenizers import (
        Regex,
        Tokenizer,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.normalizer = normalizers.NFC() if nfc else None
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=700,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(demo_texts() * 3, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A <|end_of_text|>",
        special_tokens=[(t, tok.token_to_id(t)) for t in specials[:2]],
    )
    spec = json.loads(tok.to_str())
    assert spec["model"]["ignore_merges"] is True
    return tok.to_str()


def _json(which: str, hf_tokenizer_dir: Path, gpt2_dir: Path | None = None):
    if which == "gpt2-files":  # GPT2BPETokenizer: <|endoftext|> only in vocab.json, no merge
        spec = TokenizerSpec(
            type="GPT2BPETokenizer",
            vocab_file=str(gpt2_dir / "vocab.json"),
            merge_file=str(gpt2_dir / "merges.txt"),
        )
        return load_tokenizer(spec).rust_json, ["<|endoftext|>"]
    if which in ("llama3-style", "qwen2-style"):
        js = _split_regex_json(nfc=which == "qwen2-style")
        return js, [t["content"] for t in json.loads(js)["added_tokens"]]
    loaded = load_tokenizer(TokenizerSpec(name_or_path=str(hf_tokenizer_dir)))
    if which == "bundled":
        loaded = load_tokenizer(TokenizerSpec(name_or_path=str(BUNDLED)))
    return loaded.rust_json, list(loaded.added_tokens)


@pytest.mark.parametrize(
    "which", ["conftest", "bundled", "llama3-style", "qwen2-style", "gpt2-files"]
)
def test_tiktoken_ids_identical_on_adversarial_corpus(which, hf_tokenizer_dir, request):
    gpt2 = request.getfixturevalue("gpt2_tokenizer_dir") if which == "gpt2-files" else None
    rust_json, added = _json(which, hf_tokenizer_dir, gpt2)
    ref = HfEncoder(rust_json)
    fast = TiktokenEncoder(rust_json)
    texts = adversarial_texts(added) + _random_texts(1500)
    texts += ["e\u0301" + t + "\u0301" for t in added] + ["A\u030a\u212b \u1df6\u0323"]
    assert first_mismatch(ref, fast, texts) is None  # every text, with and without specials


def _variant(hf_tokenizer_dir: Path, change) -> str:
    spec = json.loads(_json("conftest", hf_tokenizer_dir)[0])
    change(spec)
    return json.dumps(spec)


def _swap_ids(spec: dict) -> None:
    """Two merged tokens trade ids: merge order and id order disagree."""
    vocab = spec["model"]["vocab"]
    a, b = (" ".join(m) if isinstance(m, list) else m for m in spec["model"]["merges"][5:7])
    ta, tb = a.replace(" ", ""), b.replace(" ", "")
    vocab[ta], vocab[tb] = vocab[tb], vocab[ta]


def _add_token(content: str, **flags):
    def change(spec: dict) -> None:
        ids = [*spec["model"]["vocab"].values(), *(t["id"] for t in spec["added_tokens"])]
        new_id = flags.get("id", max(ids) + 1)
        spec["added_tokens"].append(
            {
                "id": new_id,
                "content": content,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
                **{k: v for k, v in flags.items() if k != "id"},
            }
        )

    return change


def _extra_merge(spec: dict) -> None:
    """A second split of an existing token (what tiktoken-converted vocabularies have)."""
    merges = spec["model"]["merges"]
    vocab = spec["model"]["vocab"]
    for m in merges:
        a, b = m if isinstance(m, list) else m.split(" ")
        t = a + b
        for k in range(1, len(t)):
            split = [t[:k], t[k:]]
            if split != [a, b] and split[0] in vocab and split[1] in vocab:
                merges.append(split if isinstance(m, list) else " ".join(split))
                return
    raise AssertionError("no token with two splits")


REFUSED = {
    "normalizer Lowercase": lambda s: s.update(normalizer={"type": "Lowercase"}),
    "lstrip=true": _add_token("<lst>", lstrip=True),
    "single_word=true": _add_token("<sw>", single_word=True),
    "is a prefix of": _add_token("<s>x"),
    "added tokens 'a<s>b' and '<s>' overlap": _add_token("a<s>b", normalized=True),
    "ids do not increase with merge order": _swap_ids,
    "neither one per token nor every split": _extra_merge,
    "has id 5000 in the file, hf gives": _add_token("<new>", id=5000),
    "model dropout": lambda s: s["model"].update(dropout=0.1),
    "model unk_token": lambda s: s["model"].update(unk_token="<s>"),
    "continuing_subword_prefix": lambda s: s["model"].update(continuing_subword_prefix="##"),
    "post_processor RobertaProcessing": lambda s: s.update(
        post_processor={
            "type": "RobertaProcessing",
            "sep": ["</s>", 1],
            "cls": ["<s>", 0],
            "trim_offsets": True,
            "add_prefix_space": False,
        }
    ),
    "add_prefix_space=true": lambda s: s["pre_tokenizer"].update(add_prefix_space=True),
    "pre_tokenizer Whitespace": lambda s: s.update(pre_tokenizer={"type": "Whitespace"}),
    "truncation is set": lambda s: s.update(
        truncation={"direction": "Right", "max_length": 8, "strategy": "LongestFirst", "stride": 0}
    ),
}


@pytest.mark.parametrize("why", list(REFUSED))
def test_each_failed_condition_is_refused_by_name(why, hf_tokenizer_dir):
    with pytest.raises(BackendRefused, match=why):
        TiktokenEncoder(_variant(hf_tokenizer_dir, REFUSED[why]))


def _bpe_json(extra: list[str], merges: list[list[str]] | None, ignore_merges: bool) -> str:
    """A byte-level BPE: the 256 bytes (id = byte), then `extra` tokens in order.

    `merges` None: every split of every token, ordered as transformers' tiktoken converter
    writes them (by the result's id, then the parts' ids), as in Llama-3 and Qwen2.
    """
    chars = sorted(byte_decoder(), key=byte_decoder().get)
    vocab = {c: i for i, c in enumerate(chars)} | {t: 256 + k for k, t in enumerate(extra)}
    if merges is None:
        splits = [[t[:k], t[k:]] for t in vocab for k in range(1, len(t))]
        splits = [m for m in splits if m[0] in vocab and m[1] in vocab]
        merges = sorted(splits, key=lambda m: (vocab[m[0] + m[1]], vocab[m[0]], vocab[m[1]]))
    model = {
        "type": "BPE",
        "dropout": None,
        "unk_token": None,
        "continuing_subword_prefix": None,
        "end_of_word_suffix": None,
        "fuse_unk": False,
        "byte_fallback": False,
        "ignore_merges": ignore_merges,
        "vocab": vocab,
        "merges": merges,
    }
    pre = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return json.dumps(
        {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [],
            "normalizer": None,
            "pre_tokenizer": pre,
            "post_processor": None,
            "decoder": None,
            "model": model,
        }
    )


def _abc_json() -> str:
    """Merges b+c, a+b, ab+c: hf stops at [a, bc] on "abc", tiktoken would join a+bc -> abc."""
    return _bpe_json(["bc", "ab", "abc"], [["b", "c"], ["a", "b"], ["ab", "c"]], False)


def test_a_token_its_own_merges_do_not_reach_is_refused_and_would_differ():
    js = _abc_json()
    assert HfEncoder(js).encode_flat(["abc"], False)[0].tolist() == [ord("a"), 256]
    ranks = {bytes([b]): b for b in range(256)} | {b"bc": 256, b"ab": 257, b"abc": 258}
    raw = tiktoken.Encoding(
        "raw", pat_str=tt.GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={}
    )
    assert raw.encode_ordinary("abc") == [258]  # what skipping the condition would give
    with pytest.raises(BackendRefused, match=r"'abc' .* encodes to \[97, 256\] by hf's merges"):
        TiktokenEncoder(js)


def test_a_converted_vocabulary_within_the_tie_conditions_is_identical():
    """Every split a merge, ignore_merges (Llama-3's form); "abc" has two splits."""
    import itertools

    js = _bpe_json(["ab", "bc", "abc", "ca", "abca"], None, True)
    fast = TiktokenEncoder(js)
    texts = ["".join(p) for n in range(1, 8) for p in itertools.product("abc ", repeat=n)]
    assert first_mismatch(HfEncoder(js), fast, texts) is None


@pytest.mark.parametrize(
    "extra,why",
    [
        (["ba", "ab", "aba"], "'aba': overlapping splits .* merged right one first"),
        (["ab", "bc", "abca", "abc"], "'abca' .* contains 'abc' .* with a smaller id"),
    ],
)
def test_a_converted_vocabulary_outside_the_tie_conditions_is_refused(extra, why):
    with pytest.raises(BackendRefused, match=why):
        TiktokenEncoder(_bpe_json(extra, None, True))


def test_the_converted_conftest_tokenizer_is_refused(hf_tokenizer_dir):
    """The conftest tokenizer rewritten as transformers' tiktoken converter writes merges."""
    spec = json.loads(_json("conftest", hf_tokenizer_dir)[0])
    added = {t["id"] for t in spec["added_tokens"]}
    vocab = {t: i for t, i in spec["model"]["vocab"].items() if i not in added}
    splits = [[t[:k], t[k:]] for t in vocab for k in range(1, len(t))]
    splits = [m for m in splits if m[0] in vocab and m[1] in vocab]
    spec["model"]["merges"] = sorted(splits, key=lambda m: (vocab["".join(m)], vocab[m[0]]))
    spec["model"]["ignore_merges"] = True
    with pytest.raises(BackendRefused, match="splits"):
        TiktokenEncoder(json.dumps(spec))


def test_verdict_is_cached_by_sha256_and_used_on_the_second_load(hf_tokenizer_dir, monkeypatch):
    rust_json = _json("conftest", hf_tokenizer_dir)[0]
    TiktokenEncoder(rust_json)
    assert len(list(tt.cache_dir().glob("*.json"))) == 1

    def expensive(*a):
        raise AssertionError("checked again")

    monkeypatch.setattr(tt, "merge_conditions", expensive)
    monkeypatch.setattr(TiktokenEncoder, "_uncovered", expensive)
    fast = TiktokenEncoder(rust_json)  # from the cache
    assert first_mismatch(HfEncoder(rust_json), fast, ["cached"]) is None
    with pytest.raises(AssertionError, match="checked again"):  # another file: checked
        TiktokenEncoder(rust_json.replace('"<s>"', '"<S>"'))


def test_refusal_is_cached_too(hf_tokenizer_dir, monkeypatch):
    js = _variant(hf_tokenizer_dir, _swap_ids)
    with pytest.raises(BackendRefused, match="merge order"):
        TiktokenEncoder(js)
    monkeypatch.setattr(tt, "merge_conditions", lambda spec: None)
    with pytest.raises(BackendRefused, match="merge order"):
        TiktokenEncoder(js)


def test_cache_write_failure_does_not_fail(hf_tokenizer_dir, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    rust_json = _json("conftest", hf_tokenizer_dir)[0]
    assert first_mismatch(HfEncoder(rust_json), TiktokenEncoder(rust_json), ["text"]) is None


def test_an_added_token_inside_another_is_matched_as_hf_does(hf_tokenizer_dir):
    """Not a prefix: both find the leftmost start first, so no refusal is needed."""
    js = _variant(hf_tokenizer_dir, _add_token("<|a</s>b|>"))
    fast = TiktokenEncoder(js)
    texts = ["<|a</s>b|>", "x<|a</s>b|></s>", "<|a</s>", "</s>b|>", "<|a<|a</s>b|>b|>"]
    assert first_mismatch(HfEncoder(js), fast, texts) is None
    assert fast.encode_flat(["<|a</s>b|>"], False)[0].tolist() == [fast.added["<|a</s>b|>"]]


def test_tiktoken_backend_end_to_end_writes_hf_bytes(tmp_path, hf_tokenizer_dir, texts, capsys):
    from atelier.cli.main import main

    src = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in texts] + [{"text": ""}])
    for backend in ("hf", "tiktoken"):
        argv = [
            "llm",
            "preprocess",
            "--input",
            str(src),
            "--output-prefix",
            str(tmp_path / backend),
            "--tokenizer-name-or-path",
            str(hf_tokenizer_dir),
            "--tokenizer-backend",
            backend,
            "--append-eod",
            "--workers",
            "2",
        ]
        assert main(argv) == 0
        assert f"tokenizer backend  {backend}" in capsys.readouterr().out
    assert files_bytes(tmp_path / "hf", ["text"]) == files_bytes(tmp_path / "tiktoken", ["text"])


def test_auto_picks_tiktoken_when_fastokens_is_missing(hf_tokenizer_dir, monkeypatch):
    monkeypatch.setattr(backends, "available", lambda name: name == "tiktoken")
    loaded = load_tokenizer(TokenizerSpec(name_or_path=str(hf_tokenizer_dir)))
    chosen, notice = choose_backend(loaded, "auto", ["plain text"])
    assert chosen.backend == "tiktoken" and notice is None


def test_auto_falls_back_to_hf_naming_both_refusals(hf_tokenizer_dir, monkeypatch):
    loaded = load_tokenizer(TokenizerSpec(name_or_path=str(hf_tokenizer_dir)))
    js = _variant(hf_tokenizer_dir, lambda s: s.update(normalizer={"type": "Lowercase"}))
    from dataclasses import replace

    def refuse(rust_json):
        raise BackendRefused("test refusal")

    monkeypatch.setitem(
        backends.FAST_BACKENDS, "fastokens", backends.FastBackend("json", refuse, "")
    )
    chosen, notice = choose_backend(replace(loaded, rust_json=js), "auto", [])
    assert chosen.backend == "hf"
    assert "tiktoken cannot load this tokenizer (normalizer Lowercase" in notice
