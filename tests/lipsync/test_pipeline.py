"""Preprocess -> filelists -> train-syncnet -> train (and --disc) on real tiny media."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from atelier.lipsync.checkpoint import load_state_dict
from atelier.lipsync.hparams import HParams
from atelier.lipsync.media import read_audio
from atelier.lipsync.preprocess import PreprocessConfig, preprocess, split_filelists
from atelier.lipsync.train_syncnet import TrainConfig, syncnet_step, train_syncnet
from atelier.lipsync.train_wav2lip import Wav2LipTrainConfig, train_wav2lip


def test_preprocess_layout_report_and_resume(lrs2_root: Path, preprocessed: Path) -> None:
    vid = preprocessed / "spk1" / "00001"
    jpgs = sorted(int(p.stem) for p in vid.glob("*.jpg"))
    assert "7.jpg" not in {p.name for p in vid.glob("*.jpg")}  # the blank frame has no crop
    assert len(jpgs) >= 20 and max(jpgs) <= 29
    wav = read_audio(vid / "audio.wav", 16000)
    assert abs(wav.size / 16000 - 1.2) < 0.05 and np.abs(wav).max() > 0.1
    report = json.loads((preprocessed / "preprocess_report.json").read_text())
    assert 7 in next(r for r in report if r["name"] == "spk1/00001")["without_face"]
    train = (preprocessed / "filelists" / "train.txt").read_text().split()
    val = (preprocessed / "filelists" / "val.txt").read_text().split()
    assert sorted(train + val) == ["spk1/00001", "spk2/00002"]
    again = preprocess(PreprocessConfig(lrs2_root, preprocessed))  # resumable: nothing redone
    assert all(v.skipped for v in again.videos)


def test_split_is_seeded_and_disjoint() -> None:
    names = [f"d/{i}" for i in range(20)]
    train, val = split_filelists(names, 0.1, seed=3)
    assert (
        len(val) == 2
        and not set(train) & set(val)
        and split_filelists(names, 0.1, 3)
        == (
            train,
            val,
        )
    )


def test_syncnet_overfits_a_fixed_batch(preprocessed: Path, tiny_hp: HParams) -> None:
    from atelier.lipsync.dataset import SyncDataset, read_filelist
    from atelier.lipsync.models import SyncNet_color

    torch.manual_seed(0)
    ds = SyncDataset(read_filelist(preprocessed, "train", None), tiny_hp, seed=0)
    items = [ds[0] for _ in range(4)]
    batch = tuple(torch.stack(t) for t in zip(*items, strict=True))
    model = SyncNet_color()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = [syncnet_step(model, opt, batch, torch.device("cpu")) for _ in range(6)]
    assert all(np.isfinite(losses)) and losses[-1] < 0.8 * losses[0], losses


def test_train_syncnet_checkpoints_and_resume(
    preprocessed: Path, tiny_hp: HParams, tmp_path: Path
) -> None:
    hp = tiny_hp.replace(syncnet_eval_interval=1)
    cfg = TrainConfig(preprocessed, tmp_path, hparams=hp, max_steps=1, seed=0, device="cpu")
    result = train_syncnet(cfg)
    assert result.global_step == 1 and all(np.isfinite(result.losses))
    assert [p.name for p in result.checkpoints] == ["checkpoint_step000000001.pth"]
    assert result.eval_losses and result.eval_losses[0][0] == 1
    ckpt = torch.load(result.checkpoints[-1], map_location="cpu", weights_only=False)
    assert set(ckpt) == {"state_dict", "optimizer", "global_step", "global_epoch"}
    assert ckpt["global_step"] == 1 and ckpt["optimizer"] is not None
    resumed = train_syncnet(
        TrainConfig(
            preprocessed, tmp_path, result.checkpoints[-1], tiny_hp, "cpu", max_steps=2, seed=1
        )
    )
    assert resumed.global_step == 2 and len(resumed.losses) == 1
    assert resumed.checkpoints[-1].name == "checkpoint_step000000002.pth"


def test_train_wav2lip_and_disc(preprocessed: Path, tiny_hp: HParams, tmp_path: Path) -> None:
    from atelier.lipsync.models import SyncNet_color, Wav2Lip

    expert = tmp_path / "expert.pth"
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in SyncNet_color().state_dict().items()}}, expert
    )
    hp = tiny_hp.replace(save_optimizer_state=False)
    result = train_wav2lip(
        Wav2LipTrainConfig(
            preprocessed, tmp_path / "w2l", hparams=hp, max_steps=1, seed=0, device="cpu",
            syncnet_checkpoint_path=expert,
        )
    )  # fmt: skip
    assert result.global_step == 1 and all(np.isfinite(result.losses))
    assert [s for s, _ in result.eval_losses] == [1]  # wav2lip_train.py evaluates at step 1
    assert (tmp_path / "w2l" / "samples_step000000000").is_dir()
    assert set(load_state_dict(result.checkpoints[-1])) == set(Wav2Lip().state_dict())
    gan = train_wav2lip(
        Wav2LipTrainConfig(
            preprocessed, tmp_path / "gan", hparams=hp, max_steps=1, seed=0, device="cpu",
            syncnet_checkpoint_path=expert, disc=True,
        )
    )  # fmt: skip
    assert gan.global_step == 1 and np.isfinite(gan.losses[0])
    assert (tmp_path / "gan" / "disc_checkpoint_step000000001.pth").is_file()


def test_filelist_entries_that_cannot_train_fail_fast(preprocessed: Path, tmp_path: Path) -> None:
    """A stale or hand-made filelist: missing folders are named now, not after 2000 tries."""
    import pytest

    from atelier.core.errors import AtelierError
    from atelier.lipsync.dataset import read_filelist

    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.txt").write_text("spk1/00001\nspk9/gone\n")
    assert read_filelist(preprocessed, "train", lists) == [preprocessed / "spk1" / "00001"]
    (lists / "val.txt").write_text("spk9/gone\n")
    with pytest.raises(AtelierError, match=r"spk9/gone \(no .*audio\.wav\)"):
        read_filelist(preprocessed, "val", lists)
