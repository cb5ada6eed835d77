"""Train the expert lip-sync discriminator (official `color_syncnet_train.py`), any device.

Same sampling, loss (BCE on the cosine similarity of the two embeddings), Adam at
`syncnet_lr`, checkpoint at step 1 and every `syncnet_checkpoint_interval`, eval every
`syncnet_eval_interval`. Additions: `max_steps` (stop and save), a checkpoint on
stop, and a result object the caller can inspect.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from atelier.core.device import pick_device
from atelier.core.errors import AtelierError
from atelier.core.log import get_logger
from atelier.core.paths import output_folder
from atelier.core.progress import progress_bar
from atelier.lipsync.checkpoint import TrainState, resume, save_checkpoint
from atelier.lipsync.hparams import HParams, load_hparams
from atelier.lipsync.output_paths import check_creatable

if TYPE_CHECKING:
    import torch

log = get_logger(__name__)


@dataclasses.dataclass
class TrainConfig:
    data_root: Path
    checkpoint_dir: Path
    checkpoint_path: Path | None = None  # resume from here
    hparams: HParams = dataclasses.field(default_factory=load_hparams)
    device: str = "auto"
    filelists_dir: Path | None = None  # default DATA_ROOT/filelists
    max_steps: int | None = None  # stop (and save) at this global step
    workers: int | None = None  # DataLoader workers; default hparams.num_workers
    seed: int | None = None


def check_train_config(cfg: TrainConfig) -> None:
    """Parameters and paths, before a model is built or anything is written."""
    from atelier.lipsync.hparams import check_hparams

    if not Path(cfg.data_root).is_dir():
        raise AtelierError(f"--data-root {cfg.data_root}: not a folder")
    check_creatable(cfg.checkpoint_dir, "--checkpoint-dir")
    if cfg.checkpoint_path is not None and not Path(cfg.checkpoint_path).is_file():
        raise AtelierError(f"--checkpoint-path {cfg.checkpoint_path}: no such file")
    for flag, value, lo in (("--max-steps", cfg.max_steps, 1), ("--workers", cfg.workers, 0)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < lo
        ):
            raise AtelierError(f"{flag} {value!r}: must be a whole number >= {lo}")
    check_hparams(cfg.hparams, "hparams")


@dataclasses.dataclass
class TrainResult:
    global_step: int
    global_epoch: int
    losses: list[float]  # training loss per step (this session)
    eval_losses: list[tuple[int, float]]  # (step, loss)
    checkpoints: list[Path]


def cosine_loss(a: torch.Tensor, v: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """BCE of the embeddings' cosine similarity against the in-sync label."""
    import torch.nn.functional as F

    d = F.cosine_similarity(a, v)
    return F.binary_cross_entropy(d.unsqueeze(1).clamp(0.0, 1.0), y)


def syncnet_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    device: torch.device,
) -> float:
    """One optimisation step on (faces, mel, label); returns the loss."""
    x, mel, y = batch
    model.train()
    optimizer.zero_grad()
    a, v = model(mel.to(device), x.to(device))
    loss = cosine_loss(a, v, y.to(device))
    loss.backward()
    optimizer.step()
    return loss.item()


def _workers(cfg: TrainConfig) -> int:
    return cfg.hparams.num_workers if cfg.workers is None else cfg.workers


def train_syncnet(cfg: TrainConfig) -> TrainResult:
    import torch

    from atelier.lipsync.dataset import SyncDataset, make_loader, read_filelist
    from atelier.lipsync.models import SyncNet_color

    check_train_config(cfg)
    hp = cfg.hparams
    if cfg.seed is not None:
        torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    ckpt_dir = Path(cfg.checkpoint_dir)
    train_set = SyncDataset(
        read_filelist(cfg.data_root, "train", cfg.filelists_dir, hp.syncnet_T),
        hp,
        cfg.seed,
        hp.syncnet_batch_size,
    )
    val_seed = None if cfg.seed is None else cfg.seed + 1
    val_set = SyncDataset(
        read_filelist(cfg.data_root, "val", cfg.filelists_dir, hp.syncnet_T),
        hp,
        val_seed,
        hp.syncnet_batch_size,
    )
    output_folder(ckpt_dir, "--checkpoint-dir")
    train_loader = make_loader(train_set, hp.syncnet_batch_size, _workers(cfg))
    val_loader = make_loader(val_set, hp.syncnet_batch_size, min(_workers(cfg), 8), shuffle=False)

    model = SyncNet_color().to(device)
    optimizer = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad], lr=hp.syncnet_lr
    )
    state = TrainState()
    if cfg.checkpoint_path is not None:
        state = resume(cfg.checkpoint_path, model, optimizer, "SyncNet_color")
        log.info("resumed %s at step %d", cfg.checkpoint_path, state.global_step)
    log.info(
        "train-syncnet on %s: %d train / %d val videos, batch %d",
        device, len(train_set), len(val_set), hp.syncnet_batch_size,
    )  # fmt: skip

    result = TrainResult(0, 0, [], [], [])

    def save() -> None:
        path = save_checkpoint(
            ckpt_dir, model, optimizer, state, save_optimizer_state=hp.save_optimizer_state
        )
        result.checkpoints.append(path)
        log.info("saved %s", path)

    def evaluate() -> float:
        losses = []
        model.eval()
        with torch.no_grad():
            for step, (x, mel, y) in enumerate(val_loader):
                a, v = model(mel.to(device), x.to(device))
                losses.append(cosine_loss(a, v, y.to(device)).item())
                if step > hp.syncnet_eval_steps:
                    break
        loss = sum(losses) / len(losses)
        result.eval_losses.append((state.global_step, loss))
        log.info("step %d: eval loss %.4f (target ~0.25)", state.global_step, loss)
        return loss

    stop = cfg.max_steps if cfg.max_steps is not None else None
    total = None if stop is None else max(0, stop - state.global_step)
    with progress_bar("train-syncnet", total=total, unit="steps") as bar:
        while state.global_epoch < hp.nepochs and (stop is None or state.global_step < stop):
            running = 0.0
            for step, batch in enumerate(train_loader):
                loss = syncnet_step(model, optimizer, batch, device)
                state.global_step += 1
                running += loss
                result.losses.append(loss)
                step_no = state.global_step
                if step_no == 1 or step_no % hp.syncnet_checkpoint_interval == 0:
                    save()
                if state.global_step % hp.syncnet_eval_interval == 0:
                    evaluate()
                bar.update(0, advance=1, status=f"loss {running / (step + 1):.4f}")
                if stop is not None and state.global_step >= stop:
                    break
            else:
                state.global_epoch += 1
    if not result.checkpoints or result.checkpoints[-1].name != _name(state):
        save()
    result.global_step, result.global_epoch = state.global_step, state.global_epoch
    return result


def _name(state: TrainState) -> str:
    from atelier.lipsync.checkpoint import NAME

    return NAME.format(state.global_step)
