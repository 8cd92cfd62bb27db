"""Training throughput: medsynth's trainer vs the pytorch/examples-style reference loop.

Both train the same 64 px DCGAN (nz=100, ngf=ndf=64, batch 64, non-saturating BCE loss, Adam
2e-4/0.5) on the bundled real CT images. Variants run round-robin in ONE process (R rounds, each
variant a few steps per round), so a busy shared machine slows all of them alike; the ratio of
medians is the figure to read. Each lever is measured on its own:

- ``reference``: DataLoader over per-image tensors, fp32, contiguous (pytorch/examples).
- ``reference+resident``: the same loop fed from one resident tensor (the data lever alone).
- ``ours fp32``: medsynth's Trainer.train_step (resident uint8 data, D frozen for the G
  backward, EMA update included).
- ``ours fp32 channels_last``, ``ours bf16``, ``ours bf16 channels_last``.
- ``ours default``: what a run gets without settings (``precision: auto``, channels_last): bf16 +
  channels_last on an AMX CPU, fp32 + channels_last elsewhere (training/train_config.py resolve_precision).

Peak memory: each configuration is run again in a fresh subprocess and its peak RSS read.
Quality: ``--quality`` trains fp32 and bf16 for the same steps at a small size and reports
losses, the diversity ratio and a real-data classifier's accuracy on conditional samples.

    python bench/bench_train.py --rounds 5 --steps 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_dcgan import Reference  # noqa: E402

from medsynth.training.loop import TrainData
from medsynth.training.train_config import load_train_config  # noqa: E402
from medsynth.training.trainer import Trainer  # noqa: E402
from medsynth.transforms import ImageTransform  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def ct_images(res: int = 64, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Bundled real CT train split as uint8 [N,1,R,R] (the prepared format) and labels."""
    from medsynth.prepared import to_uint8

    with np.load(REPO / "data" / "mednist_ct_small.npz") as z:
        x, y = z["train_images"], z["train_labels"].reshape(-1).astype(np.int64)
    if limit:
        x, y = x[:limit], y[:limit]
    return torch.from_numpy(to_uint8(ImageTransform(resolution=res).batch_uint8(x))), torch.from_numpy(y)


def make_variant(name: str, x: torch.Tensor, y: torch.Tensor, out: Path):
    """A zero-argument step function for a variant."""
    if name.startswith("reference"):
        ref = Reference(x)
        if name == "reference":
            return ref.step
        resident = x.float() / 127.5 - 1.0
        g = torch.Generator().manual_seed(1)
        return lambda: ref.step(resident[torch.randint(0, len(resident), (64,), generator=g)])
    precision = "auto" if name == "ours default" else "bf16" if "bf16" in name else "fp32"
    cfg = load_train_config({"train": {"model": "dcgan", "ngf": 64, "ndf": 64, "batch_size": 64, "epochs": 1,
                                       "precision": precision,
                                       "channels_last": "channels_last" in name or name == "ours default"}})
    tr = Trainer(cfg, TrainData(x, y, ["AbdomenCT", "ChestCT", "HeadCT"]), out / name.replace(" ", "_"), seed=0)
    g = torch.Generator().manual_seed(1)

    def step():
        tr.train_step(torch.randint(0, len(y), (64,), generator=g))
        tr.global_step += 1

    return step


def throughput(variants: list[str], rounds: int, steps: int, bf16_steps: int, out: Path) -> dict[str, list[float]]:
    x, y = ct_images(64)
    fns = {v: make_variant(v, x, y, out) for v in variants}
    for fn in fns.values():  # warm-up: oneDNN primitive creation, allocator
        fn()
    rates: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(rounds):
        for v, fn in fns.items():
            n = bf16_steps if "bf16" in v else steps
            t = time.perf_counter()
            for _ in range(n):
                fn()
            rates[v].append(64 * n / (time.perf_counter() - t))
        print(f"round {r + 1}/{rounds}: " + ", ".join(f"{v} {rates[v][-1]:.1f}" for v in variants), flush=True)
    return rates


def kernels(threads: int) -> list[dict]:
    """fp32 vs bf16 speed of one D conv (128->256 ch, 16->8 px, batch 64) and a 1024^3 matmul."""
    torch.set_num_threads(threads)
    rows = []
    x, w = torch.randn(64, 128, 16, 16), torch.randn(256, 128, 4, 4)
    flops = 2 * 64 * 256 * 8 * 8 * 128 * 16
    for dtype in (torch.float32, torch.bfloat16):
        for cl in (False, True):
            a, b = x.to(dtype), w.to(dtype)
            if cl:
                a = a.contiguous(memory_format=torch.channels_last)
            torch.nn.functional.conv2d(a, b, stride=2, padding=1)
            t = time.perf_counter()
            for _ in range(3):
                torch.nn.functional.conv2d(a, b, stride=2, padding=1)
            dt = (time.perf_counter() - t) / 3
            rows.append({"op": "conv2d", "dtype": str(dtype), "channels_last": cl, "gflops": flops / dt / 1e9})
    m = torch.randn(1024, 1024)
    for dtype in (torch.float32, torch.bfloat16):
        mm = m.to(dtype)
        mm @ mm
        t = time.perf_counter()
        for _ in range(3):
            mm @ mm
        rows.append({"op": "matmul", "dtype": str(dtype), "channels_last": False,
                     "gflops": 2 * 1024**3 / ((time.perf_counter() - t) / 3) / 1e9})
    for r in rows:
        print(r, flush=True)
    return rows


