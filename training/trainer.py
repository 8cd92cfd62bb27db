"""The training loop: owns devices, DDP, mixed precision, checkpoints and resume.

One step, as in pytorch/examples dcgan (numbered as there):

1. D step: maximise log D(x) + log(1 - D(G(z))) (or the hinge loss) on a real batch and a fake
   batch, both passed through the same DiffAugment when it is on.
2. G step: maximise log D(G(z)) on the same fakes; D's weights are frozen for this backward,
   which skips the D weight gradients pytorch/examples computes and throws away.
3. EMA update of G, NaN check (over all ranks), metrics, resume snapshot every N steps.

Reproducibility: z, fake labels and augmentations come from a ``torch.Generator`` seeded from
(seed, rank, global step), and the data order from ``DistributedSampler(seed).set_epoch(epoch)``,
so a run resumed from a snapshot at step k repeats steps k+1.. exactly. The trainer reports
through a :class:`Callback`; it imports no MLflow.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from medsynth.errors import ConfigError, TrainingError
from medsynth.hardware import cpu_has_fast_bf16
from medsynth.imaging import make_grid, to_unit_tensor
from medsynth.progress import progress
from medsynth.training import checkpoint as ckpt
from medsynth.training import distributed as dist_util
from medsynth.training.augment import diff_augment
from medsynth.training.ema import EMA
from medsynth.training.kinds import build_models, get_kind
from medsynth.training.loop import (
    Callback,
    LoopBase,
    TimeBudget,
    TrainData,
    TrainResult,
    diversity_report,
    step_seed,
)
from medsynth.training.losses import d_loss, d_prob, g_loss, mode_seeking_loss
from medsynth.training.models import ModelSpec
from medsynth.training.train_config import Precision, TrainConfig


class Trainer(LoopBase):
    """Trains G and D on ``data`` into ``out_dir`` (checkpoints/last.pt, generator.pt)."""

    def __init__(self, cfg: TrainConfig, data: TrainData, out_dir: str | Path, seed: int = 0,
                 callback: Callback | None = None, resume: bool = True):
        self._setup(cfg, data, out_dir, seed, callback, resume)
        self.spec = ModelSpec(
            kind=cfg.model, arch=cfg.arch, resolution=self.data.resolution, nz=cfg.nz, ngf=cfg.ngf, ndf=cfg.ndf,
            num_classes=len(self.classes), embed_dim=cfg.embed_dim, spectral_norm=cfg.spectral_norm,
            minibatch_std=cfg.minibatch_std, minibatch_std_by_class=cfg.minibatch_std_by_class,
            class_modality=self.class_modality,
        )
        torch.manual_seed(seed)  # same initial weights on every rank (DDP also broadcasts them)
        self.G, self.D = build_models(self.spec)  # raises on a resolution the model cannot make
        self._check_labels()
        # auto precision also turns channels_last on where bf16 was chosen (oneDNN/tensor cores want NHWC)
        nhwc = cfg.channels_last or (cfg.precision is Precision.AUTO and self.precision is Precision.BF16)
        fmt = torch.channels_last if nhwc else torch.contiguous_format
        self.G.to(self.device, memory_format=fmt)
        self.D.to(self.device, memory_format=fmt)
        self.fmt = fmt
        self.ema = EMA(self.G, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.opt_g = torch.optim.Adam(self.G.parameters(), cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
        self.opt_d = torch.optim.Adam(self.D.parameters(), cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision is Precision.FP16)
        self.amp_dtype = {Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}.get(self.precision)
        self.G_ddp, self.D_ddp = self.G, self.D
        if self.info.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.G_ddp = DDP(self.G, device_ids=ids)
            self.D_ddp = DDP(self.D, device_ids=ids)
        self._make_sampler()

    def _check_precision(self, cfg: TrainConfig) -> None:
        if cfg.precision is Precision.FP16 and self.device.type != "cuda":
            raise ConfigError("train.precision: fp16 needs a CUDA device; valid on CPU: fp32, bf16")
        if cfg.precision is Precision.BF16 and self.device.type == "cpu" and not cpu_has_fast_bf16():
            warnings.warn("train.precision=bf16 on a CPU without AMX: bfloat16 kernels are "
                          "slower than fp32 here (see docs/BENCHMARKS.md)", stacklevel=4)

    # -- checkpoints -------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {
            "model_spec": self.spec.to_dict(), "data": self.data.fingerprint(),
            "G": self.G.state_dict(), "D": self.D.state_dict(),
            "ema": self.ema.state_dict() if self.ema else {},
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "scaler": self.scaler.state_dict(), "rng": ckpt.rng_state(),
            "epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "global_step": self.global_step,
            "seed": self.seed, "world_size": self.info.world_size, "batch_size": self.cfg.batch_size,
        }

    def maybe_resume(self) -> None:
        if not self.resume or not self.ckpt_path.exists():
            return
        snap = ckpt.load(self.ckpt_path)
        ckpt.check_compatible(self.ckpt_path, snap, self.spec.to_dict(), self.data.fingerprint())
        self._check_run_settings(snap)
        self.G.load_state_dict(snap["G"])
        self.D.load_state_dict(snap["D"])
        if self.ema and snap["ema"]:
            self.ema.load_state_dict(snap["ema"])
        self.opt_g.load_state_dict(snap["opt_g"])
        self.opt_d.load_state_dict(snap["opt_d"])
        self.scaler.load_state_dict(snap["scaler"])
        ckpt.set_rng_state(snap["rng"])
        self.epoch, self.step_in_epoch = int(snap["epoch"]), int(snap["step_in_epoch"])
        self.global_step = self.resumed_from = int(snap["global_step"])

    # -- one step ----------------------------------------------------------------------------
    def train_step(self, idx: torch.Tensor) -> torch.Tensor:
        cfg, dev = self.cfg, self.device
        gen = torch.Generator(dev).manual_seed(step_seed(self.seed, self.info.rank, self.global_step))
        real = to_unit_tensor(self.data.x[idx].to(dev, non_blocking=True))
        real = real.contiguous(memory_format=self.fmt)
        y = self.data.y[idx].to(dev) if self.spec.num_classes else None
        b = real.shape[0]
        z = torch.randn(b, cfg.nz, generator=gen, device=dev)
        yf = torch.randint(0, self.spec.num_classes, (b,), generator=gen, device=dev) if y is not None else None
        half = b // 2
        if cfg.mode_seeking and yf is not None:
            yf[half : 2 * half] = yf[:half]  # pairs (i, i + half): one class, two z (mode seeking)
        aug = (lambda t: diff_augment(t, cfg.diffaugment, gen)) if cfg.diffaugment else (lambda t: t)
        ac = torch.autocast(dev.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None)
        # 1. D step on real and (detached) fake images
        with ac:
            fake = self.G_ddp(z, yf)
            real_logits = self.D_ddp(aug(real), y)
            fake_logits = self.D_ddp(aug(fake.detach()), yf)
            loss_d = d_loss(cfg.loss, real_logits, fake_logits)
        self.opt_d.zero_grad(set_to_none=True)
        self.scaler.scale(loss_d).backward()
        self.scaler.step(self.opt_d)
        # 2. G step through a frozen D (plain module: no DDP reduction of D grads here)
        self.D.requires_grad_(False)
        with ac:
            gen_logits = self.D(aug(fake), yf)
            loss_g = g_loss(cfg.loss, gen_logits)
            if cfg.mode_seeking and half:
                loss_g = loss_g + cfg.mode_seeking * mode_seeking_loss(fake[:half], fake[half : 2 * half],
                                                                      z[:half], z[half : 2 * half])
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler.scale(loss_g).backward()
        self.scaler.step(self.opt_g)
        self.scaler.update()
        self.D.requires_grad_(True)
        # 3. EMA of G
        if self.ema:
            self.ema.update(self.G)
        stats = torch.stack([loss_d.detach(), loss_g.detach(), torch.tensor(d_prob(real_logits), device=dev),
                             torch.tensor(d_prob(fake_logits), device=dev), torch.tensor(d_prob(gen_logits), device=dev)])
        return dist_util.all_mean(stats.float(), self.info)

    # -- evaluation --------------------------------------------------------------------------
    @torch.no_grad()
    def sample_fixed(self) -> np.ndarray:
        """The per-epoch grid images: fixed z (and labels cycling over the classes) from the EMA G."""
        net = self.ema.model if self.ema else self.G
        was = net.training
        net.eval()
        self._calibrate(net)
        n = self.cfg.sample_count
        gen = torch.Generator().manual_seed(self.seed + 12_345)
        z = torch.randn(n, self.cfg.nz, generator=gen).to(self.device)
        y = (torch.arange(n) % self.spec.num_classes).to(self.device) if self.spec.num_classes else None
        out = net(z, y).float().cpu().numpy()
        net.train(was)
        return out

    def epoch_metrics(self) -> dict[str, float]:
        fake = self.sample_fixed()
        self._last_fake = fake
        return diversity_report(fake, self.spec.num_classes, self.data, self.seed, self.cfg.collapse_threshold)

    # -- the loop ----------------------------------------------------------------------------
    def _fit(self) -> TrainResult:
        t_start = time.perf_counter()
        self.maybe_resume()
        cfg = self.cfg
        max_steps = cfg.max_steps or cfg.epochs * self.steps_per_epoch
        metrics: dict[str, float] = {}
        clock = TimeBudget(cfg.max_minutes)
        while self.epoch < cfg.epochs and self.global_step < max_steps and not clock.spent:
            self.sampler.set_epoch(self.epoch)
            order = torch.tensor(list(iter(self.sampler)), dtype=torch.long)
            batches = order[: self.steps_per_epoch * cfg.batch_size].view(self.steps_per_epoch, cfg.batch_size)
            window = torch.zeros(5)
            n_win, t_win, t_epoch, imgs = 0, time.perf_counter(), time.perf_counter(), 0
            todo = range(self.step_in_epoch, self.steps_per_epoch)
            for s in progress(todo, desc=f"train epoch {self.epoch + 1}/{cfg.epochs}", unit="step"):
                stats = self.train_step(batches[s]).cpu()
                if not torch.isfinite(stats[:2]).all():
                    raise TrainingError(
                        f"step {self.global_step + 1}: non-finite loss (D {stats[0]:.4g}, G {stats[1]:.4g}); "
                        f"training stopped, last good checkpoint kept at {self.ckpt_path} "
                        "(try a lower learning rate, spectral_norm or fp32)")
                self.global_step += 1
                self.step_in_epoch = s + 1
                window += stats
                n_win += 1
                imgs += cfg.batch_size * self.info.world_size
                if self.global_step % cfg.checkpoint_every == 0 and self.step_in_epoch < self.steps_per_epoch:
                    self.save()
                last = self.global_step >= max_steps or self.step_in_epoch == self.steps_per_epoch
                if self.global_step % cfg.log_every == 0 or last:
                    dt = time.perf_counter() - t_win
                    metrics = self._step_metrics(window / n_win, n_win * cfg.batch_size * self.info.world_size / dt)
                    if self.info.is_main:
                        self.callback.on_step(self.global_step, metrics)
                    window.zero_()
                    n_win, t_win = 0, time.perf_counter()
                if self.global_step >= max_steps or clock.check():
                    break
            epoch_done = self.step_in_epoch >= self.steps_per_epoch
            ep = self.epoch + 1
            if epoch_done:
                self.epoch, self.step_in_epoch = self.epoch + 1, 0
            self.save()
            em = self.epoch_metrics()
            em["epoch_images_per_s"] = imgs / max(time.perf_counter() - t_epoch, 1e-9)
            metrics = {**metrics, **em}
            if self.info.is_main:
                self.callback.on_epoch_end(ep, metrics, make_grid(self._last_fake))
        self._sync_buffers()
        self._calibrate(self.ema.model if self.ema else self.G)
        # served as a plain-layout net: the file loads that way, so in-process and served images are equal
        net = (self.ema.model if self.ema else self.G).to("cpu", memory_format=torch.contiguous_format).eval()
        return self._finish(net, metrics, t_start)

    def _step_metrics(self, m: torch.Tensor, images_per_s: float) -> dict[str, float]:
        return {"loss_d": float(m[0]), "loss_g": float(m[1]), "d_real": float(m[2]), "d_fake": float(m[3]),
                "d_fake_g": float(m[4]), "lr_g": self.opt_g.param_groups[0]["lr"],
                "lr_d": self.opt_d.param_groups[0]["lr"], "images_per_s": images_per_s}

    def _calibrate(self, net: torch.nn.Module) -> None:
        """Residual G: batch-norm statistics re-estimated for the EMA weights (training/resnet.py)."""
        if self.spec.arch != "resnet" or net is self.G:
            return
        from medsynth.training.resnet import recalibrate_batchnorm

        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            recalibrate_batchnorm(net, self.cfg.nz, self.spec.num_classes, self.device, seed=self.seed)

    def _sync_buffers(self) -> None:
        """Batch-norm statistics drift apart per rank after the last local forward: take rank 0's."""
        if not self.info.enabled:
            return
        nets = [self.G, self.D] + ([self.ema.model] if self.ema else [])
        for net in nets:
            for b in net.buffers():
                torch.distributed.broadcast(b, 0)


def make_trainer(cfg: TrainConfig, data: TrainData, out_dir: str | Path, seed: int = 0,
                 callback: Callback | None = None, resume: bool = True) -> Any:
    """The trainer of ``cfg.model``'s family: :class:`Trainer` for GANs, ``DiffusionTrainer`` for ldm."""
    if get_kind(cfg.model).family == "diffusion":
        from medsynth.training.diffusion_trainer import DiffusionTrainer

        return DiffusionTrainer(cfg, data, out_dir, seed=seed, callback=callback, resume=resume)
    return Trainer(cfg, data, out_dir, seed=seed, callback=callback, resume=resume)
