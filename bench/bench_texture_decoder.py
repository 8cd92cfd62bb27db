"""The cascade's decoder with and without adversarial fine-tuning, judged on real images passed through it.

The cascade's super-resolver, trained on L1 alone, returns the median of the details a coarse view allows:
smooth images whose pairs look more alike than real pairs do (the gate's diversity floor, pair MS-SSIM at full
resolution, reads 1.27 for real ChestCT slices passed through it; ceiling 1.25). This fine-tunes a copy of a
snapshot's super-resolver with L1 + a conditional patch critic (``decoder_gan_losses``, the loss of
``train.decoder_steps``) on the training split and judges the real *val* split's reconstructions before and after
(as bench/bench_coders.py):

    .venv/bin/python bench/bench_texture_decoder.py --dataset ct \\
        --checkpoint artifacts/zoo/ct/train/checkpoints/last.pt --steps 600 --adv-weight 0.1

Writes ``--out``/decoders.png (real val images above the L1 and the fine-tuned decoders' reconstructions).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def fine_tune(net, x_train: np.ndarray, steps: int, adv_weight: float, lr: float, batch: int, seed: int = 0):
    """A copy of ``net`` whose super-resolver is fine-tuned ``steps`` steps (critic and decoder stepped together)."""
    from medsynth.training.diffusion import PatchCritic, decoder_gan_losses

    torch.manual_seed(seed)
    net = copy.deepcopy(net)
    critic = PatchCritic(net.spec.channels)
    opt_dec = torch.optim.Adam(net.ae.parameters(), lr, betas=(0.5, 0.9))
    opt_critic = torch.optim.Adam(critic.parameters(), lr, betas=(0.5, 0.9))
    net.ae.train().requires_grad_(True)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        idx = torch.randint(len(x_train), (batch,), generator=gen)
        x = torch.from_numpy(x_train[idx.numpy()]).float()
        c_loss, d_loss, l1 = decoder_gan_losses(net, net.ae, critic, x, adv_weight)
        opt_dec.zero_grad(set_to_none=True)
        opt_critic.zero_grad(set_to_none=True)
        torch.autograd.backward(d_loss, inputs=list(net.ae.parameters()))
        torch.autograd.backward(c_loss, inputs=list(critic.parameters()))
        opt_dec.step()
        opt_critic.step()
        if step % 50 == 0 or step == steps:
            print(f"  step {step}/{steps}: L1 {float(l1) * 127.5:.2f} grey levels, critic {float(c_loss):.3f}, "
                  f"decoder {float(d_loss):.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return net.eval()


@torch.no_grad()
def reconstruct(net, x: np.ndarray) -> np.ndarray:
    return torch.cat([net.reconstruct(torch.from_numpy(x[i:i + 256]).float()).clamp(-1, 1)
                      for i in range(0, len(x), 256)]).numpy()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ct")
    ap.add_argument("--checkpoint", required=True, help="an ldm checkpoints/last.pt or generator.pt (autoencoder: cascade)")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--adv-weight", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", default="artifacts/bench/texture_decoder")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)

    from bench_coders import judge, load_ldm
    from judge_families import bench_project, prepared
    from PIL import Image

    from medsynth.config import read_params
    from medsynth.imaging import make_grid

    net, _ = load_ldm(a.checkpoint)
    if net.spec.autoencoder != "cascade":
        raise SystemExit(f"{a.checkpoint}: autoencoder {net.spec.autoencoder!r}; this fine-tunes the cascade's decoder")
    data, _ = prepared(bench_project(), read_params(None), a.dataset)
    x_train, _ = data.split("train")
    x, y = data.split("val")
    tuned = fine_tune(net, x_train, a.steps, a.adv_weight, a.lr, a.batch)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(tuned.ae.state_dict(), out / "decoder.pt")
    pick = np.linspace(0, len(x) - 1, 8).astype(int)
    rows = [x[pick], reconstruct(net, x[pick]), reconstruct(tuned, x[pick])]
    Image.fromarray(make_grid(np.concatenate(rows), cols=8, scale=2)).save(out / "decoders.png")
    labels = y if data.num_classes > 1 else None
    for name, model in (("L1 decoder", net), (f"fine-tuned ({a.steps} steps, adversarial weight {a.adv_weight:g})", tuned)):
        r = reconstruct(model, x)
        print(f"{name}: mean absolute error {np.abs(r - x).mean() * 127.5:.2f} grey levels")
        m = judge(a.dataset, r.astype(np.float32), labels, "reconstructions", "images")
        print(f"  diversity ratio (pair MS-SSIM generated / real): "
              f"{m['diversity_ms_ssim_generated'] / m['diversity_ms_ssim_real']:.3f}; gate's diversity floor: "
              f"{m['gate_floors']['diversity']['detail']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