def peak_memory(variant: str) -> dict[str, float]:
    """Peak RSS of training ``variant`` (3 steps) in a fresh process, beyond the loaded data.

    The peak (VmHWM) is reset after the data is loaded (``echo 5 > /proc/self/clear_refs``), so
    the figure is what model + optimiser + activations add at batch 64, 64 px.
    """
    code = (
        "import gc, re, sys, tempfile, torch; from pathlib import Path; sys.path.insert(0, 'bench');"
        "import bench_train as b; x, y = b.ct_images(64); gc.collect();"
        "st = lambda k: int(re.search(k + r':\\s+(\\d+)', open('/proc/self/status').read()).group(1));"
        "open('/proc/self/clear_refs', 'w').write('5'); base = st('VmRSS');"
        f"fn = b.make_variant({variant!r}, x, y, Path(tempfile.mkdtemp()));"
        "[fn() for _ in range(3)];"
        "print(base, st('VmHWM'))"
    )
    env = {**os.environ, "MEDSYNTH_QUIET": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode:
        return {"error": proc.stderr.strip().splitlines()[-1]}
    base, peak = (int(v) for v in proc.stdout.split()[-2:])
    return {"rss_after_data_mib": base / 1024, "peak_mib": peak / 1024, "training_adds_mib": (peak - base) / 1024}


def quality(steps: int, seeds: list[int]) -> list[dict]:
    """fp32 vs bf16 on the same short cgan run (32 px, ngf=ndf=16): losses, diversity, label accuracy."""
    sys.path.insert(0, str(REPO / "tests" / "model"))
    from test_training import small_classifier

    from medsynth.training.sampler import GANSampler

    x, y = ct_images(32)
    xr = x.float() / 127.5 - 1.0
    torch.manual_seed(0)
    clf = small_classifier(xr, y, 3)
    data = TrainData(x, y, ["AbdomenCT", "ChestCT", "HeadCT"], ["CT"] * 3)
    rows = []
    for seed in seeds:
        for precision in ("fp32", "bf16"):
            cfg = load_train_config({"train": {"model": "cgan", "ngf": 16, "ndf": 16, "batch_size": 32, "epochs": 100,
                                               "max_steps": steps, "log_every": steps, "precision": precision,
                                               "checkpoint_every": 10_000}})
            t = time.perf_counter()
            out = Path(tempfile.mkdtemp(prefix=f"bench_quality_{precision}_{seed}_"))
            res = Trainer(cfg, data, out, seed=seed, resume=False).fit()
            lab = np.arange(300) % 3
            imgs = GANSampler(res.generator, data.classes).generate(300, seed=1, labels=lab)
            with torch.no_grad():
                pred = clf(torch.from_numpy(imgs)).argmax(1).numpy()
            rows.append({"precision": precision, "seed": seed, "steps": steps, "seconds": time.perf_counter() - t,
                         "loss_d": res.metrics["loss_d"], "loss_g": res.metrics["loss_g"],
                         "diversity_ratio": res.metrics["diversity_ratio"], "label_accuracy": float((pred == lab).mean())})
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3, help="fp32 steps per variant per round")
    ap.add_argument("--bf16-steps", type=int, default=1, help="bf16 steps per variant per round")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--no-bf16", action="store_true")
    ap.add_argument("--memory", action="store_true", help="also measure peak RSS per variant (fresh processes)")
    ap.add_argument("--quality", type=int, default=0, metavar="STEPS", help="also run the fp32/bf16 quality check")
    ap.add_argument("--only-memory", action="store_true", help="measure only peak memory")
    ap.add_argument("--only-quality", action="store_true", help="run only the fp32/bf16 quality check")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()
    os.environ.setdefault("MEDSYNTH_QUIET", "1")
    torch.set_num_threads(args.threads)
    variants = ["reference", "reference+resident", "ours fp32", "ours fp32 channels_last", "ours default"]
    if not args.no_bf16:
        variants += ["ours bf16", "ours bf16 channels_last"]
    from medsynth.training.resources import cpu_model

    cpu = cpu_model()
    flags = Path("/proc/cpuinfo").read_text()
    info = {"cpu": cpu, "cores": os.cpu_count(), "threads": args.threads, "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags,
            "load_avg": os.getloadavg(), "time_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    print(info, flush=True)
    if args.only_memory:
        mem = {v: peak_memory(v) for v in ("reference", "ours fp32", "ours fp32 channels_last")}
        print(json.dumps(mem, indent=1))
        if args.json:
            Path(args.json).write_text(json.dumps({"info": info, "memory": mem}, indent=1))
        return
    if args.only_quality:
        rows = quality(args.quality, args.seeds)
        if args.json:
            Path(args.json).write_text(json.dumps({"info": info, "quality": rows}, indent=1))
        return
    out = Path("/tmp/bench_train_runs")
    result: dict = {"info": info, "kernels": kernels(args.threads)}
    rates = throughput(variants, args.rounds, args.steps, args.bf16_steps, out)
    ref = statistics.median(rates["reference"])
    summary = {}
    for v in variants:
        med = statistics.median(rates[v])
        paired = statistics.median(a / b for a, b in zip(rates[v], rates["reference"], strict=True))
        summary[v] = {"median_images_per_s": med, "ratio_of_medians": med / ref, "median_paired_ratio": paired,
                      "rounds": rates[v]}
        print(f"{v:28s} {med:8.1f} img/s  x{med / ref:.2f} (paired x{paired:.2f})")
    result["throughput"] = summary
    if args.memory:
        result["memory"] = {v: peak_memory(v) for v in variants if "bf16" not in v or not args.no_bf16}
        print(json.dumps(result["memory"], indent=1))
    if args.quality:
        result["quality"] = quality(args.quality, args.seeds)
    result["ru_maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
