"""Tiny real media, made once per test session: two 1.2 s clips of a moving real face."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from atelier.lipsync.hparams import HParams, load_hparams

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)  # one thread per xdist worker: no oversubscription on 2 cores


@pytest.fixture(scope="session")
def lrs2_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from atelier.lipsync.synthetic import make_face_video

    root = tmp_path_factory.mktemp("lrs2") / "main"
    make_face_video(root / "spk1" / "00001.mp4", 1.2, 25, 240, 180, no_face=[7])
    make_face_video(root / "spk2" / "00002.mp4", 1.2, 25, 240, 180)
    return root


@pytest.fixture(scope="session")
def preprocessed(lrs2_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from atelier.lipsync.preprocess import PreprocessConfig, preprocess

    out = tmp_path_factory.mktemp("pre")
    preprocess(PreprocessConfig(lrs2_root, out, make_filelists=True, val_ratio=0.5))
    return out


@pytest.fixture
def tiny_hp() -> HParams:
    """Small batches, no workers, eval/checkpoint every couple of steps: seconds on CPU."""
    return load_hparams(
        syncnet_batch_size=2,
        batch_size=2,
        num_workers=0,
        syncnet_eval_interval=2,
        syncnet_eval_steps=0,
        syncnet_checkpoint_interval=2,
        eval_interval=2,
        eval_steps=0,
        disc_eval_steps=0,
        checkpoint_interval=2,
    )
