"""The APNet trainer: label-smoothed cross-entropy + batch-hard triplet, Adam with warm-up and step decay.

Writes into the run folder: ``config.yaml`` (the resolved config), ``last.pt`` (every epoch, for ``--resume``),
``epoch_NNN.pt`` (the newest ``train.checkpoint_keep``), ``best.pt`` (best validation mAP), ``log.csv``
(one row per epoch), ``curves.png`` (loss and mAP), and TensorBoard events when ``tensorboard`` is installed.
Multi-GPU: ``torchrun --nproc_per_node=N -m apnet_edge.cli train ...`` (DistributedDataParallel).
"""

from __future__ import annotations

import csv
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn as nn

from apnet_edge.config import ExperimentConfig, to_dict
from apnet_edge.errors import ConfigError, DatasetError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks the first CUDA GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} was asked for but no CUDA GPU is visible; use train.device=cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lr_factor(epoch: int, warmup_epochs: int, warmup_factor: float, steps, gamma: float) -> float:
    """Learning-rate multiplier of ``epoch`` (0-based): linear warm-up from ``warmup_factor``, then step decay."""
    decay = gamma ** sum(1 for s in steps if epoch >= s)
    if epoch < warmup_epochs:
        alpha = epoch / warmup_epochs
        return (warmup_factor * (1 - alpha) + alpha) * decay
    return decay


def build_optimizer(model: nn.Module, solver) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if solver.optimizer == "adam":
        return torch.optim.Adam(params, lr=solver.base_lr, weight_decay=solver.weight_decay)
    if solver.optimizer == "sgd":
        return torch.optim.SGD(params, lr=solver.base_lr, weight_decay=solver.weight_decay,
                               momentum=solver.momentum, nesterov=True)
    raise ConfigError(f"solver.optimizer must be 'adam' or 'sgd', found {solver.optimizer!r}")


