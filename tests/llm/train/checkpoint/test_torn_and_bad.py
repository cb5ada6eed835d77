"""A save that dies never becomes latest; retention; every bad `load`/`save` is one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from atelier.core.errors import AtelierError
from atelier.llm.train.checkpoint import (
    Ranks,
    SaveRequest,
    check_no_foreign_iterations,
    check_save_dir,
    checkpoint_args,
    resolve_load,
    resume_state,
    save_checkpoint,
    saved_iterations,
)
from atelier.llm.train.checkpoint import save as save_mod
from atelier.llm.train.checkpoint.layout import read_tracker

KILL_SCRIPT = """
import os, signal, sys
from pathlib import Path
import torch
sys.path.insert(0, {root!r})
from tests.llm.train.checkpoint.test_torn_and_bad import setup, save_at
from atelier.llm.train.checkpoint import save as save_mod
src, model, opt = setup(Path({load!r}))
save_at(Path({save!r}), 1, src, model, opt)
def die(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)  # kill -9 after the rank file, before train_state
save_mod.save_train_state = die
save_at(Path({save!r}), 2, src, model, opt)
"""


def setup(load: Path):
    """A plain (one-process, unsharded) engine model; its weights do not matter here."""
    from atelier.llm.train.model.args import args_from_meta
    from atelier.llm.train.model.decoder import GPTModel

    src = resolve_load(load)
    model = GPTModel(args_from_meta(src.meta, tp=1, divisible_by=128))
    return src, model, torch.optim.AdamW(model.parameters())


def save_at(save: Path, it: int, src, model, opt, keep: int | None = None) -> Path:
    args = checkpoint_args(src.meta, tp=1, iteration=it)
    req = SaveRequest(save, it, it, args, src.meta.dtype, src.meta, {"it": it}, keep=keep)
    return save_checkpoint(req, model, opt, Ranks())


def test_kill_9_during_save_leaves_previous_latest(converted, tmp_path: Path) -> None:
    save = tmp_path / "save"
    root = str(Path(__file__).parents[4])
    code = KILL_SCRIPT.format(root=root, load=str(converted("llama")), save=str(save))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert read_tracker(save) == 1
    assert sorted(saved_iterations(save)) == [1]
    torn = [p for p in save.iterdir() if p.name.startswith(".iter_0000002")]
    assert torn and (torn[0] / "mp_rank_00" / "model_optim_rng.pt").is_file()  # it was mid-save
    src = resolve_load(None, save=save)
    assert src.iteration == 1 and src.it_dir == save / "iter_0000001"


def test_failed_save_is_removed_and_raises(converted, tmp_path: Path, monkeypatch) -> None:
    src, model, opt = setup(converted("llama"))
    save_at(tmp_path, 1, src, model, opt)

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(save_mod, "save_train_state", boom)
    with pytest.raises(OSError):
        save_at(tmp_path, 2, src, model, opt)
    assert read_tracker(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "iter_0000001",
        "latest_checkpointed_iteration.txt",
    ]


def test_save_total_limit_prunes_only_its_own(converted, tmp_path: Path) -> None:
    mg = converted("llama")
    src, model, opt = setup(mg)
    shutil.copytree(mg / "iter_0000001", tmp_path / "iter_0000000")  # not ours: never deleted
    for it in range(1, 5):
        save_at(tmp_path, it, src, model, opt, keep=2)
    assert sorted(saved_iterations(tmp_path)) == [0, 3, 4]
    assert read_tracker(tmp_path) == 4


def test_foreign_iteration_is_never_overwritten(converted, tmp_path: Path) -> None:
    mg = tmp_path / "mg"
    shutil.copytree(converted("llama"), mg)
    before = (mg / "iter_0000001" / "mp_rank_00" / "model_optim_rng.pt").read_bytes()
    src, model, opt = setup(mg)
    with pytest.raises(AtelierError, match="not written by atelier llm train"):
        check_no_foreign_iterations(mg, 0, 10)
    with pytest.raises(AtelierError, match="not written by atelier llm train"):
        save_at(mg, 1, src, model, opt)
    assert (mg / "iter_0000001" / "mp_rank_00" / "model_optim_rng.pt").read_bytes() == before
    check_no_foreign_iterations(mg, 1, 10)  # a run starting after it never saves there


def test_resume_prefers_own_save_and_finetune_resets(converted, tmp_path: Path) -> None:
    mg = converted("llama")
    src, model, opt = setup(mg)
    save_at(tmp_path, 3, src, model, opt)
    got = resolve_load(mg, save=tmp_path)
    assert got.it_dir == tmp_path / "iter_0000003" and got.has_train_state
    assert resume_state(got, model, opt, Ranks()).loop_state == {"it": 3}
    assert resume_state(got, model, opt, Ranks(), finetune=True).iteration == 0
    no_optim = resume_state(got, model, opt, Ranks(), no_load_optim=True)
    assert no_optim.iteration == 3 and no_optim.loop_state is None
    plain = resolve_load(mg)  # hf2mg output: weights only, Megatron's iteration 1
    assert not plain.has_train_state
    assert resume_state(plain, model, opt, Ranks()).iteration == 1
    with pytest.raises(AtelierError, match=r"TP=1, this run has TP=2.*no-load-optim"):
        resume_state(got, model, opt, Ranks(tp=2))
    assert resolve_load(mg, save=tmp_path, ckpt_step=None).iteration == 3
    assert resolve_load(tmp_path, ckpt_step=3).iteration == 3


def _one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text
    return text


def test_bad_load(converted, tmp_path: Path) -> None:
    with pytest.raises(AtelierError, match="no such folder") as e:
        resolve_load(tmp_path / "nope")
    assert "nope" in _one_line(e)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AtelierError, match=r"empty.*hf2mg"):
        resolve_load(tmp_path / "empty")
    (tmp_path / "f").write_text("x")
    with pytest.raises(AtelierError, match="is a file"):
        resolve_load(tmp_path / "f")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("x")
    with pytest.raises(AtelierError, match=r"load .*junk: not a Megatron checkpoint"):
        resolve_load(tmp_path / "junk")
    with pytest.raises(AtelierError, match=r"ckpt_step 7.*saved iterations: iter_0000001"):
        resolve_load(converted("llama"), ckpt_step=7)


def test_unsupported_family(tmp_path: Path) -> None:
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(AtelierError, match=r"unsupported architecture.*LlamaForCausalLM") as e:
        resolve_load(gpt2)
    _one_line(e)


def test_bad_save_dir(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(AtelierError, match="is a file"):
        check_save_dir(tmp_path / "file" / "sub")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    target = locked / "save"
    if os.geteuid() == 0:  # root ignores permission bits; sysfs refuses new folders to anyone
        target = Path("/sys/atelier-save-test")
    with pytest.raises(AtelierError, match="not writable") as e:
        check_save_dir(target)
    assert str(target) in _one_line(e)


def test_architecture_flags_must_agree(converted) -> None:
    from atelier.llm.train.run import check_agrees

    src = resolve_load(converted("qwen2"))  # tied embeddings, QKV bias, head_dim 8
    check_agrees({"kv_channels": 8, "add_qkv_bias": True, "rotary_base": None}, src)
    with pytest.raises(AtelierError, match=r"--kv-channels 128 differs from the checkpoint's 8"):
        check_agrees({"kv_channels": 128}, src)
    with pytest.raises(AtelierError, match=r"--untie-embeddings-and-output-weights True differs"):
        check_agrees({"untie_embeddings_and_output_weights": True}, src)
