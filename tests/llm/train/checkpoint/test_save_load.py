"""Training checkpoints with the engine: hf2mg's bytes, megatron-core loads them, an exact
resume after kill -9, TP=2 and FSDP2 (DP=2) under gloo, SIGTERM saves."""

from __future__ import annotations

import argparse
import filecmp
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from atelier.llm.train.checkpoint.layout import MARKER, TRAIN_STATE, read_tracker

from .conftest import run_worker

RANK = "iter_{:07d}/mp_rank_{:02d}/model_optim_rng.pt"


def _rank(save: Path, it: int, tp: int = 0) -> Path:
    return save / RANK.format(it, tp)


def _model(path: Path) -> dict[str, torch.Tensor]:
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, weights_only=True)["model"]


def _same_weights(a: Path, b: Path) -> bool:
    x, y = _model(a), _model(b)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_untrained_save_is_byte_identical_to_hf2mg(converted, tmp_path: Path, family) -> None:
    mg = converted(family)
    run_worker(tmp_path, mg, 1, 1, f"bytes:{tmp_path / 'out'}")
    out = tmp_path / "out"
    assert filecmp.cmp(_rank(out, 1), _rank(mg, 1), shallow=False)
    assert read_tracker(out) == 1
    assert (out / "iter_0000001" / MARKER).is_file()
    assert (out / "iter_0000001" / TRAIN_STATE / ".metadata").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_resume_after_kill_9_equals_uninterrupted(converted, tmp_path: Path) -> None:
    """hf2mg output is iteration 1 (as Megatron's converters write it): iterations 2..5,
    saves at 2, 4 and the end. A run killed with -9 after iteration 3 (before its save at 4)
    restarts from iteration 2 with the same command and ends bit-identical."""
    mg, a, b = converted("llama"), tmp_path / "a", tmp_path / "b"
    full = run_worker(tmp_path, mg, 1, 1, f"train:{a}:5")[0][f"train:{a}:5"]
    assert full["it"] == 5 and len(full["losses"]) == 4
    run_worker(tmp_path, mg, 1, 1, f"train:{b}:5:3", rc=-9)
    assert read_tracker(b) == 2
    again = run_worker(tmp_path, mg, 1, 1, f"train:{b}:5")[0][f"train:{b}:5"]
    assert again["losses"] == full["losses"][1:]  # iterations 3, 4, 5: bit-identical
    assert _same_weights(_rank(a, 5), _rank(b, 5))
    assert (a / "hf_assets" / "config.json").is_file()  # mg2hf a gives a complete folder


def test_sigterm_finishes_the_step_saves_and_stops(converted, tmp_path: Path) -> None:
    mg, save = converted("llama"), tmp_path / "s"
    res = run_worker(tmp_path, mg, 1, 1, f"train:{save}:9:-3")[0][f"train:{save}:9:-3"]
    assert res["stop"] == "hook" and res["it"] == 3
    assert read_tracker(save) == 3 and (save / "iter_0000003" / TRAIN_STATE).is_dir()


def test_tp2_bytes_and_resume(converted, tmp_path: Path) -> None:
    """Two gloo processes, TP=2 (DTensor): untrained rank files equal hf2mg's T=2 files (the
    model was read from a T=1 checkpoint, resharded in memory); resuming from a save
    continues bit-identically."""
    tp1, tp2, a, b = converted("llama", 1), converted("llama", 2), tmp_path / "a", tmp_path / "b"
    jobs = [f"bytes:{tmp_path / 'bytes'}", f"train:{a}:4", f"train:{b}:4:0:2:{a}"]
    res = run_worker(tmp_path, tp1, 2, 2, *jobs)
    for r in range(2):
        assert filecmp.cmp(_rank(tmp_path / "bytes", 1, r), _rank(tp2, 1, r), shallow=False)
        full, again = res[r][jobs[1]]["losses"], res[r][jobs[2]]["losses"]
        assert again == full[1:]
        assert _same_weights(_rank(a, 4, r), _rank(b, 4, r))


def test_dp2_fsdp2_bytes_and_resume(converted, tmp_path: Path) -> None:
    """FSDP2 over two data-parallel ranks (tied embeddings, QKV bias): one rank file, equal
    to hf2mg's; resume (optimizer state sharded through DCP) continues bit-identically."""
    mg, a, b = converted("qwen2"), tmp_path / "a", tmp_path / "b"
    jobs = [f"bytes:{tmp_path / 'bytes'}", f"train:{a}:4", f"train:{b}:4:0:2:{a}"]
    res = run_worker(tmp_path, mg, 1, 2, *jobs)
    assert filecmp.cmp(_rank(tmp_path / "bytes", 1), _rank(mg, 1), shallow=False)
    assert not (tmp_path / "bytes" / "iter_0000001" / "mp_rank_01").exists()
    assert res[0][jobs[2]]["losses"] == res[0][jobs[1]]["losses"][1:]
    assert _same_weights(_rank(a, 4), _rank(b, 4))


def test_megatron_core_loads_trained_rank_files_strictly(converted, tmp_path: Path) -> None:
    pytest.importorskip("megatron.core")
    files = []
    for family in ("llama", "qwen2"):
        save = tmp_path / family
        run_worker(tmp_path, converted(family), 1, 1, f"train:{save}:2")
        files.append(str(_rank(save, 2)))
    script = Path(__file__).parents[2] / "convert" / "megatron_core_load.py"
    proc = subprocess.run(
        [sys.executable, str(script), *files], capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-2:] == ["missing=[] unexpected=[] shapes_ok=True"] * 2
