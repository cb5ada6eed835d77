"""Training samples drawn the way the official trainers draw them.

Each item picks a random video, a random 5-frame window and a random "wrong" window,
exactly as `color_syncnet_train.py` / `wav2lip_train.py` do (so `len()` is the number
of videos and an epoch is len/batch steps). Unlike the official code, which reloads
the wav and recomputes its mel for every sample, a video's mel is computed once per
worker and cached.
"""

from __future__ import annotations

import functools
import itertools
import random
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from atelier.core.errors import AtelierError
from atelier.core.log import get_logger
from atelier.lipsync.audio import melspectrogram
from atelier.lipsync.hparams import HParams

if TYPE_CHECKING:
    import torch
    from torch.utils.data import DataLoader

log = get_logger(__name__)

MAX_TRIES = 2000


def read_filelist(
    data_root: str | Path, split: str, filelists_dir: str | Path | None, syncnet_t: int = 5
) -> list[Path]:
    """Video dirs listed in `{filelists_dir}/{split}.txt` (official: first token per line).

    Entries the trainers could never sample (folder or audio.wav missing, too few face
    crops) are dropped with a warning naming them; none left is an error now rather than
    "no usable training window after 2000 tries" later.
    """
    lists = Path(filelists_dir) if filelists_dir else Path(data_root) / "filelists"
    path = lists / f"{split}.txt"
    if not path.is_file():
        raise AtelierError(f"{path}: filelist not found (make it with preprocess --make-filelists)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise AtelierError(f"{path}: not a readable text filelist ({e})") from e
    names = [ln.split()[0] for ln in lines if ln.strip()]
    if not names:
        raise AtelierError(f"{path}: empty filelist")
    videos, dropped = [], []
    for name in names:
        video = Path(data_root) / name
        if not (video / "audio.wav").is_file():
            dropped.append(f"{name} (no {video / 'audio.wav'})")
            continue
        frames = [int(p.stem) for p in video.glob("*.jpg") if p.stem.isdigit()]
        reason = unusable_reason(frames, syncnet_t)
        if reason:
            dropped.append(f"{name} ({reason})")
            continue
        videos.append(video)
    if dropped:
        shown = "; ".join(dropped[:5]) + (" ..." if len(dropped) > 5 else "")
        log.warning(
            "%s: %d of %d entries unusable, left out: %s", path, len(dropped), len(names), shown
        )
    if not videos:
        raise AtelierError(
            f"{path}: none of its {len(names)} entries can train, e.g. {dropped[0]}; "
            f"check --data-root {data_root} (rerun preprocess --make-filelists)"
        )
    return videos


def unusable_reason(face_frames: list[int] | tuple[int, ...], syncnet_t: int) -> str | None:
    """Why the trainers could never draw a window from a video with these crops, or None.

    The same conditions `_pick`/`read_window` need: more than 3 T face frames and a run of
    T consecutive ones. preprocess leaves such videos out of the filelists (they once went
    in and training died with "no usable training window after 2000 tries").
    """
    if not face_frames:
        return "no face found in any frame"
    if len(face_frames) <= 3 * syncnet_t:
        return f"only {len(face_frames)} frame(s) with a face, training needs {3 * syncnet_t + 1}"
    ordered = sorted(face_frames)
    run = best = 1
    for a, b in itertools.pairwise(ordered):
        run = run + 1 if b == a + 1 else 1
        best = max(best, run)
    if best < syncnet_t:
        return f"no {syncnet_t} consecutive frames with a face (longest run {best})"
    return None


class _Base:
    def __init__(
        self, videos: list[Path], hp: HParams, seed: int | None = None, min_len: int = 1
    ) -> None:
        self.videos = videos
        self.min_len = min_len
        self.hp = hp
        self.rng = random.Random(seed)
        self._make_caches()

    def _make_caches(self) -> None:
        self._mel = functools.lru_cache(maxsize=64)(self._load_mel)
        self._frames = functools.lru_cache(maxsize=256)(self._list_frames)

    def __getstate__(self) -> dict:
        # Spawned loader workers (macOS, Windows) pickle the dataset; caches stay behind.
        state = self.__dict__.copy()
        del state["_mel"], state["_frames"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._make_caches()

    def __len__(self) -> int:
        # Official: one item per video. Items are drawn at random anyway, so a tiny set is
        # stretched to one full batch (a batch of 1 breaks BatchNorm in training).
        return max(len(self.videos), self.min_len)

    def _list_frames(self, video: Path) -> tuple[int, ...]:
        return tuple(sorted(int(p.stem) for p in video.glob("*.jpg") if p.stem.isdigit()))

    def _load_mel(self, video: Path) -> np.ndarray | None:
        from atelier.lipsync.media import read_audio

        try:
            wav = read_audio(video / "audio.wav", self.hp.sample_rate)
            return melspectrogram(wav, self.hp).T  # (frames, 80)
        except (AtelierError, ValueError):
            return None

    def crop_audio_window(self, mel: np.ndarray, start_frame: int) -> np.ndarray:
        start = int(self.hp.sample_rate / self.hp.hop_size * (start_frame / float(self.hp.fps)))
        return mel[start : start + self.hp.syncnet_mel_step_size, :]

    def read_window(self, video: Path, start: int, frames: set[int]) -> list[np.ndarray] | None:
        import cv2

        size = self.hp.img_size
        window = []
        for fid in range(start, start + self.hp.syncnet_T):
            if fid not in frames:
                return None
            img = cv2.imread(str(video / f"{fid}.jpg"))
            if img is None or img.size == 0:
                return None
            window.append(cv2.resize(img, (size, size)))
        return window

    def seed_worker(self, worker_id: int) -> None:
        self.rng.seed(self.rng.random() + worker_id)

    def _pick(self) -> tuple[Path, tuple[int, ...], np.ndarray, int, int] | None:
        video = self.videos[self.rng.randrange(len(self.videos))]
        frames = self._frames(video)
        if len(frames) <= 3 * self.hp.syncnet_T:
            return None
        mel = self._mel(video)
        if mel is None:
            return None
        img, wrong = self.rng.choice(frames), self.rng.choice(frames)
        while wrong == img:
            wrong = self.rng.choice(frames)
        return video, frames, mel, img, wrong

    def _exhausted(self) -> AtelierError:
        return AtelierError(
            f"no usable training window after {MAX_TRIES} tries: each video needs more than "
            f"{3 * self.hp.syncnet_T} face frames, an audio.wav, and {self.hp.syncnet_T} "
            "consecutive crops"
        )


class SyncDataset(_Base):
    """(faces lower half (15, 48, 96), mel (1, 80, 16), label (1,)): in sync or not."""

    def __getitem__(self, _: int) -> tuple[torch.Tensor, ...]:
        import torch

        for _try in range(MAX_TRIES):
            picked = self._pick()
            if picked is None:
                continue
            video, frames, mel, img, wrong = picked
            in_sync = self.rng.choice([True, False])
            chosen = img if in_sync else wrong
            window = self.read_window(video, chosen, set(frames))
            if window is None:
                continue
            m = self.crop_audio_window(mel, img)  # always the true frame's audio
            if m.shape[0] != self.hp.syncnet_mel_step_size:
                continue
            x = (np.concatenate(window, axis=2) / 255.0).transpose(2, 0, 1)
            x = x[:, x.shape[1] // 2 :]
            return (
                torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                torch.from_numpy(np.ascontiguousarray(m.T, dtype=np.float32)).unsqueeze(0),
                torch.tensor([1.0 if in_sync else 0.0]),
            )
        raise self._exhausted()


class Wav2LipDataset(_Base):
    """(x (6, T, 96, 96), indiv_mels (T, 1, 80, 16), mel (1, 80, 16), gt (3, T, 96, 96))."""

    def segmented_mels(self, mel: np.ndarray, start_frame: int) -> np.ndarray | None:
        first = start_frame + 1  # the official 0 -> 1 indexing shift
        if first - 2 < 0:
            return None
        mels = []
        for i in range(first, first + self.hp.syncnet_T):
            m = self.crop_audio_window(mel, i - 2)
            if m.shape[0] != self.hp.syncnet_mel_step_size:
                return None
            mels.append(m.T)
        return np.asarray(mels)

    def __getitem__(self, _: int) -> tuple[torch.Tensor, ...]:
        import torch

        for _try in range(MAX_TRIES):
            picked = self._pick()
            if picked is None:
                continue
            video, frames, mel, img, wrong = picked
            have = set(frames)
            window = self.read_window(video, img, have)
            wrong_window = self.read_window(video, wrong, have)
            if window is None or wrong_window is None:
                continue
            m = self.crop_audio_window(mel, img)
            if m.shape[0] != self.hp.syncnet_mel_step_size:
                continue
            indiv = self.segmented_mels(mel, img)
            if indiv is None:
                continue
            win = np.transpose(np.asarray(window) / 255.0, (3, 0, 1, 2))  # 3, T, H, W
            gt = win.copy()
            win[:, :, win.shape[2] // 2 :] = 0.0
            wrong_win = np.transpose(np.asarray(wrong_window) / 255.0, (3, 0, 1, 2))
            x = np.concatenate([win, wrong_win], axis=0)

            def t(a: np.ndarray) -> torch.Tensor:
                return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

            return t(x), t(indiv).unsqueeze(1), t(m.T).unsqueeze(0), t(gt)
        raise self._exhausted()


def make_loader(dataset: _Base, batch_size: int, workers: int, shuffle: bool = True) -> DataLoader:
    from torch.utils.data import DataLoader

    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        worker_init_fn=dataset.seed_worker if workers else None,
        persistent_workers=workers > 0,
        drop_last=shuffle and len(dataset) > batch_size,  # no size-1 BatchNorm batch
    )
