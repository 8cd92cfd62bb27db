"""The latent diffusion training loop: the same contract as the GAN :class:`~medsynth.training.trainer.Trainer`
(devices, DDP, mixed precision, resumable snapshots, callback reports, ``generator.pt``).

Up to three phases on one step counter: steps ``1..ae_steps`` train the autoencoder, the next ``max_steps``
(or ``epochs`` worth) train the denoiser on the frozen encoder's latents, which are computed once
when the phase starts (and again, identically, after a resume), and the last ``decoder_steps`` (cascade
only; 0 by default) fine-tune the super-resolver against a patch critic (``decoder_gan_losses``): an
L1-trained decoder returns the smooth median of the details a coarse view allows, this one adds edges and
texture. The denoiser is untouched then, so a finished run can be resumed into this phase alone. Noise, timesteps and dropped
labels come from a ``torch.Generator`` seeded from (seed, rank, global step) and the data order
from ``DistributedSampler(seed).set_epoch(epoch)``, so a run resumed from a snapshot at step k
repeats steps k+1.. exactly.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from medsynth.errors import ConfigError, TrainingError
from medsynth.fileio import atomic_path
from medsynth.imaging import make_grid, to_unit_tensor
from medsynth.progress import progress
from medsynth.training import checkpoint as ckpt
from medsynth.training import distributed as dist_util
from medsynth.training.diffusion import (
    Denoiser,
    DiffusionSampler,
    DiffusionSpec,
    LatentDiffusion,
    PatchCritic,
    class_stats_of,
    decoder_gan_losses,
    diffusion_loss,
    encode_all,
    latent_scale_of,
    train_scheduler,
)
from medsynth.training.ema import EMA
from medsynth.training.loop import (
    Callback,
    LoopBase,
    TimeBudget,
    TrainData,
    TrainResult,
    diversity_report,
    step_seed,
)
from medsynth.training.train_config import Precision, TrainConfig

WARMUP = 200  # linear learning-rate warm-up of each phase, in steps
GRID_EVERY = 1000  # denoiser steps between sample grids (and at the end)
DENOISER_END = "denoiser_end.pt"  # beside last.pt: the snapshot at the end of the denoiser phase
DECODER_LR = 2e-4  # Adam (0.5, 0.9) for the super-resolver and its critic in the fine-tuning phase


class DiffusionTrainer(LoopBase):
    """Trains a :class:`LatentDiffusion` on ``data`` into ``out_dir`` (checkpoints/last.pt, generator.pt)."""

    def __init__(self, cfg: TrainConfig, data: TrainData, out_dir: str | Path, seed: int = 0,
                 callback: Callback | None = None, resume: bool = True):
        self._setup(cfg, data, out_dir, seed, callback, resume)
        self.spec = DiffusionSpec(
            kind=cfg.model, resolution=self.data.resolution, num_classes=len(self.classes),
            class_modality=self.class_modality,
            autoencoder=cfg.autoencoder, ae_channels=list(cfg.ae_channels), unet_channels=list(cfg.unet_channels),
            sample_steps=cfg.sample_steps, guidance=cfg.guidance, class_norm=cfg.class_norm and len(self.classes) > 1)
        torch.manual_seed(seed)
        self.G = LatentDiffusion(self.spec).to(self.device)  # "G": what is served (params counted as such)
        self.D = None
        self._check_labels()
        self.fmt = torch.contiguous_format
        self.amp_dtype = torch.bfloat16 if self.precision is Precision.BF16 else None
        self.denoiser = Denoiser(self.G)
        self.ema = EMA(self.G.unet, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.opt_ae = torch.optim.Adam(self.G.ae.parameters(), cfg.lr_ae) if self.G.ae is not None else None
        self.opt_unet = torch.optim.AdamW(self.G.unet.parameters(), cfg.lr_denoiser, weight_decay=0.0)
        self.sched = train_scheduler()
        self._make_sampler()
        self.ae_steps = cfg.ae_steps if self.G.ae is not None else 0  # a patch coder has nothing to train
        self.denoiser_steps = cfg.max_steps or cfg.epochs * self.steps_per_epoch
        self.decoder_steps = cfg.decoder_steps if self.spec.autoencoder == "cascade" else 0
        self.critic = PatchCritic(self.spec.channels).to(self.device) if self.decoder_steps else None
        self.opt_dec = self.opt_critic = None
        if self.critic is not None:
            self.opt_dec = torch.optim.Adam(self.G.ae.parameters(), DECODER_LR, betas=(0.5, 0.9))
            self.opt_critic = torch.optim.Adam(self.critic.parameters(), DECODER_LR, betas=(0.5, 0.9))
        self.latents: torch.Tensor | None = None
        self._ae_ddp = self._unet_ddp = None

    def _check_precision(self, cfg: TrainConfig) -> None:
        if cfg.precision is Precision.FP16:
            raise ConfigError("train.precision: fp16 is not offered for ldm (its latents overflow); use fp32 or bf16")

    # -- phases ------------------------------------------------------------------------------
    @property
    def total_steps(self) -> int:
        return self.denoiser_end + self.decoder_steps

    @property
    def denoiser_end(self) -> int:
        return self.ae_steps + self.denoiser_steps

    def in_ae_phase(self) -> bool:
        return self.global_step < self.ae_steps

    def in_decoder_phase(self) -> bool:
        return self.global_step >= self.denoiser_end and self.decoder_steps > 0

    def phase(self) -> int:
        """0: autoencoder, 1: denoiser, 2: the decoder's fine-tuning."""
        return 0 if self.in_ae_phase() else 2 if self.in_decoder_phase() else 1

    def _wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        if not self.info.enabled:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(module, device_ids=ids)

    def _enter_denoiser_phase(self) -> None:
        """Freeze the autoencoder, fix the latent scale (once) and encode the training set."""
        if self.G.ae is not None:
            self.G.ae.requires_grad_(False).eval()
        if self.global_step == self.ae_steps:  # later (a resume) the scales come with the weights
            self.G.latent_scale.fill_(latent_scale_of(self.G, self.data.x))
            if self.G.class_norm:
                shift, scale = class_stats_of(self.G, self.data.x, self.data.y)
                self.G.class_shift.copy_(shift)
                self.G.class_scale.copy_(scale)
        self.latents = encode_all(self.G, self.data.x, self.data.y if self.G.class_norm else None)

    # -- checkpoints -------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {
            "model_spec": self.spec.to_dict(), "data": self.data.fingerprint(),
            "model": self.G.state_dict(), "ema": self.ema.state_dict() if self.ema else {},
            "opt_ae": self.opt_ae.state_dict() if self.opt_ae else {}, "opt_unet": self.opt_unet.state_dict(), "rng": ckpt.rng_state(),
            "epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "global_step": self.global_step,
            "seed": self.seed, "world_size": self.info.world_size, "batch_size": self.cfg.batch_size,
            "ae_steps": self.ae_steps, "denoiser_end": self.denoiser_end,
            **self._decoder_state(),
        }

    def _decoder_state(self) -> dict[str, Any]:
        """The critic and both optimisers of the decoder phase, once it has begun (empty before)."""
        if self.critic is None or self.global_step <= self.denoiser_end:
            return {"critic": {}, "opt_dec": {}, "opt_critic": {}}
        return {"critic": self.critic.state_dict(), "opt_dec": self.opt_dec.state_dict(),
                "opt_critic": self.opt_critic.state_dict()}

    def maybe_resume(self) -> None:
        if not self.resume or not self.ckpt_path.exists():
            return
        snap = ckpt.load(self.ckpt_path)
        sampling = ("sample_steps", "guidance")  # how the served model samples, not what was trained
        ckpt.check_compatible(self.ckpt_path, {**snap, "model_spec": {k: v for k, v in snap["model_spec"].items()
                                                                       if k not in sampling}},
                              {k: v for k, v in self.spec.to_dict().items() if k not in sampling},
                              self.data.fingerprint(),
                              defaults={k: v for k, v in DiffusionSpec().to_dict().items() if k not in sampling})
        self._check_run_settings(snap, {"ae_steps": self.ae_steps})
        self.G.load_state_dict(snap["model"])
        if self.ema and snap["ema"]:
            self.ema.load_state_dict(snap["ema"])
        if self.opt_ae is not None:
            self.opt_ae.load_state_dict(snap["opt_ae"])
        self.opt_unet.load_state_dict(snap["opt_unet"])
        if snap.get("critic"):  # the decoder's fine-tuning had begun: its phase must start where it did
            if self.critic is None or int(snap["denoiser_end"]) != self.denoiser_end:
                raise ConfigError(f"{self.ckpt_path}: the decoder's fine-tuning began after step {snap['denoiser_end']}; "
                                  "resume it with the same ae_steps / max_steps and decoder_steps > 0 (to train the "
                                  f"denoiser further, start from {DENOISER_END} beside it: copy it over {ckpt.LAST})")
            self.critic.load_state_dict(snap["critic"])
            self.opt_dec.load_state_dict(snap["opt_dec"])
            self.opt_critic.load_state_dict(snap["opt_critic"])
        ckpt.set_rng_state(snap["rng"])
        self.epoch, self.step_in_epoch = int(snap["epoch"]), int(snap["step_in_epoch"])
        self.global_step = self.resumed_from = int(snap["global_step"])

    # -- one step ----------------------------------------------------------------------------
    def _set_lr(self, opt: torch.optim.Optimizer, base: float, phase_step: int, steps_left: int | None = None) -> float:
        """Linear warm-up over WARMUP steps; with ``steps_left`` (the denoiser) and ``lr_cooldown_steps``, a linear
        fall to 0 over the phase's last steps. A function of the step alone, so a resumed run repeats it."""
        lr = base * min(1.0, (phase_step + 1) / WARMUP)
        cool = self.cfg.lr_cooldown_steps
        if steps_left is not None and cool > 0:
            lr *= min(1.0, steps_left / cool)
        for g in opt.param_groups:
            g["lr"] = lr
        return lr

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None)

    def train_step(self, idx: torch.Tensor) -> torch.Tensor:
        """One optimiser step; returns [loss, l1 (coder phases) or 0, lr, critic loss (decoder phase) or 0] averaged
        over ranks."""
        cfg, dev = self.cfg, self.device
        if self.in_decoder_phase():
            return self._decoder_step(idx)
        gen = torch.Generator(dev).manual_seed(step_seed(self.seed, self.info.rank, self.global_step))
        if self.in_ae_phase():
            if self._ae_ddp is None:
                self._ae_ddp = self._wrap(self.G.ae)
            lr = self._set_lr(self.opt_ae, cfg.lr_ae, self.global_step)
            x = to_unit_tensor(self.data.x[idx].to(dev, non_blocking=True))
            with self._autocast():
                loss, l1 = self.G.coder_loss(x, self._ae_ddp)
            opt = self.opt_ae
        else:
            if self.latents is None:
                self._enter_denoiser_phase()
            if self._unet_ddp is None:
                self._unet_ddp = self._wrap(self.denoiser)
            lr = self._set_lr(self.opt_unet, cfg.lr_denoiser, self.global_step - self.ae_steps,
                              steps_left=self.denoiser_end - self.global_step)
            z0 = self.latents[idx.to(self.latents.device)]
            y = self.data.y[idx].to(dev) if self.spec.num_classes else None
            with self._autocast():
                loss = diffusion_loss(self._unet_ddp, self.sched, z0, y, self.G.null_class, gen)
            l1 = torch.zeros((), device=dev)
            opt = self.opt_unet
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 1.0)
        opt.step()
        if self.ema and not self.in_ae_phase():  # (the decoder phase returned above: the denoiser is done)
            self.ema.update(self.G.unet)
        stats = torch.stack([loss.detach().float(), l1.detach().float(), torch.tensor(lr, device=dev),
                             torch.zeros((), device=dev)])
        return dist_util.all_mean(stats, self.info)

    def _decoder_step(self, idx: torch.Tensor) -> torch.Tensor:
        """One step of the super-resolver and its critic together (the decoder's loss uses the critic as it was
        before this step). Gradients are averaged over ranks by hand: the critic is applied twice per step."""
        dev = self.device
        self.G.ae.requires_grad_(True).train()
        lr = self._set_lr(self.opt_dec, DECODER_LR, self.global_step - self.denoiser_end)
        self._set_lr(self.opt_critic, DECODER_LR, self.global_step - self.denoiser_end)
        x = to_unit_tensor(self.data.x[idx].to(dev, non_blocking=True))
        with self._autocast():
            critic_loss, dec_loss, l1 = decoder_gan_losses(self.G, self.G.ae, self.critic, x, self.cfg.decoder_adv_weight)
        dec_params, critic_params = list(self.G.ae.parameters()), list(self.critic.parameters())
        self.opt_dec.zero_grad(set_to_none=True)
        self.opt_critic.zero_grad(set_to_none=True)
        torch.autograd.backward(dec_loss, inputs=dec_params)
        torch.autograd.backward(critic_loss, inputs=critic_params)
        for params, opt in ((dec_params, self.opt_dec), (critic_params, self.opt_critic)):
            dist_util.all_mean_grads(params, self.info)
            opt.step()
        stats = torch.stack([dec_loss.detach().float(), l1.detach().float(), torch.tensor(lr, device=dev),
                             critic_loss.detach().float()])
        return dist_util.all_mean(stats, self.info)

    # -- evaluation --------------------------------------------------------------------------
    def served_model(self) -> LatentDiffusion:
        """The model to sample from: the autoencoder with the EMA denoiser (a copy; training goes on)."""
        import copy

        net = copy.deepcopy(self.G).eval()
        if self.ema:
            net.unet.load_state_dict(self.ema.model.state_dict())
        return net

    @torch.no_grad()
    def sample_fixed(self) -> np.ndarray:
        n = self.cfg.sample_count
        labels = (np.arange(n) % self.spec.num_classes) if self.spec.num_classes else None
        return DiffusionSampler(self.served_model(), self.data.classes, device=self.device).generate(
            n, self.seed + 12_345, labels)

    @torch.no_grad()
    def reconstructions(self) -> np.ndarray:
        """Real images (top half) above their autoencoder reconstructions (bottom half)."""
        n = self.cfg.sample_count // 2
        x = to_unit_tensor(self.data.x[torch.linspace(0, len(self.data.x) - 1, n).long()]).to(self.device)
        if self.G.ae is None:
            return torch.cat([x, x]).float().cpu().numpy()
        self.G.ae.eval()
        recon = self.G.reconstruct(x).clamp(-1, 1)
        self.G.ae.train(self.in_ae_phase())
        return torch.cat([x, recon]).float().cpu().numpy()

    # -- the loop ----------------------------------------------------------------------------
    def _fit(self) -> TrainResult:
        t_start = time.perf_counter()
        self.maybe_resume()
        cfg = self.cfg
        if not self.in_ae_phase():
            self._enter_denoiser_phase()
        metrics: dict[str, float] = {}
        last_grid = self.global_step
        window, n_win, t_win = torch.zeros(4), 0, time.perf_counter()
        bar = progress(range(self.global_step, self.total_steps), desc="train ldm", total=self.total_steps - self.global_step,
                       unit="step")
        bar_it = iter(bar)
        clock = TimeBudget(cfg.max_minutes)
        while self.global_step < self.total_steps and not clock.spent:
            self.sampler.set_epoch(self.epoch)
            order = torch.tensor(list(iter(self.sampler)), dtype=torch.long)
            batches = order[: self.steps_per_epoch * cfg.batch_size].view(self.steps_per_epoch, cfg.batch_size)
            for s in range(self.step_in_epoch, self.steps_per_epoch):
                phase = self.phase()
                stats = self.train_step(batches[s]).cpu()
                next(bar_it, None)
                if not torch.isfinite(stats[0]):
                    raise TrainingError(f"step {self.global_step + 1}: non-finite loss ({stats[0]:.4g}); training "
                                        f"stopped, last good checkpoint kept at {self.ckpt_path} (try a lower "
                                        "learning rate or fp32)")
                self.global_step += 1
                self.step_in_epoch = s + 1
                window += stats
                n_win += 1
                phase_end = phase != self.phase()
                last = self.global_step >= self.total_steps or clock.check()
                if self.global_step % cfg.log_every == 0 or last or phase_end:
                    m = window / n_win
                    dt = time.perf_counter() - t_win
                    metrics = [{"loss_ae": float(m[0]), "ae_l1": float(m[1]), "lr_ae": float(m[2])},
                               {"loss_diffusion": float(m[0]), "lr_denoiser": float(m[2])},
                               {"loss_decoder": float(m[0]), "decoder_l1": float(m[1]), "lr_decoder": float(m[2]),
                                "loss_critic": float(m[3])}][phase]
                    metrics["images_per_s"] = n_win * cfg.batch_size * self.info.world_size / max(dt, 1e-9)
                    metrics["phase"] = float(phase)
                    if self.info.is_main:
                        self.callback.on_step(self.global_step, metrics)
                    window.zero_()
                    n_win, t_win = 0, time.perf_counter()
                if phase_end and phase == 0:
                    self._enter_denoiser_phase()
                    self.save()
                    if self.info.is_main:
                        self.callback.on_epoch_end(self.epoch + 1, {**metrics, "latent_scale": float(self.G.latent_scale)},
                                                   make_grid(self.reconstructions()))
                    last_grid = self.global_step
                elif phase_end or self.global_step % cfg.checkpoint_every == 0:
                    self.save()
                    if phase_end and self.info.is_main:  # the denoiser is done: kept apart, to train it further later
                        with atomic_path(self.ckpt_path.with_name(DENOISER_END)) as tmp:
                            shutil.copyfile(self.ckpt_path, tmp)
                if not self.in_ae_phase() and (self.global_step - last_grid >= GRID_EVERY or last):
                    metrics = {**metrics, **self.epoch_metrics()}
                    if self.info.is_main:
                        self.callback.on_epoch_end(self.epoch + 1, metrics, make_grid(self._last_fake))
                    last_grid = self.global_step
                if last:
                    break
            if self.step_in_epoch >= self.steps_per_epoch:
                self.epoch, self.step_in_epoch = self.epoch + 1, 0
        self.save()
        net = self.served_model().to("cpu")
        return self._finish(net, metrics, t_start)

    def epoch_metrics(self) -> dict[str, float]:
        fake = self.sample_fixed()
        self._last_fake = fake
        return diversity_report(fake, self.spec.num_classes, self.data, self.seed, self.cfg.collapse_threshold)
