"""Hyperparameters: the official `hparams.py` values, overridable from YAML or flags.

The defaults live in `hparams.yaml` next to this file so that a user's override file
has the same shape as the defaults. Unknown keys are an error rather than silently
ignored: a typo in `syncnet_lr` must not train with the default.
"""

from __future__ import annotations

import dataclasses
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

    def replace(self, **changes: Any) -> HParams:
        """A copy with `changes` applied; `None` values (unset flags) are ignored."""
        return _apply(self, {k: v for k, v in changes.items() if v is not None}, "override")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _apply(base: HParams | None, values: Mapping[str, Any], source: str) -> HParams:
    fields = {f.name: f for f in dataclasses.fields(HParams)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise AtelierError(f"{source}: unknown hyperparameter(s) {', '.join(unknown)}")
    merged = dict(base.to_dict()) if base is not None else {}
    for key, value in values.items():
        kind = fields[key].type
        try:
            if kind == "bool" and isinstance(value, str):
                value = value.strip().lower() in ("1", "true", "yes", "on")
            elif kind in ("int", "float", "str", "bool"):
                value = {"int": int, "float": float, "str": str, "bool": bool}[kind](value)
        except (TypeError, ValueError) as e:
            raise AtelierError(f"{source}: {key}={value!r} is not a valid {kind}") from e
        merged[key] = value
    missing = sorted(set(fields) - set(merged))
    if missing:
        raise AtelierError(f"{source}: missing hyperparameter(s) {', '.join(missing)}")
    return HParams(**merged)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as e:
        raise AtelierError(f"{path}: cannot read hyperparameters ({e.strerror})") from e
    except yaml.YAMLError as e:
        raise AtelierError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(data, dict):
        raise AtelierError(f"{path}: expected a mapping of hyperparameter: value")
    return data


def load_hparams(path: str | Path | None = None, **overrides: Any) -> HParams:
    """Official defaults, then the user's YAML file (if any), then explicit overrides."""
    hp = _apply(None, _read_yaml(DEFAULTS_PATH), str(DEFAULTS_PATH))
    if path is not None:
        hp = _apply(hp, _read_yaml(Path(path)), str(path))
    return hp.replace(**overrides)
