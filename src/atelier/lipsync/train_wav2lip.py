"""Train Wav2Lip against a frozen expert SyncNet (official `wav2lip_train.py`), and with
`disc=True` the GAN variant with the visual-quality discriminator (`hq_wav2lip_train.py`).

Loss: syncnet_wt * sync + disc_wt * perceptual + (1 - syncnet_wt - disc_wt) * L1, with
syncnet_wt starting at 0 and set to 0.01 (0.03 with the discriminator) once the eval
sync loss drops below 0.75. As in the official code the expert is never switched to
eval mode (its BatchNorm uses batch statistics), which the published recipe relied on.
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
from atelier.lipsync.checkpoint import NAME, TrainState, load_into, resume, save_checkpoint
from atelier.lipsync.train_syncnet import (
    TrainConfig,
    TrainResult,
    check_train_config,
    cosine_loss,
)

if TYPE_CHECKING:
    import numpy as np
    import torch

log = get_logger(__name__)


@dataclasses.dataclass
class Wav2LipTrainConfig(TrainConfig):
    syncnet_checkpoint_path: Path | None = None  # the expert (required)
    disc: bool = False  # the quality-discriminator (GAN) variant
    disc_checkpoint_path: Path | None = None
    save_samples: bool = True


def _sample_images(
    x: torch.Tensor, g: torch.Tensor, gt: torch.Tensor, step: int, ckpt_dir: Path
) -> None:
    """Reference | masked input | generated | truth collages, like the official trainer."""
    import cv2
    import numpy as np

    def img(t: torch.Tensor) -> np.ndarray:
        return (t.detach().float().cpu().numpy().transpose(0, 2, 3, 4, 1) * 255.0).astype(np.uint8)

    xs, gs, gts = img(x), img(g), img(gt)
    collage = np.concatenate((xs[..., 3:], xs[..., :3], gs, gts), axis=-2)
    folder = ckpt_dir / f"samples_step{step:09d}"
    folder.mkdir(exist_ok=True)
    for b, frames in enumerate(collage):
        for t, frame in enumerate(frames):
            cv2.imwrite(str(folder / f"{b}_{t}.jpg"), frame)


def train_wav2lip(cfg: Wav2LipTrainConfig) -> TrainResult:
    import torch
    import torch.nn.functional as F

    from atelier.lipsync.dataset import Wav2LipDataset, make_loader, read_filelist
    from atelier.lipsync.models import SyncNet_color, Wav2Lip, Wav2Lip_disc_qual

    if cfg.syncnet_checkpoint_path is None:
        raise AtelierError("--syncnet-checkpoint-path (the trained expert) is required")
    check_train_config(cfg)
    for flag, path in (("--syncnet-checkpoint-path", cfg.syncnet_checkpoint_path),
                       ("--disc-checkpoint-path", cfg.disc_checkpoint_path)):  # fmt: skip
        if path is not None and not Path(path).is_file():
            raise AtelierError(f"{flag} {path}: no such file")
    hp = cfg.hparams
    if cfg.seed is not None:
        torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    ckpt_dir = Path(cfg.checkpoint_dir)
    workers = hp.num_workers if cfg.workers is None else cfg.workers
    train_set = Wav2LipDataset(
        read_filelist(cfg.data_root, "train", cfg.filelists_dir, hp.syncnet_T),
        hp,
        cfg.seed,
        hp.batch_size,
    )
    val_set = Wav2LipDataset(
        read_filelist(cfg.data_root, "val", cfg.filelists_dir, hp.syncnet_T),
        hp,
        None if cfg.seed is None else cfg.seed + 1,
        hp.batch_size,  # the expert stays in train mode (official), so no batch of 1
    )
    output_folder(ckpt_dir, "--checkpoint-dir")
    train_loader = make_loader(train_set, hp.batch_size, workers)
    val_loader = make_loader(val_set, hp.batch_size, min(workers, 4), shuffle=False)

    model = Wav2Lip().to(device)
    betas = (0.5, 0.999) if cfg.disc else (0.9, 0.999)
    optimizer = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad],
        lr=hp.initial_learning_rate,
        betas=betas,
    )
    disc = disc_opt = None
    if cfg.disc:
        disc = Wav2Lip_disc_qual().to(device)
        disc_opt = torch.optim.Adam(
            [p for p in disc.parameters() if p.requires_grad],
            lr=hp.disc_initial_learning_rate,
            betas=(0.5, 0.999),
        )
    expert = SyncNet_color().to(device)
    load_into(expert, cfg.syncnet_checkpoint_path, "SyncNet_color (expert)")
    for p in expert.parameters():
        p.requires_grad = False

    state = TrainState()
    if cfg.checkpoint_path is not None:
        state = resume(cfg.checkpoint_path, model, optimizer, "Wav2Lip")
        log.info("resumed %s at step %d", cfg.checkpoint_path, state.global_step)
    if cfg.disc and cfg.disc_checkpoint_path is not None:
        resume(cfg.disc_checkpoint_path, disc, disc_opt, "Wav2Lip_disc_qual")
    syncnet_wt = hp.syncnet_wt
    disc_wt = hp.disc_wt if cfg.disc else 0.0
    wt_after = hp.syncnet_wt_after_disc if cfg.disc else hp.syncnet_wt_after
    T = hp.syncnet_T
    log.info(
        "train%s on %s: %d train / %d val videos, batch %d",
        " --disc" if cfg.disc else "", device, len(train_set), len(val_set), hp.batch_size,
    )  # fmt: skip

    def sync_loss(mel: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        g = g[:, :, :, g.size(3) // 2 :]
        g = torch.cat([g[:, :, i] for i in range(T)], dim=1)
        a, v = expert(mel, g)
        return cosine_loss(a, v, torch.ones(g.size(0), 1, device=g.device))

    result = TrainResult(0, 0, [], [], [])

    def save() -> None:
        keep = hp.save_optimizer_state
        path = save_checkpoint(ckpt_dir, model, optimizer, state, save_optimizer_state=keep)
        result.checkpoints.append(path)
        if disc is not None:
            save_checkpoint(ckpt_dir, disc, disc_opt, state, "disc_", save_optimizer_state=keep)
        log.info("saved %s", path)

    def evaluate() -> float:
        steps = hp.disc_eval_steps if cfg.disc else hp.eval_steps
        syncs, l1s = [], []
        model.eval()
        if disc is not None:
            disc.eval()
        with torch.no_grad():
            while len(syncs) <= steps:
                for x, indiv, mel, gt in val_loader:
                    g = model(indiv.to(device), x.to(device))
                    syncs.append(sync_loss(mel.to(device), g).item())
                    l1s.append(F.l1_loss(g, gt.to(device)).item())
                    if len(syncs) > steps:
                        break
        s, r = sum(syncs) / len(syncs), sum(l1s) / len(l1s)
        result.eval_losses.append((state.global_step, s))
        log.info("step %d: eval L1 %.4f, sync %.4f (target ~0.2)", state.global_step, r, s)
        return s

    stop = cfg.max_steps
    total = None if stop is None else max(0, stop - state.global_step)
    with progress_bar("train" + (" --disc" if cfg.disc else ""), total=total, unit="steps") as bar:
        while state.global_epoch < hp.nepochs and (stop is None or state.global_step < stop):
            run_l1 = run_sync = run_percep = 0.0
            for step, (x, indiv, mel, gt) in enumerate(train_loader):
                x, indiv, mel, gt = x.to(device), indiv.to(device), mel.to(device), gt.to(device)
                model.train()
                if disc is not None:
                    disc.train()
                    disc_opt.zero_grad()
                optimizer.zero_grad()
                g = model(indiv, x)
                s_loss = sync_loss(mel, g) if syncnet_wt > 0 else torch.zeros((), device=device)
                p_loss = (
                    disc.perceptual_forward(g)
                    if disc is not None and disc_wt > 0
                    else torch.zeros((), device=device)
                )
                l1 = F.l1_loss(g, gt)
                loss = syncnet_wt * s_loss + disc_wt * p_loss + (1 - syncnet_wt - disc_wt) * l1
                loss.backward()
                optimizer.step()
                if disc is not None:
                    disc_opt.zero_grad()
                    pred = disc(gt)
                    F.binary_cross_entropy(pred, torch.ones_like(pred)).backward()
                    pred = disc(g.detach())
                    F.binary_cross_entropy(pred, torch.zeros_like(pred)).backward()
                    disc_opt.step()
                if cfg.save_samples and state.global_step % hp.checkpoint_interval == 0:
                    _sample_images(x, g, gt, state.global_step, ckpt_dir)
                state.global_step += 1
                run_l1 += l1.item()
                run_sync += s_loss.item()
                run_percep += p_loss.item()
                result.losses.append(loss.item())
                if state.global_step == 1 or state.global_step % hp.checkpoint_interval == 0:
                    save()
                first_eval = state.global_step == 1 and not cfg.disc  # as wav2lip_train.py
                if first_eval or state.global_step % hp.eval_interval == 0:
                    eval_sync = evaluate()
                    if eval_sync < hp.sync_wt_threshold and syncnet_wt != wt_after:
                        syncnet_wt = wt_after
                        log.info("eval sync < %s: syncnet_wt -> %s", hp.sync_wt_threshold, wt_after)
                n = step + 1
                status = f"L1 {run_l1 / n:.4f} sync {run_sync / n:.4f}"
                if disc is not None:
                    status += f" percep {run_percep / n:.4f}"
                bar.update(0, advance=1, status=status)
                if stop is not None and state.global_step >= stop:
                    break
            else:
                state.global_epoch += 1
    if not result.checkpoints or result.checkpoints[-1].name != NAME.format(state.global_step):
        save()
    result.global_step, result.global_epoch = state.global_step, state.global_epoch
    return result
