"""Mel spectrogram exactly as the official `audio.py` computes it.

Pre-emphasis (0.97), magnitude STFT (n_fft 800, hop 200, win 800, Hann, centred),
Slaney mel basis (80 bands, 55-7600 Hz), dB with a -100 dB floor minus 20 dB
reference, then symmetric normalisation clipped to [-4, 4]. Any drift here shifts
every input the published checkpoints see, so the test compares it to an
independent re-implementation to 1e-4.
"""

from __future__ import annotations

import functools

import numpy as np

from atelier.lipsync.hparams import HParams


@functools.lru_cache(maxsize=4)
def mel_basis(sample_rate: int, n_fft: int, num_mels: int, fmin: float, fmax: float) -> np.ndarray:
    import librosa

    if fmax > sample_rate // 2:
        raise ValueError(f"fmax {fmax} is above the Nyquist frequency of {sample_rate} Hz")
    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=num_mels, fmin=fmin, fmax=fmax)


def preemphasis(wav: np.ndarray, k: float) -> np.ndarray:
    """y[n] = x[n] - k x[n-1] (what scipy.signal.lfilter([1, -k], [1], x) computes)."""
    out = np.empty_like(wav, dtype=np.float64)
    out[0] = wav[0]
    out[1:] = wav[1:] - k * wav[:-1]
    return out


def melspectrogram(wav: np.ndarray, hp: HParams) -> np.ndarray:
    """(num_mels, frames) float32; frames = len(wav) // hop_size + 1."""
    import librosa

    wav = np.asarray(wav, dtype=np.float64)
    if wav.ndim != 1 or wav.size == 0:
        raise ValueError("melspectrogram expects a non-empty mono signal")
    if hp.preemphasize:
        wav = preemphasis(wav, hp.preemphasis)
    spec = np.abs(
        librosa.stft(
            y=wav,
            n_fft=hp.n_fft,
            hop_length=hp.hop_size,
            win_length=hp.win_size,
            pad_mode=hp.stft_pad_mode,
        )
    )
    basis = mel_basis(hp.sample_rate, hp.n_fft, hp.num_mels, hp.fmin, hp.fmax)
    mel = basis @ spec
    min_level = np.exp(hp.min_level_db / 20 * np.log(10))
    db = 20 * np.log10(np.maximum(min_level, mel)) - hp.ref_level_db
    if hp.signal_normalization:
        db = normalize(db, hp)
    return db.astype(np.float32)


def normalize(db: np.ndarray, hp: HParams) -> np.ndarray:
    scaled = (db - hp.min_level_db) / (-hp.min_level_db)
    if hp.symmetric_mels:
        out = (2 * hp.max_abs_value) * scaled - hp.max_abs_value
        low = -hp.max_abs_value
    else:
        out = hp.max_abs_value * scaled
        low = 0.0
    if hp.allow_clipping_in_normalization:
        out = np.clip(out, low, hp.max_abs_value)
    return out


def mel_frames_per_second(hp: HParams) -> float:
    """80 mel frames per second at the defaults (16000 / 200)."""
    return hp.sample_rate / hp.hop_size


def mel_chunks(mel: np.ndarray, fps: float, hp: HParams) -> list[np.ndarray]:
    """One (num_mels, mel_step) window per output video frame, as official inference cuts them.

    Frame i starts at int(i * 80 / fps); the last window is aligned to the end.
    """
    step = hp.syncnet_mel_step_size
    if mel.shape[1] < step:
        raise ValueError(f"audio too short: {mel.shape[1]} mel frames, need at least {step}")
    mult = mel_frames_per_second(hp) / fps
    chunks = []
    i = 0
    while True:
        start = int(i * mult)
        if start + step > mel.shape[1]:
            chunks.append(mel[:, mel.shape[1] - step :])
            break
        chunks.append(mel[:, start : start + step])
        i += 1
    return chunks
