"""Mel parity with the official audio.py, re-implemented here step by step.

The reference follows the official code literally (scipy lfilter pre-emphasis,
librosa.stft, librosa.filters.mel, _amp_to_db, symmetric _normalize with clipping)
and shares nothing with atelier.lipsync.audio but the hyperparameter values.
"""

from __future__ import annotations

import librosa
import numpy as np
import pytest
from scipy import signal

from atelier.lipsync.audio import mel_chunks, melspectrogram
from atelier.lipsync.hparams import load_hparams


def official_mel(wav: np.ndarray, pad_mode: str) -> np.ndarray:
    emph = signal.lfilter([1, -0.97], [1], wav)
    d = librosa.stft(y=emph, n_fft=800, hop_length=200, win_length=800, pad_mode=pad_mode)
    basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    mel = np.dot(basis, np.abs(d))
    min_level = np.exp(-100 / 20 * np.log(10))
    s = 20 * np.log10(np.maximum(min_level, mel)) - 20
    return np.clip(8 * ((s - -100) / 100) - 4, -4, 4)


def fixed_signal() -> np.ndarray:
    rng = np.random.default_rng(1234)
    t = np.arange(16000 * 2) / 16000
    wav = 0.4 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))
    wav += 0.2 * np.sin(2 * np.pi * 1730 * t**1.3) + 0.05 * rng.standard_normal(t.size)
    wav[8000:9000] = 0.0  # a silent stretch hits the -100 dB floor and the clip
    return wav.astype(np.float32)


@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
def test_mel_matches_official_pipeline(pad_mode: str) -> None:
    wav = fixed_signal()
    hp = load_hparams(stft_pad_mode=pad_mode)
    ours = melspectrogram(wav, hp)
    ref = official_mel(wav, pad_mode)
    assert ours.shape == ref.shape == (80, wav.size // 200 + 1)
    assert np.abs(ours - ref).max() < 1e-4
    assert ours.min() >= -4 and ours.max() <= 4


def test_mel_chunks_follow_official_indexing() -> None:
    hp = load_hparams()
    mel = np.arange(80 * 161, dtype=np.float32).reshape(80, 161)  # 2 s of audio
    chunks = mel_chunks(mel, 25.0, hp)
    assert all(c.shape == (80, 16) for c in chunks)
    assert np.array_equal(chunks[1], mel[:, 3:19])  # int(1 * 80 / 25) = 3
    assert np.array_equal(chunks[-1], mel[:, -16:])
    with pytest.raises(ValueError, match="too short"):
        mel_chunks(mel[:, :10], 25.0, hp)


def test_hparams_defaults_and_overrides(tmp_path) -> None:
    from atelier.core.errors import AtelierError

    hp = load_hparams()
    assert (hp.num_mels, hp.n_fft, hp.hop_size, hp.win_size, hp.sample_rate) == (
        80, 800, 200, 800, 16000
    )  # fmt: skip
    assert (hp.fmin, hp.fmax, hp.img_size, hp.fps, hp.syncnet_T) == (55, 7600, 96, 25, 5)
    assert (hp.batch_size, hp.syncnet_batch_size, hp.disc_wt) == (16, 64, 0.07)
    assert (hp.checkpoint_interval, hp.syncnet_eval_interval) == (3000, 10000)
    y = tmp_path / "hp.yaml"
    y.write_text("batch_size: 4\nsyncnet_lr: 0.001\n")
    hp2 = load_hparams(y, batch_size=2, eval_interval=None)
    assert (hp2.batch_size, hp2.syncnet_lr, hp2.eval_interval) == (2, 0.001, 3000)
    y.write_text("batch_sise: 4\n")
    with pytest.raises(AtelierError, match="batch_sise"):
        load_hparams(y)