class Trainer:
    """Train one experiment into ``output``; ``fit()`` returns the final metrics as a dict."""

    def __init__(self, cfg: ExperimentConfig, output: str | Path, resume: bool = False) -> None:
        self.cfg = cfg
        self.output = Path(output)
        self.resume = resume
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.is_main = self.rank == 0

    # ------------------------------------------------------------------ setup
    def _setup(self) -> None:
        from apnet_edge.datasets import load_dataset
        from train.checkpoint import load_checkpoint, load_weights_into
        from train.data import make_train_loader
        from train.losses import CrossEntropyLabelSmooth, TripletLoss
        from train.models import build_model
        from train.transforms import build_test_transform, build_train_transform

        cfg = self.cfg
        if not cfg.data.root:
            raise ConfigError("no dataset folder: pass --data-root DIR or set data.root in the config")
        if self.world_size > 1:
            import torch.distributed as dist

            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local_rank)
            dist.init_process_group("nccl")
            self.device = torch.device("cuda", local_rank)
        else:
            self.device = resolve_device(cfg.train.device)
        seed_everything(cfg.train.seed + self.rank)

        options: dict[str, Any] = {"variant": cfg.data.cuhk03_variant} if cfg.data.dataset == "cuhk03" else {}
        self.dataset = load_dataset(cfg.data.dataset, cfg.data.root, **options)
        if not self.dataset.train:
            raise DatasetError(f"dataset {cfg.data.dataset!r} at {cfg.data.root!r} has no training images")
        self.num_classes = self.dataset.num_train_pids
        if cfg.data.batch_size % self.world_size:
            raise ConfigError(f"data.batch_size={cfg.data.batch_size} must be divisible by the {self.world_size} GPUs")

        m = cfg.model
        self.model = build_model(m, num_classes=self.num_classes).to(self.device)
        self.card = self.model.card
        train_tf = build_train_transform(m.input_size, self.card.mean, self.card.std, cfg.data.flip_prob,
                                         cfg.data.pad, cfg.data.erasing_prob)
        self.test_tf = build_test_transform(m.input_size, self.card.mean, self.card.std)
        self.loader, self.sampler = make_train_loader(
            self.dataset.train, train_tf, cfg.data.batch_size // self.world_size, cfg.data.num_instances,
            cfg.data.num_workers, seed=cfg.train.seed + self.rank)
        self.ce = CrossEntropyLabelSmooth(self.num_classes, epsilon=cfg.solver.label_smoothing).to(self.device)
        self.triplet = TripletLoss(margin=cfg.solver.triplet_margin)
        self.optimizer = build_optimizer(self.model, cfg.solver)
        self.use_amp = cfg.solver.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.start_epoch = 0
        self.best_map = -1.0
        self.history: list[dict[str, Any]] = []
        last = self.output / "last.pt"
        if self.resume and last.exists():
            ckpt = load_checkpoint(last)
            load_weights_into(self.model, ckpt)
            if ckpt.get("optimizer"):
                self.optimizer.load_state_dict(ckpt["optimizer"])
            self.start_epoch = int(ckpt["epoch"]) + 1
            extra = ckpt.get("extra") or {}
            self.best_map = float(extra.get("best_map", -1.0))
            self.history = list(extra.get("history", []))
            if self.is_main:
                print(f"resumed from {last} at epoch {self.start_epoch}", flush=True)
        self.train_model: nn.Module = self.model
        if self.world_size > 1:
            self.train_model = nn.parallel.DistributedDataParallel(self.model, device_ids=[self.device.index])

    # ------------------------------------------------------------------ loop
    def _losses(self, out: dict[str, Any], pids: torch.Tensor) -> tuple[torch.Tensor, float, float]:
        def first(x):
            return x[0] if isinstance(x, (tuple, list)) else x

        logits = out["logits"]
        logits = logits if isinstance(logits, (list, tuple)) else [logits]
        ce = sum(self.ce(lg, pids) for lg in logits) / len(logits)
        feats = [out["features"], *out.get("part_features", [])]
        tri = sum(first(self.triplet(f, pids)) for f in feats) / len(feats)
        loss = ce + self.cfg.solver.triplet_weight * tri
        acc = (logits[0].argmax(1) == pids).float().mean().item()
        return loss, float(tri.detach()), acc

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        from tqdm import tqdm

        s = self.cfg.solver
        factor = lr_factor(epoch, s.warmup_epochs, s.warmup_factor, s.steps, s.gamma)
        for g in self.optimizer.param_groups:
            g["lr"] = s.base_lr * factor
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        self.train_model.train()
        total = len(self.loader)
        if self.cfg.train.max_iters_per_epoch > 0:
            total = min(total, self.cfg.train.max_iters_per_epoch)
        sums = {"loss": 0.0, "triplet": 0.0, "acc": 0.0}
        n = 0
        bar = tqdm(total=total, desc=f"epoch {epoch + 1}/{s.max_epochs}", unit="it", disable=not self.is_main,
                   leave=False)
        for images, pids, _cams, _idx in self.loader:
            if n >= total:
                break
            images = images.to(self.device, non_blocking=True)
            pids = pids.to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, enabled=self.use_amp):
                out = self.train_model(images)
                loss, tri, acc = self._losses(out, pids)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch + 1}; lower solver.base_lr")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            n += 1
            sums["loss"] += loss.item()
            sums["triplet"] += tri
            sums["acc"] += acc
            bar.update(1)
            bar.set_postfix(loss=f"{sums['loss'] / n:.3f}", acc=f"{sums['acc'] / n:.2f}")
        bar.close()
        return {k: v / max(n, 1) for k, v in sums.items()} | {"lr": s.base_lr * factor, "iters": n}

    def fit(self) -> dict[str, Any]:
        """Train ``solver.max_epochs`` epochs (from the resumed epoch); returns the last validation metrics."""
        import yaml

        from train.checkpoint import save_checkpoint
        from train.evaluate import validate

        self._setup()
        cfg = self.cfg
        if self.is_main:
            self.output.mkdir(parents=True, exist_ok=True)
            (self.output / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
            print(self.dataset.summary(), flush=True)
            print(f"training {cfg.model.arch} level {cfg.model.level} on {cfg.model.backbone}, "
                  f"{self.num_classes} identities, device {self.device}, output {self.output}", flush=True)
        metrics: dict[str, Any] = {}
        can_validate = bool(self.dataset.query) and bool(self.dataset.gallery)
        if self.is_main and can_validate and cfg.train.eval_at_start and self.start_epoch == 0:
            metrics = validate(self.model, self.dataset.query, self.dataset.gallery, self.test_tf, self.device,
                               cfg.data.test_batch_size, min(cfg.data.num_workers, 2), cfg.train.flip_test)
            print(f"before training: mAP {100 * metrics['mAP']:.2f}  rank-1 {100 * metrics['rank1']:.2f}",
                  flush=True)
            row0 = {"epoch": 0, "mAP": metrics["mAP"], "rank1": metrics["rank1"]}
            self.history.append(row0)
            self._log(row0)
        for epoch in range(self.start_epoch, cfg.solver.max_epochs):
            t0 = time.perf_counter()
            stats = self._train_epoch(epoch)
            row: dict[str, Any] = {"epoch": epoch + 1, **stats, "seconds": round(time.perf_counter() - t0, 1)}
            last_epoch = epoch + 1 == cfg.solver.max_epochs
            if self.is_main and can_validate and ((epoch + 1) % cfg.train.eval_period == 0 or last_epoch):
                metrics = validate(self.model, self.dataset.query, self.dataset.gallery, self.test_tf, self.device,
                                   cfg.data.test_batch_size, min(cfg.data.num_workers, 2), cfg.train.flip_test)
                row.update({"mAP": metrics["mAP"], "rank1": metrics["rank1"]})
                print(f"epoch {epoch + 1}: mAP {100 * metrics['mAP']:.2f}  rank-1 {100 * metrics['rank1']:.2f}",
                      flush=True)
            if self.is_main:
                self.history.append(row)
                self._save(epoch, row, metrics, save_checkpoint)
                self._log(row)
        if self.is_main:
            self._plot()
        if self.world_size > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
        return {"output": str(self.output), "epochs": cfg.solver.max_epochs, "num_classes": self.num_classes,
                "best_mAP": self.best_map if self.best_map >= 0 else None, "metrics": metrics}

    # ------------------------------------------------------------------ outputs
    def _save(self, epoch: int, row: dict[str, Any], metrics: dict[str, Any], save_checkpoint) -> None:
        is_best = "mAP" in row and row["mAP"] > self.best_map
        if is_best:
            self.best_map = row["mAP"]
        import shutil

        extra = {"best_map": self.best_map, "history": self.history}
        last = self.output / "last.pt"
        save_checkpoint(last, self.model, self.cfg, epoch, optimizer=self.optimizer, metrics=metrics, extra=extra)
        if self.cfg.train.checkpoint_keep > 0:
            shutil.copyfile(last, self.output / f"epoch_{epoch + 1:03d}.pt")
            for old in sorted(self.output.glob("epoch_*.pt"))[:-self.cfg.train.checkpoint_keep]:
                old.unlink()
        if is_best or self.best_map < 0:  # no validation yet: best follows last
            shutil.copyfile(last, self.output / "best.pt.tmp")
            os.replace(self.output / "best.pt.tmp", self.output / "best.pt")

    def _log(self, row: dict[str, Any]) -> None:
        path = self.output / "log.csv"
        keys = ["epoch", "loss", "triplet", "acc", "lr", "iters", "seconds", "mAP", "rank1"]
        new = not path.exists()
        with path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow({k: row.get(k, "") for k in keys})
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # tensorboard is optional
            return
        if not hasattr(self, "_tb"):
            self._tb = SummaryWriter(str(self.output / "tb"))
        for k in ("loss", "triplet", "acc", "lr", "mAP", "rank1"):
            if isinstance(row.get(k), (int, float)) and not math.isnan(row[k]):
                self._tb.add_scalar(k, row[k], row["epoch"])

    def _plot(self) -> Optional[Path]:
        """Loss and mAP curves as ``curves.png`` beside the log (skipped without matplotlib)."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except Exception:
            return None
        fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
        trained = [r for r in self.history if "loss" in r]
        ax[0].plot([r["epoch"] for r in trained], [r["loss"] for r in trained], label="total")
        ax[0].plot([r["epoch"] for r in trained], [r["triplet"] for r in trained], label="triplet")
        ax[0].set_xlabel("epoch")
        ax[0].set_title("loss")
        ax[0].legend()
        ev = [r for r in self.history if "mAP" in r]
        if ev:
            ax[1].plot([r["epoch"] for r in ev], [100 * r["mAP"] for r in ev], "o-", label="mAP")
            ax[1].plot([r["epoch"] for r in ev], [100 * r["rank1"] for r in ev], "s-", label="rank-1")
            ax[1].legend()
        ax[1].set_xlabel("epoch")
        ax[1].set_title("validation (%)")
        fig.tight_layout()
        out = self.output / "curves.png"
        fig.savefig(out, dpi=100)
        plt.close(fig)
        return out
