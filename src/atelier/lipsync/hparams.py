"""Hyperparameters: the official `hparams.py` values, overridable from YAML or flags.

The defaults live in `hparams.yaml` next to this file so that a user's override file
has the same shape as the defaults. Unknown keys are an error rather than silently
ignored: a typo in `syncnet_lr` must not train with the default.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from atelier.core.errors import AtelierError

DEFAULTS_PATH = Path(__file__).with_name("hparams.yaml")


@dataclasses.dataclass
class HParams:
    num_mels: int
    n_fft: int
    hop_size: int
    win_size: int
    sample_rate: int
    preemphasize: bool
    preemphasis: float
    min_level_db: float
    ref_level_db: float
    fmin: float
    fmax: float
    max_abs_value: float
    symmetric_mels: bool
    allow_clipping_in_normalization: bool
    signal_normalization: bool
    stft_pad_mode: str
    img_size: int
    fps: float
    syncnet_T: int
    syncnet_mel_step_size: int
    batch_size: int
    initial_learning_rate: float
    nepochs: int
    num_workers: int
    checkpoint_interval: int
    eval_interval: int
    eval_steps: int
    save_optimizer_state: bool
    syncnet_wt: float
    syncnet_wt_after: float
    syncnet_wt_after_disc: float
    sync_wt_threshold: float
    syncnet_batch_size: int
    syncnet_lr: float
    syncnet_eval_interval: int
    syncnet_checkpoint_interval: int
    syncnet_eval_steps: int
    disc_wt: float
    disc_initial_learning_rate: float
    disc_eval_steps: int

    def replace(self, source: str = "override", **changes: Any) -> HParams:
        """A copy with `changes` applied and checked; `None` values (unset flags) are ignored.

        `source` names where the values came from in errors (e.g. "--set").
        """
        return _apply(self, {k: v for k, v in changes.items() if v is not None}, source)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Values the networks are built for: the published checkpoints and the model code assume
# them (96x96 faces, 5 frames, 80x16 mel windows), so another value fails deep in a conv.
FIXED = {"img_size": 96, "syncnet_T": 5, "syncnet_mel_step_size": 16, "num_mels": 80}
# (lowest, highest) allowed; None: unbounded. Open intervals are marked in OPEN_LOW.
RANGES: dict[str, tuple[float | None, float | None]] = {
    "n_fft": (16, 1 << 16),
    "hop_size": (1, 1 << 16),
    "win_size": (1, 1 << 16),
    "sample_rate": (1000, 384000),
    "preemphasis": (0.0, 1.0),
    "min_level_db": (None, -1),
    "fmin": (0.0, None),
    "fmax": (1.0, None),
    "max_abs_value": (0.0, None),
    "fps": (0.0, 1000.0),
    "batch_size": (1, 1 << 16),
    "syncnet_batch_size": (1, 1 << 16),
    "initial_learning_rate": (0.0, 10.0),
    "syncnet_lr": (0.0, 10.0),
    "disc_initial_learning_rate": (0.0, 10.0),
    "nepochs": (1, None),
    "num_workers": (0, 256),
    "checkpoint_interval": (1, None),
    "eval_interval": (1, None),
    "syncnet_eval_interval": (1, None),
    "syncnet_checkpoint_interval": (1, None),
    "eval_steps": (0, None),
    "syncnet_eval_steps": (0, None),
    "disc_eval_steps": (0, None),
    "syncnet_wt": (0.0, 1.0),
    "syncnet_wt_after": (0.0, 1.0),
    "syncnet_wt_after_disc": (0.0, 1.0),
    "sync_wt_threshold": (0.0, None),
    "disc_wt": (0.0, 1.0),
}
OPEN_LOW = {
    "max_abs_value", "fps", "initial_learning_rate", "syncnet_lr", "disc_initial_learning_rate",
}  # fmt: skip
PAD_MODES = ("constant", "reflect", "edge", "symmetric", "wrap", "linear_ramp", "maximum",
             "mean", "median", "minimum")  # fmt: skip
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _convert(key: str, kind: str, value: Any, source: str) -> Any:
    """`value` as `kind`, refusing what would silently mean something else.

    Not accepted: a bool for a number (YAML `true` is not 1), a fractional value for an
    int (1.5 is not 1), a non-finite float, a bool spelling other than the usual ones.
    """
    bad = AtelierError(f"{source}: {key}={value!r} is not a valid {kind}")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in TRUE or text in FALSE:
            return text in TRUE
        raise bad
    if kind == "str":
        if isinstance(value, str):
            return value
        raise bad
    if isinstance(value, bool):
        raise bad
    try:
        number = float(value) if isinstance(value, str) else value
        if not isinstance(number, int | float) or not math.isfinite(number):
            raise bad
        if kind == "int":
            if float(number) != int(number):
                raise bad
            return int(number)
        return float(number)
    except (TypeError, ValueError, OverflowError):
        raise bad from None


def check_hparams(hp: HParams, source: str) -> None:
    """Ranges, the values the networks are built for, and the audio settings' coherence."""
    for key, want in FIXED.items():
        if getattr(hp, key) != want:
            raise AtelierError(
                f"{source}: {key}={getattr(hp, key)} is not supported: the Wav2Lip and SyncNet "
                f"networks (and the published checkpoints) are built for {key}={want}"
            )
    for key, (lo, hi) in RANGES.items():
        v = getattr(hp, key)
        low_bad = lo is not None and (v < lo or (key in OPEN_LOW and v == lo))
        if low_bad or (hi is not None and v > hi):
            left = "(" if key in OPEN_LOW else "["
            span = f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
            raise AtelierError(f"{source}: {key}={v} is out of range {span}")
    if hp.win_size > hp.n_fft:
        raise AtelierError(f"{source}: win_size={hp.win_size} must be <= n_fft={hp.n_fft}")
    if not hp.fmin < hp.fmax <= hp.sample_rate / 2:
        raise AtelierError(
            f"{source}: need fmin < fmax <= sample_rate/2, got fmin={hp.fmin}, fmax={hp.fmax}, "
            f"sample_rate={hp.sample_rate}"
        )
    if hp.stft_pad_mode not in PAD_MODES:
        raise AtelierError(
            f"{source}: stft_pad_mode={hp.stft_pad_mode!r}: use one of {', '.join(PAD_MODES)}"
        )


