"""Time-to-quality: our default recipe vs the pytorch/examples DCGAN recipe, side by side.

Both trainers live in one process and take turns (``--slice`` seconds of training each), so load
from anything else on a shared machine falls on both alike. Every ``--probe-every`` seconds of a
trainer's own training time (probe time excluded) its EMA generator (the raw G for the reference,
which has no EMA) makes ``--probe-n`` images, class-balanced, scored against the real data with
the project's judge: FID-domain vs the real test split (beside the real-train floor) and C2ST AUC
(0.5 = indistinguishable). The figure of merit is the training time until FID-domain <= k x floor
and C2ST AUC <= t (the gate's floors, promote.gate in params.yaml).

    .venv/bin/python bench/bench_recipe.py --dataset ct --minutes 10 --write docs/BENCHMARKS.md

The prepared data comes from ``medsynth ingest/validate/preprocess`` (``--prepared``) and the
extractor from ``medsynth features`` (``--extractor``); both default to the project's artifacts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchdoc  # noqa: E402

REFERENCE = {  # pytorch/examples dcgan/main.py: transposed convs, BCE, no SN/augmentation/EMA, 64 filters
    "arch": "dcgan", "loss": "ns", "spectral_norm": False, "diffaugment": [], "ema_decay": 0.0,
    "ngf": 64, "ndf": 64, "lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5, "beta2": 0.999,
}


def make_trainer(name: str, overrides: dict, data, out: Path, model: str, threads: int):
    from medsynth.config import read_params
    from medsynth.training.config import TrainConfig, load_train_config, replace
    from medsynth.training.trainer import Trainer

    base = load_train_config(read_params(None), {"train.profile": "zoo"})
    cfg = replace(base, model=model, epochs=10_000, max_steps=0, checkpoint_every=10**9, threads=threads,
                  **overrides)
    assert isinstance(cfg, TrainConfig)
    return Trainer(cfg, data, out / name, seed=0, resume=False)


class Arm:
    """One trainer stepped in slices, with its own training clock and probe history."""

    def __init__(self, name: str, trainer):
        self.name, self.t = name, trainer
        self.train_s, self.history, self.epoch_batches, self.pos = 0.0, [], None, 0

    def _next_batch(self) -> torch.Tensor:
        t = self.t
        if self.epoch_batches is None or self.pos >= len(self.epoch_batches):
            t.sampler.set_epoch(t.epoch)
            order = torch.tensor(list(iter(t.sampler)), dtype=torch.long)
            n = t.steps_per_epoch * t.cfg.batch_size
            self.epoch_batches, self.pos = order[:n].view(t.steps_per_epoch, t.cfg.batch_size), 0
            t.epoch += 1
        b = self.epoch_batches[self.pos]
        self.pos += 1
        return b

    def run_for(self, seconds: float) -> None:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            self.t.train_step(self._next_batch())
            self.t.global_step += 1
        self.train_s += time.perf_counter() - t0

    @torch.no_grad()
    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray | None]:
        t = self.t
        net = t.ema.model if t.ema else t.G
        t._calibrate(net)
        was = net.training
        net.eval()
        c = t.spec.num_classes
        y = torch.arange(n) % c if c else None
        z = torch.randn(n, t.cfg.nz, generator=torch.Generator().manual_seed(7))
        with torch.autocast("cpu", dtype=t.amp_dtype or torch.float32, enabled=t.amp_dtype is not None):
            x = torch.cat([net(z[i:i + 250], y[i:i + 250] if y is not None else None).float()
                           for i in range(0, n, 250)])
        net.train(was)
        return x.clamp(-1, 1).numpy(), (y.numpy() if y is not None else None)


def real_diversity(real_train: np.ndarray, real_labels: np.ndarray, conditional: bool) -> dict:
    """Mean pairwise distance of (up to 200) real training images, per class (key None: unconditional)."""
    from medsynth.training.sampler import diversity

    if not conditional:
        return {None: diversity(real_train[:200])}
    return {int(c): diversity(real_train[real_labels == c][:200]) for c in np.unique(real_labels)}


def judge(fake: np.ndarray, labels: np.ndarray | None, real_train: np.ndarray, real_div: dict,
          test_feats: np.ndarray, module) -> dict[str, float]:
    """FID-domain, C2ST AUC and, per class, generated/real diversity (the lowest class: collapse)."""
    from medsynth.c2st import c2st
    from medsynth.metrics import extract, frechet
    from medsynth.training.sampler import diversity

    ratios = []
    for c in (np.unique(labels) if labels is not None else [None]):
        f = fake if c is None else fake[labels == c]
        ratios.append(diversity(f[:200]) / max(real_div[None if c is None else int(c)], 1e-8))
    return {"fid_domain": frechet(test_feats, extract(module, fake)),
            "c2st_auc": c2st(real_train, fake, seed=0).auc, "diversity_min": float(min(ratios))}


def parse_arm(text: str) -> tuple[str, dict]:
    """``"NAME:key=value,key=value"`` -> (name, train overrides on top of our default recipe)."""
    import yaml

    name, _, spec = text.partition(":")
    if not name or not spec:
        raise SystemExit(f"--arm: expected NAME:key=value[,key=value], got {text!r}")
    out = {}
    for item in spec.split(","):
        key, _, value = item.partition("=")
        out[key.strip()] = yaml.safe_load(value)
    return name.strip(), out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ct")
    ap.add_argument("--prepared", default=None, help="prepared data (default: artifacts/zoo/<dataset>/preprocess)")
    ap.add_argument("--extractor", default="artifacts/features/domain_cnn")
    ap.add_argument("--minutes", type=float, default=10.0, help="training minutes per arm")
    ap.add_argument("--slice", type=float, default=20.0, help="seconds each arm trains before the other's turn")
    ap.add_argument("--probe-every", type=float, default=120.0, help="training seconds between probes")
    ap.add_argument("--probe-n", type=int, default=600)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="artifacts/bench_recipe")
    ap.add_argument("--write", default=None, help="write the section into this BENCHMARKS.md")
    ap.add_argument("--figure", default=None, help="also save every arm's final grid side by side here "
                    "(e.g. docs/results/SYNTHETIC_time_to_quality_ct.png)")
    ap.add_argument("--arm", action="append", default=[],
                    help="an extra arm, our default recipe with changes: 'NAME:key=value[,key=value]' "
                    "(e.g. 'ours + mode seeking:mode_seeking=1.0'); repeatable")
    a = ap.parse_args()

    from medsynth.components.promote import PromoteConfig
    from medsynth.components.train import load_train_data
    from medsynth.config import load_stage, read_params
    from medsynth.extractor import load_extractor
    from medsynth.metrics import extract, frechet
    from medsynth.prepared import PreparedData

    prepared = Path(a.prepared or f"artifacts/zoo/{a.dataset}/preprocess")
    data = load_train_data(prepared)
    pd = PreparedData.load(prepared)
    x_test = np.asarray(pd.split("test")[0], dtype=np.float32)
    ext = load_extractor(a.extractor)
    module = ext.feature_module().eval()
    real_train = data.x.float().div(127.5).sub(1).numpy()
    rng = np.random.default_rng(0)
    floor_idx = rng.choice(len(real_train), min(a.probe_n, len(real_train)), replace=False)
    test_feats = extract(module, x_test)
    floor = frechet(test_feats, extract(module, real_train[floor_idx]))
    gate = load_stage(PromoteConfig, "promote", read_params(None), {}).gate
    k, t_auc = getattr(gate, "max_fid_floor_ratio", None), getattr(gate, "max_c2st_auc", None)
    model = "cgan" if len(data.classes) > 1 else "dcgan"
    out = Path(a.out) / a.dataset
    arms = [Arm("reference (pytorch/examples DCGAN)", make_trainer("reference", REFERENCE, data, out, model, a.threads)),
            Arm("ours (default recipe, zoo widths)", make_trainer("ours", {}, data, out, model, a.threads))]
    for i, text in enumerate(a.arm):
        name, overrides = parse_arm(text)
        arms.append(Arm(name, make_trainer(f"extra{i}", overrides, data, out, model, a.threads)))
    real_div = real_diversity(real_train, data.y.numpy(), model == "cgan")
    budget = a.minutes * 60
    next_probe = [0.0] * len(arms)
    t_start = time.perf_counter()
    while min(arm.train_s for arm in arms) < budget:
        for i, arm in enumerate(arms):
            if arm.train_s >= budget:
                continue
            arm.run_for(min(a.slice, budget - arm.train_s))
            if arm.train_s >= next_probe[i] or arm.train_s >= budget:
                fake, labels = arm.sample(a.probe_n)
                s = judge(fake, labels, real_train, real_div, test_feats, module)
                arm.history.append({"train_s": round(arm.train_s, 1), "step": arm.t.global_step, **s})
                print(f"[{time.perf_counter() - t_start:6.0f}s] {arm.name}: {arm.train_s:5.0f}s trained, step "
                      f"{arm.t.global_step}, FID-domain {s['fid_domain']:.3f} (floor {floor:.3f}), "
                      f"C2ST AUC {s['c2st_auc']:.3f}, diversity (lowest class) x{s['diversity_min']:.2f} real", flush=True)
                next_probe[i] = arm.train_s + a.probe_every
    grids = []
    for arm in arms:
        fake, labels = arm.sample(64)
        from PIL import Image

        from medsynth.imaging import make_grid

        out.mkdir(parents=True, exist_ok=True)
        grids.append((arm.name, make_grid(fake)))
        Image.fromarray(grids[-1][1]).save(out / f"SYNTHETIC_{arm.t.out_dir.name}_grid.png")
    if a.figure:
        side_by_side(grids, f"{a.minutes:g} min", Path(a.figure))
    result = {"dataset": a.dataset, "floor": floor, "k": k, "t": t_auc, "machine": benchdoc.machine(),
              "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "arms": {arm.name: arm.history for arm in arms}}
    (out / "result.json").write_text(json.dumps(result, indent=2))
    if a.write:
        write(Path(a.write), result, a)
    return 0


def side_by_side(grids: list[tuple[str, np.ndarray]], budget: str, path: Path) -> None:
    """Each arm's grid under a red SYNTHETIC band naming the recipe, left to right (one PNG)."""
    from PIL import Image, ImageDraw

    band, gap = 16, 14
    h = max(g.shape[0] for _, g in grids)
    canvas = Image.new("RGB", (sum(g.shape[1] for _, g in grids) + gap * (len(grids) - 1), band + h), "white")
    d = ImageDraw.Draw(canvas)
    x = 0
    for name, g in grids:
        d.rectangle([x, 0, x + g.shape[1] - 1, band - 2], fill=(200, 30, 30))
        d.text((x + 4, 2), f"SYNTHETIC - {name}, {budget}", fill="white")
        canvas.paste(Image.fromarray(g).convert("RGB"), (x, band))
        x += g.shape[1] + gap
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def _reached(history: list[dict], floor: float, k: float | None, t: float | None) -> str:
    for h in history:
        if (k is None or h["fid_domain"] <= k * floor) and (t is None or h["c2st_auc"] <= t):
            return f"{h['train_s'] / 60:.1f} min"
    return "not within the budget"


