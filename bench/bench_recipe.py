"""Time-to-quality: latent diffusion vs the best GAN recipe (and optionally pytorch/examples' DCGAN), side by side.

    .venv/bin/python bench/bench_recipe.py --dataset ct --minutes 20 --write docs/BENCHMARKS.md \\
        --figure docs/results/SYNTHETIC_time_to_quality_ct.png

1. The dataset is prepared as params.yaml says (ingest -> validate -> preprocess, untracked, in
   bench/out/judge/, shared with bench/judge_families.py) and the domain extractor trained once.
2. Every arm is a real trainer (``make_trainer``: the GAN ``Trainer`` or the ``DiffusionTrainer``)
   with params.yaml's ``train:`` under ``profile: zoo``; the arms live in one process and take turns
   (``--slice`` seconds each), so load from anything else on a shared machine falls on all alike.
   ``gan`` is today's default recipe (conditional, resize-convolution G, minibatch std, DiffAugment,
   EMA), ``ldm`` the latent diffusion model, ``reference`` pytorch/examples' DCGAN settings.
3. Every ``--probe-every`` seconds of an arm's own training time (probe time excluded) its served
   model (EMA weights) makes ``--probe-n`` class-balanced images, timed (generation ms per image), and
   ``medsynth evaluate``'s own ``score`` judges them under the gate policy of params.yaml: the probe's
   verdict *is* the gate's (grade, failed floors), beside FID-domain of the 16 px view over its floor,
   recall and coverage at 16 px (worst class), C2ST at 16 px and at full resolution, and (conditional,
   where the real classifier is not at ceiling) the synthetic-only classifier ratio. Speed-ups that do
   not touch the floors, as in judge_families: no FID bootstrap, C2ST on at most 1,000 images per set.
4. Each arm's last samples are saved beside real test images of the same classes (``--figure``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchdoc  # noqa: E402

REFERENCE = {  # pytorch/examples dcgan/main.py: transposed convs, BCE, no SN/augmentation/EMA, 64 filters
    "arch": "dcgan", "loss": "ns", "spectral_norm": False, "diffaugment": [], "ema_decay": 0.0,
    "minibatch_std": False, "ngf": 64, "ndf": 64, "lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5, "beta2": 0.999,
}
RECIPES = {"reference": ("pytorch/examples DCGAN", {"model": "cgan"} | REFERENCE),
           "gan": ("GAN (default recipe, zoo widths)", {"model": "cgan"}),
           "ldm": ("latent diffusion (ldm)", {"model": "ldm"})}


def make_trainer(name: str, overrides: dict, data: Any, out: Path, threads: int) -> Any:
    from medsynth.config import read_params
    from medsynth.training import trainer as T
    from medsynth.training.train_config import load_train_config, replace

    base = load_train_config(read_params(None), {"train.profile": "zoo"})
    model = overrides.get("model", base.model)
    if len(data.classes) < 2 and model == "cgan":
        overrides = overrides | {"model": "dcgan"}
    cfg = replace(base, epochs=100_000, max_steps=0, checkpoint_every=10**9, threads=threads, **overrides)
    return T.make_trainer(cfg, data, out / name, seed=0, resume=False)


class Arm:
    """One trainer stepped in slices, with its own training clock and probe history."""

    def __init__(self, key: str, name: str, trainer: Any):
        self.key, self.name, self.t = key, name, trainer
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

    def sampler(self) -> Any:
        """The served model behind the ImageGenerator protocol (EMA weights where the recipe keeps them)."""
        from medsynth.training.diffusion import DiffusionSampler
        from medsynth.training.sampler import GANSampler

        t = self.t
        classes = t.data.classes if t.spec.num_classes else []
        if hasattr(t, "served_model"):
            return DiffusionSampler(t.served_model(), classes)
        net = t.ema.model if t.ema else t.G
        t._calibrate(net)
        return GANSampler(net, classes)


def class_balanced(n: int, num_classes: int) -> np.ndarray | None:
    return np.arange(n) % num_classes if num_classes else None


def probe(arm: Arm, n: int, cfg: Any, data: Any, ext: Any, policy: Any) -> dict[str, Any]:
    from medsynth.components.evaluate import ImageSet, score
    from medsynth.components.gate import per_class

    gen = arm.sampler()
    labels = class_balanced(n, arm.t.spec.num_classes)
    t0 = time.perf_counter()
    x = gen.generate(n, seed=7, labels=labels)
    gen_ms = (time.perf_counter() - t0) * 1000 / n
    m, _ = score(cfg, ImageSet(x, labels, f"bench:{arm.key}", kind="generator"), data, ext, seed=0, gate=policy)

    def worst(key: str) -> float | None:
        vals = per_class(m, key) or ({"all": m[key]} if key in m else {})
        return float(min(vals.values())) if vals else None

    return {"train_s": round(arm.train_s, 1), "step": int(arm.t.global_step), "gen_ms_per_image": round(gen_ms, 2),
            "grade": m.get("gate_grade"), "failed": [f for f, r in m.get("gate_floors", {}).items() if not r["passed"]],
            "fid16_ratio": m.get("fid_domain_16px_ratio_to_floor"), "recall16_min": worst("prdc_recall_16px"),
            "coverage16_min": worst("prdc_coverage_16px"), "c2st16": m.get("c2st_auc_16px"),
            "c2st": m.get("c2st_auc"), "cas_ratio": m.get("utility_cas_ratio")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ct")
    ap.add_argument("--arms", default="gan,ldm", help=f"comma-separated, of {', '.join(RECIPES)}")
    ap.add_argument("--minutes", type=float, default=20.0, help="training minutes per arm")
    ap.add_argument("--slice", type=float, default=30.0, help="seconds each arm trains before the next one's turn")
    ap.add_argument("--probe-every", type=float, default=300.0, help="training seconds between probes")
    ap.add_argument("--probe-n", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="bench/out/recipe")
    ap.add_argument("--write", default=None, help="write the section into this BENCHMARKS.md")
    ap.add_argument("--figure", default=None, help="save every arm's last samples beside real ones here")
    ap.add_argument("--arm", action="append", default=[],
                    help="an extra arm: 'NAME:key=value[,key=value]' on top of the default GAN recipe "
                    "(e.g. 'ldm guidance 2:model=ldm,guidance=2.0'); repeatable")
    a = ap.parse_args()

    from judge_families import bench_project, prepared

    from medsynth.components.evaluate import EvaluateConfig
    from medsynth.components.gate import gate_policy
    from medsynth.components.train import load_train_data
    from medsynth.config import load_stage, read_params

    params = read_params(None)
    policy = gate_policy(params)
    project = bench_project()
    data_pd, ext = prepared(project, params, a.dataset)
    data = load_train_data(project.artifacts_path() / "zoo" / a.dataset / "preprocess")
    cfg = dataclasses.replace(load_stage(EvaluateConfig, "evaluate", params), bootstrap=0, c2st_max_images=1000)
    out = Path(a.out) / a.dataset
    arms = []
    for key in [k.strip() for k in a.arms.split(",") if k.strip()]:
        if key not in RECIPES:
            raise SystemExit(f"--arms: unknown recipe {key!r}; valid: {', '.join(RECIPES)}")
        name, overrides = RECIPES[key]
        arms.append(Arm(key, name, make_trainer(key, overrides, data, out, a.threads)))
    for i, text in enumerate(a.arm):
        name, overrides = parse_arm(text)
        arms.append(Arm(f"extra{i}", name, make_trainer(f"extra{i}", overrides, data, out, a.threads)))
    budget = a.minutes * 60
    next_probe = [a.probe_every] * len(arms)
    t_start = time.perf_counter()
    while min(arm.train_s for arm in arms) < budget:
        for i, arm in enumerate(arms):
            if arm.train_s >= budget:
                continue
            arm.run_for(min(a.slice, budget - arm.train_s))
            if arm.train_s >= next_probe[i] or arm.train_s >= budget:
                h = probe(arm, a.probe_n, cfg, data_pd, ext, policy)
                arm.history.append(h)
                print(f"[{time.perf_counter() - t_start:6.0f}s] {arm.name}: " + ", ".join(
                    f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in h.items()), flush=True)
                next_probe[i] = arm.train_s + a.probe_every
    if a.figure:
        beside_real([(arm.name, arm.sampler()) for arm in arms], data_pd, f"{a.minutes:g} min", Path(a.figure))
    result = {"dataset": a.dataset, "machine": benchdoc.machine(), "policy_sha256": policy.sha256(),
              "cpu_capability": torch.backends.cpu.get_cpu_capability(), "probe_n": a.probe_n,
              "diffusion": any(arm.t.cfg.model == "ldm" for arm in arms),
              "arms": {arm.name: arm.history for arm in arms}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=2))
    if a.write:
        write(Path(a.write), result, a)
    return 0


def parse_arm(text: str) -> tuple[str, dict]:
    """``"NAME:key=value,key=value"`` -> (name, train overrides on top of the default recipe)."""
    import yaml

    name, _, spec = text.partition(":")
    if not name or not spec:
        raise SystemExit(f"--arm: expected NAME:key=value[,key=value], got {text!r}")
    out = {}
    for item in spec.split(","):
        key, _, value = item.partition("=")
        out[key.strip()] = yaml.safe_load(value)
    return name.strip(), out


def beside_real(gens: list[tuple[str, Any]], data: Any, budget: str, path: Path, per_class: int = 8) -> None:
    """One column block per arm (and real test images first), one row per class; synthetic under a red band."""
    from PIL import Image, ImageDraw, PngImagePlugin

    from medsynth.imaging import make_grid

    x_te, y_te = data.split("test")
    classes = data.classes if data.num_classes > 1 else [data.classes[0] if data.classes else "all"]
    blocks = []
    real = np.concatenate([x_te[np.flatnonzero(y_te == c)[:per_class]] for c in range(len(classes))])
    blocks.append(("REAL (test split)", make_grid(real, per_class, pad=2, fill=255), False))
    for name, gen in gens:
        lab = np.repeat(np.arange(len(classes)), per_class) if gen.classes else None
        fake = gen.generate(len(classes) * per_class, seed=11, labels=lab)
        blocks.append((f"SYNTHETIC - {name}, {budget}", make_grid(fake, per_class, pad=2, fill=255), True))
    band, gap = 16, 14
    h = max(g.shape[0] for _, g, _ in blocks)
    canvas = Image.new("RGB", (sum(g.shape[1] for _, g, _ in blocks) + gap * (len(blocks) - 1), band + h), "white")
    d = ImageDraw.Draw(canvas)
    x = 0
    for name, g, synthetic in blocks:
        d.rectangle([x, 0, x + g.shape[1] - 1, band - 2], fill=(200, 30, 30) if synthetic else (40, 40, 40))
        d.text((x + 4, 2), name, fill="white")
        canvas.paste(Image.fromarray(g).convert("RGB"), (x, band))
        x += g.shape[1] + gap
    info = PngImagePlugin.PngInfo()
    info.add_text("medsynth:synthetic", "contains synthetic images (every block under a red band)")
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, pnginfo=info)


def _f(v: Any, fmt: str = ".2f") -> str:
    return "-" if v is None else format(v, fmt)


def write(doc: Path, r: dict, a: argparse.Namespace) -> None:
    extra = "".join(f" --arm '{t}'" for t in a.arm)
    lines = [f"Command: `.venv/bin/python bench/bench_recipe.py --dataset {a.dataset} --arms {a.arms} "
             f"--minutes {a.minutes:g} --probe-every {a.probe_every:g} --probe-n {a.probe_n}{extra} "
             f"--write docs/BENCHMARKS.md`  ",
             f"Machine: {r['machine']} (torch CPU capability {r['cpu_capability']}); the arms in one process, "
             f"alternating {a.slice:g} s slices; every probe ({r['probe_n']} images) judged by evaluate's `score` "
             f"under the gate policy {r['policy_sha256'][:12]} (params.yaml).", "",
             "| recipe | training min | steps | generation ms / image | grade (failed floors) | FID-domain 16 px / "
             "floor | recall 16 px (worst class) | coverage 16 px (worst class) | C2ST 16 px | C2ST full res | "
             "CAS ratio |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, hist in r["arms"].items():
        for h in hist:
            verdict = h["grade"] + (f" ({', '.join(h['failed'])})" if h["failed"] else "")
            lines.append(f"| {name} | {h['train_s'] / 60:.1f} | {h['step']} | {h['gen_ms_per_image']:.1f} | {verdict} | "
                         f"{_f(h['fid16_ratio'])} | {_f(h['recall16_min'])} | {_f(h['coverage16_min'])} | "
                         f"{_f(h['c2st16'], '.3f')} | {_f(h['c2st'], '.3f')} | {_f(h['cas_ratio'])} |")
    lines.append("")
    for name, hist in r["arms"].items():
        first = next((h for h in hist if not h["failed"]), None)
        when = f"{first['train_s'] / 60:.1f} min" if first else "no probe within the budget"
        lines.append(f"- {name}: every floor passed after {when}")
    name, title = section_of(a.dataset, r["diffusion"])
    benchdoc.write_section(doc, "\n".join(lines), name, title)


def section_of(dataset: str, diffusion: bool) -> tuple[str, str]:
    """The BENCHMARKS block and heading of a run: one with a diffusion arm has its own block, so it does not
    overwrite the GAN-vs-reference curves (``recipe_DATASET``) written without one."""
    if diffusion:
        return f"recipe_ldm_{dataset}", f"## Time to quality ({dataset}): latent diffusion vs GAN"
    return f"recipe_{dataset}", f"## Time to quality ({dataset}): default recipe vs pytorch/examples DCGAN"


if __name__ == "__main__":
    sys.exit(main())