def _apply(base: HParams | None, values: Mapping[str, Any], source: str) -> HParams:
    fields = {f.name: f for f in dataclasses.fields(HParams)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise AtelierError(f"{source}: unknown hyperparameter(s) {', '.join(unknown)}")
    merged = dict(base.to_dict()) if base is not None else {}
    for key, value in values.items():
        merged[key] = _convert(key, str(fields[key].type), value, source)
    missing = sorted(set(fields) - set(merged))
    if missing:
        raise AtelierError(f"{source}: missing hyperparameter(s) {', '.join(missing)}")
    hp = HParams(**merged)
    check_hparams(hp, source)
    return hp


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as e:
        raise AtelierError(f"{path}: cannot read hyperparameters ({e.strerror})") from e
    except UnicodeDecodeError as e:
        raise AtelierError(
            f"{path}: not a UTF-8 text (YAML) file ({e.reason} at byte {e.start})"
        ) from e
    except yaml.YAMLError as e:
        raise AtelierError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(data, dict):
        raise AtelierError(f"{path}: expected a mapping of hyperparameter: value")
    return data


def load_hparams(
    path: str | Path | None = None, source: str = "override", **overrides: Any
) -> HParams:
    """Official defaults, then the user's YAML file (if any), then explicit overrides."""
    hp = _apply(None, _read_yaml(DEFAULTS_PATH), str(DEFAULTS_PATH))
    if path is not None:
        if not Path(path).is_file():
            raise AtelierError(f"--hparams {path}: no such file")
        hp = _apply(hp, _read_yaml(Path(path)), f"--hparams {path}")
    return hp.replace(source, **overrides)