def write(doc: Path, r: dict, a: argparse.Namespace) -> None:
    extra = "".join(f" --arm '{t}'" for t in a.arm)
    lines = [f"Command: `.venv/bin/python bench/bench_recipe.py --dataset {a.dataset} --minutes {a.minutes:g} "
             f"--probe-every {a.probe_every:g}{extra} --write docs/BENCHMARKS.md`  ",
             f"Machine: {r['machine']} (torch CPU capability {r['cpu_capability']}); both arms in one process, "
             f"alternating {a.slice:g} s slices. Real floor FID-domain {r['floor']:.3f}; gate floors k = {r['k']}, "
             f"t = {r['t']}.", "",
             "| recipe | training min | steps | FID-domain | x floor | C2ST AUC | diversity x real (lowest class) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, hist in r["arms"].items():
        for h in hist:
            lines.append(f"| {name} | {h['train_s'] / 60:.1f} | {h['step']} | {h['fid_domain']:.3f} | "
                         f"{h['fid_domain'] / r['floor']:.1f} | {h['c2st_auc']:.3f} | {h['diversity_min']:.2f} |")
    lines.append("")
    for name, hist in r["arms"].items():
        lines.append(f"- {name}: floors reached after {_reached(hist, r['floor'], r['k'], r['t'])}")
    benchdoc.write_section(doc, "\n".join(lines), f"recipe_{a.dataset}",
                           f"## Time to quality ({a.dataset}): default recipe vs pytorch/examples DCGAN")


if __name__ == "__main__":
    sys.exit(main())
