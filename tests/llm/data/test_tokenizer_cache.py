"""A tokenizer folder loaded once is read back, unchanged, until any of its files changes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from atelier.llm.data import tokenizer_cache
from atelier.llm.data.tokenizer import TokenizerSpec, load_tokenizer

SRC = Path(__file__).parents[3] / "src"

CHILD = """
import sys
from atelier.llm.data.tokenizer import TokenizerSpec, load_tokenizer
loaded = load_tokenizer(TokenizerSpec(name_or_path=sys.argv[1]))
print(repr(loaded))
print("transformers imported" if "transformers" in sys.modules else "no transformers")
"""


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("ATELIER_TOKENIZER_CACHE", raising=False)
    return tmp_path / "cache" / "atelier" / "tokenizers"


@pytest.fixture
def folder(tmp_path, hf_tokenizer_dir) -> Path:
    return Path(shutil.copytree(hf_tokenizer_dir, tmp_path / "tok"))


def _child(folder: Path, cache: Path) -> list[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache.parents[1])}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder)], capture_output=True, text=True, env=env,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.splitlines()


def test_second_load_is_the_first_without_transformers(folder, cache):
    first = _child(folder, cache)
    assert first[1] == "transformers imported"
    assert len(list(cache.glob("*.json"))) == 1
    second = _child(folder, cache)
    assert second == [first[0], "no transformers"]


def test_an_edited_file_is_a_fresh_load(folder, cache):
    before = load_tokenizer(TokenizerSpec(name_or_path=str(folder)))
    assert before.bos is not None
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["eos_token"] = cfg["bos_token"]  # what transformers reports changes
    cfg_path.write_text(json.dumps(cfg))
    after = load_tokenizer(TokenizerSpec(name_or_path=str(folder)))
    assert after.eos == before.bos != before.eos
    assert len(list(cache.glob("*.json"))) == 2


def test_a_new_file_in_the_folder_is_a_fresh_load(folder, cache):
    load_tokenizer(TokenizerSpec(name_or_path=str(folder)))
    (folder / "chat_template.jinja").write_text("{{ messages }}")
    load_tokenizer(TokenizerSpec(name_or_path=str(folder)))
    assert len(list(cache.glob("*.json"))) == 2


def test_a_damaged_entry_is_ignored_and_rewritten(folder, cache):
    want = load_tokenizer(TokenizerSpec(name_or_path=str(folder)))
    (entry,) = cache.glob("*.json")
    for damage in ("{not json", json.dumps({"rust_json": "x"}), ""):
        entry.write_text(damage)
        assert load_tokenizer(TokenizerSpec(name_or_path=str(folder))) == want
        assert tokenizer_cache.read(entry.stem, type(want)) == want


def test_off_switch_writes_nothing(folder, cache, monkeypatch):
    monkeypatch.setenv("ATELIER_TOKENIZER_CACHE", "0")
    load_tokenizer(TokenizerSpec(name_or_path=str(folder)))
    assert not cache.exists()


def test_unwritable_cache_only_costs_the_load(folder, tmp_path, monkeypatch):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    loaded = load_tokenizer(TokenizerSpec(name_or_path=str(folder)))
    assert loaded.rust_json and blocker.read_text().startswith("a file")


def test_old_entries_pruned_and_nothing_else_touched(folder, cache, monkeypatch):
    monkeypatch.setattr(tokenizer_cache, "KEEP", 2)
    cache.mkdir(parents=True)
    theirs = cache / "notes.json"
    theirs.write_text("someone else's file")
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    for i in range(4):
        cfg["model_max_length"] = 1000 + i
        cfg_path.write_text(json.dumps(cfg))
        load_tokenizer(TokenizerSpec(name_or_path=str(folder)))
    ours = [p for p in cache.glob("*.json") if p != theirs]
    assert len(ours) == 2 and theirs.read_text() == "someone else's file"


def test_weights_are_keyed_by_size_and_mtime_not_read(folder, cache, monkeypatch):
    weights = folder / "model.safetensors"
    weights.write_bytes(b"\0" * 1024)
    key = tokenizer_cache.folder_key(folder, True)
    read_bytes = Path.read_bytes

    def no_weights(p: Path) -> bytes:
        assert p.name != "model.safetensors", "weights were read"
        return read_bytes(p)

    monkeypatch.setattr(Path, "read_bytes", no_weights)
    assert tokenizer_cache.folder_key(folder, True) == key
    os.utime(weights, ns=(1, 1))
    assert tokenizer_cache.folder_key(folder, True) != key
    assert tokenizer_cache.folder_key(folder, False) != tokenizer_cache.folder_key(folder, True)


def test_a_copy_elsewhere_is_its_own_entry(folder, cache, tmp_path):
    """A load may name its folder (a slow tokenizer's `slow_path`): never another's."""
    load_tokenizer(TokenizerSpec(name_or_path=str(folder)))
    copy = Path(shutil.copytree(folder, tmp_path / "copy"))
    assert tokenizer_cache.folder_key(copy, True) != tokenizer_cache.folder_key(folder, True)
    load_tokenizer(TokenizerSpec(name_or_path=str(copy)))
    assert len(list(cache.glob("*.json"))) == 2
