"""App benchmark: generator latency (fp32 vs bf16 autocast) and Generate click -> images in a browser.

    .venv/bin/python bench/bench_app.py [--model-uri models:/NAME@champion | --generator-file generator.pt]
        [--extractor DIR] [--reps 30] [--browser] [--write docs/BENCHMARKS.md]

1. The generator: a registered model loaded by URI through the app's own loader (default: the
   champion of the first registered model in the project's registry), or a ``generator.pt``; when
   neither exists, the pytorch/examples DCGAN shape (64 px, nz=100, ngf=64) with fresh DCGAN init
   (latency does not depend on the weights; the quality check then only measures bf16 rounding).
2. Latency of ``generate(n, seed)`` (the app's call: z sampling, network, clamp, to numpy) for n = 1,
   16, 64 after warm-up: median and best of ``--reps`` runs, wall and process CPU time, fp32 and
   bf16 autocast (``GANSampler(bf16=True)``).
3. bf16 vs fp32 on the same 256 latents: max and mean absolute pixel difference (8-bit levels) and,
   with the domain feature extractor, FID-domain between the two sets and of each against real
   images of the model's dataset.
4. ``--browser`` runs tests/e2e/test_app_browser.py (Chromium + Playwright, `medsynth app`) and reads
   its click -> 16 images shown timings from test-artifacts/app_browser_timing.json.
5. Results go to bench/out/bench_app.json and, with ``--write``, into the "App" section of
   docs/BENCHMARKS.md (between its markers; the rest of the file is left alone).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from benchdoc import markers, write_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out"
START, END = markers("app")
SECTION = "## App"
COUNTS = (1, 16, 64)
TARGET_MS = 45.0


def cpu_info() -> dict:
    name, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name == "unknown CPU":
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    bf16 = sorted(f for f in flags if "bf16" in f or f.startswith("amx"))
    return {"cpu": name, "cores": os.cpu_count(), "bf16_flags": bf16, "avx512f": "avx512f" in flags,
            "python": platform.python_version(), "load": os.getloadavg()}


def train_reference(steps: int) -> Path:
    """The pytorch/examples DCGAN shape (ngf=ndf=64, 64 px) trained ``steps`` steps on real CT (cached)."""
    import numpy as np
    import torch

    from medsynth.training.loop import TrainData
    from medsynth.training.train_config import Device, TrainConfig
    from medsynth.training.trainer import Trainer

    out = OUT / f"app_dcgan64_{steps}steps"
    if (out / "generator.pt").is_file():
        return out / "generator.pt"
    with np.load(REPO / "data" / "mednist_ct_small.npz") as z:
        x, y = z["train_images"], z["train_labels"].reshape(-1).astype(np.int64)
    data = TrainData(torch.from_numpy(x[:, None].copy()), torch.from_numpy(y), ["AbdomenCT", "ChestCT", "HeadCT"],
                     ["CT"] * 3)
    cfg = TrainConfig(model="dcgan", epochs=100, max_steps=steps, batch_size=32, ngf=64, ndf=64, ema_decay=0.0,
                      device=Device.CPU, sample_count=16, checkpoint_every=50, log_every=10)
    Trainer(cfg, data, out, seed=0).fit()
    return out / "generator.pt"


def pick_generator(args: argparse.Namespace):
    """(fp32 sampler, bf16 sampler, description)."""
    from medsynth.training.loading import load_generator
    from medsynth.training.models import Generator, ModelSpec
    from medsynth.training.sampler import GANSampler

    if args.train_steps:
        args.generator_file = str(train_reference(args.train_steps))
        desc = (f"pytorch/examples DCGAN shape (64 px, nz=100, ngf=64, 3.6 M parameters) trained {args.train_steps} "
                "steps (batch 32) on the bundled real CT images (`--train-steps`)")
        return load_generator(args.generator_file), load_generator(args.generator_file, bf16=True), desc

    if args.generator_file:
        return (load_generator(args.generator_file), load_generator(args.generator_file, bf16=True),
                f"`{args.generator_file}`")
    uri = args.model_uri
    if uri is None:
        try:
            from medsynth.app import model_store, settings

            ctx = settings.load_context()
            names = model_store.list_models(ctx.project)
            uri = f"models:/{names[0]}@champion"
        except Exception:  # noqa: BLE001 - no registry / no model: fall back to the reference shape
            uri = None
    if uri:
        from medsynth.app import settings

        project = settings.load_context().project
        return load_generator(uri, project), load_generator(uri, project, bf16=True), f"`{uri}`"
    import torch

    torch.manual_seed(0)
    net = Generator(ModelSpec(kind="dcgan", resolution=64))
    return (GANSampler(net), GANSampler(net, bf16=True),
            "pytorch/examples DCGAN shape (64 px, nz=100, ngf=64, 3.6 M parameters), fresh DCGAN init "
            "(no trained generator registered)")


def latency(gen, n: int, reps: int, labels=None) -> dict:
    for s in range(3):  # warm-up: oneDNN primitive creation, allocator
        gen.generate(n, s, labels=labels)
    wall, cpu = [], []
    for s in range(reps):
        t, c = time.perf_counter(), time.process_time()
        gen.generate(n, 1000 + s, labels=labels)
        wall.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - c) * 1000)
    wall.sort()
    cpu.sort()
    return {"median_ms": wall[len(wall) // 2], "best_ms": wall[0], "cpu_median_ms": cpu[len(cpu) // 2]}


def quality(fp32, bf16, extractor_dir: Path | None, trained: bool, n: int = 256) -> dict:
    import numpy as np

    labels = None if not fp32.classes else np.arange(n) % len(fp32.classes)
    a = fp32.generate(n, 0, labels=labels)
    b = bf16.generate(n, 0, labels=labels)
    lv = np.abs(np.rint((a + 1) * 127.5) - np.rint((b + 1) * 127.5))
    out = {"n": n, "max_abs_diff": float(np.abs(a - b).max()), "max_levels": float(lv.max()),
           "mean_levels": float(lv.mean()), "share_pixels_changed": float((lv > 0).mean())}
    if extractor_dir is not None and (extractor_dir / "meta.json").is_file():
        from medsynth.app.live_eval import frechet
        from medsynth.metrics import extract
        from medsynth.training.extractor import load_extractor

        ex = load_extractor(extractor_dir)
        mod = ex.feature_module()
        fa, fb = extract(mod, a), extract(mod, b)
        out["fid_domain_fp32_vs_bf16"] = frechet(fa, fb)
        out["extractor"] = ex.backbone
        real = real_images(fp32.resolution, n) if trained else None
        if real is not None:
            fr = extract(mod, real)
            out["fid_domain_fp32_vs_real"] = frechet(fr, fa)
            out["fid_domain_bf16_vs_real"] = frechet(fr, fb)
    return out


def real_images(resolution: int, n: int):
    """n real CT test images at the generator's resolution (the bundled set)."""
    import numpy as np

    from medsynth.transforms import ImageTransform

    with np.load(REPO / "data" / "mednist_ct_small.npz") as z:
        x = z["test_images"][:n]
    return ImageTransform(resolution=resolution).batch_uint8(x) if resolution else None


def browser_timing(run: bool) -> dict | None:
    path = REPO / "test-artifacts" / "app_browser_timing.json"
    if run:
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        str(REPO / "tests/e2e/test_app_browser.py")], cwd=REPO, check=True)
    if not path.is_file():
        return None
    d = json.loads(path.read_text())
    d["measured"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(path.stat().st_mtime))
    return d


def markdown(res: dict) -> str:
    m, lat, q = res["machine"], res["latency"], res["quality"]
    flags = ", ".join(m["bf16_flags"]) or "none (no AVX-512 BF16 / AMX: bf16 runs emulated, slower than fp32)"
    lines = [
        f"Generator: {res['generator']}. `generate(n, seed)` as the app calls it (z sampling, network, clamp, "
        f"to numpy), after 3 warm-up calls; median and best of {res['reps']} runs, torch threads {res['threads']}.",
        "",
        f"- command: `{res['command']}`",
        f"- machine: {m['cores']} cores (nproc), {m['cpu']}, Python {m['python']}; CPU bf16 flags: {flags}; "
        f"load average at start {m['load'][0]:.1f} / {m['load'][1]:.1f} / {m['load'][2]:.1f}",
        f"- measured: {res['measured']}",
        "",
        "| images (64 px) | fp32 median ms | fp32 best ms | bf16 autocast median ms | bf16 best ms | fp32 CPU ms | bf16 CPU ms |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n in COUNTS:
        a, b = lat["fp32"][str(n)], lat["bf16"][str(n)]
        lines.append(f"| {n} | {a['median_ms']:.1f} | {a['best_ms']:.1f} | {b['median_ms']:.1f} | {b['best_ms']:.1f} | "
                     f"{a['cpu_median_ms']:.0f} | {b['cpu_median_ms']:.0f} |")
    b64 = lat["bf16"]["64"]["best_ms"]
    lines += ["", f"Target <= {TARGET_MS:.0f} ms for 64 images through bf16: "
              f"{'met' if b64 <= TARGET_MS else 'NOT met'} here (best {b64:.1f} ms)."]
    gf = res.get("gflop_per_image")
    if gf:
        best = lat["fp32"]["64"]["best_ms"]
        lines.append(f"One image is {gf:.3f} GFLOP through G (transposed-conv multiply-adds x 2), so 64 images are "
                     f"{64 * gf:.1f} GFLOP: fp32 best here = {64 * gf / best * 1000:.0f} GFLOP/s; 80 ms would be "
                     f"{64 * gf / 0.08:.0f} GFLOP/s, about the fp32 FMA peak of 2 AVX2 cores.")
    if not m["bf16_flags"]:
        lines.append("This CPU has no native bf16 instructions (no AVX-512 BF16, no AMX), so bf16 convolutions get no "
                     "fast kernels and autocast only adds casts: bf16 is slower than fp32 here, and the app's "
                     "`precision: auto` resolves to fp32. Re-run on a CPU with AMX for the bf16 target.")
    lines += ["", f"bf16 vs fp32 on the same {q['n']} latents: max |diff| {q['max_abs_diff']:.4f} on [-1, 1] "
              f"= {q['max_levels']:.0f} 8-bit levels (mean {q['mean_levels']:.2f} levels, "
              f"{100 * q['share_pixels_changed']:.1f}% of pixels changed)."]
    if "fid_domain_fp32_vs_bf16" in q:
        s = f"FID-domain ({q['extractor']}) fp32 vs bf16 sets: {q['fid_domain_fp32_vs_bf16']:.2g}"
        if "fid_domain_fp32_vs_real" in q:
            s += (f"; against {q['n']} real CT test images: fp32 {q['fid_domain_fp32_vs_real']:.2f}, "
                  f"bf16 {q['fid_domain_bf16_vs_real']:.2f}")
        lines.append(s + ".")
    br = res.get("browser")
    if br:
        lines += ["", f"Browser (`pytest tests/e2e/test_app_browser.py`, Debian Chromium headless via Playwright, "
                  f"`medsynth app` on 127.0.0.1, {br['measured']}): click Generate -> 16 images shown "
                  f"{br['cold_click_to_images_s']:.2f} s on the first click after start, "
                  f"{br['warm_click_to_images_s']:.2f} s on a later click; click -> live evaluation shown "
                  f"{br['cold_click_to_live_eval_s']:.2f} s first (builds the real reference once per model), "
                  f"{br['warm_click_to_live_eval_s']:.2f} s later. The test's generator is a few-step cGAN "
                  "(ngf 16) and the figures include Streamlit's page rerun and image transfer."]
    if m["load"][0] > (m["cores"] or 1):
        lines.append(f"The load average ({m['load'][0]:.1f}) was above the core count ({m['cores']}): other jobs shared "
                     "the CPU, so these wall times measure contention as much as the generator. Re-run on an idle "
                     "machine for the generator's own latency.")
    else:
        lines.append("The machine is shared (see the load average): CPU-time figures are the steadier ones.")
    return "\n".join(lines)


def gflop_per_image(net) -> float:
    """Forward GFLOP of one image through a generator (conv/transposed-conv multiply-adds x 2)."""
    import torch

    macs = []

    def hook(mod, inp, out):
        if isinstance(mod, torch.nn.ConvTranspose2d):
            x = inp[0]
            macs.append(mod.in_channels * mod.out_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
                        * x.shape[-2] * x.shape[-1])
        elif isinstance(mod, torch.nn.Conv2d):
            macs.append(mod.in_channels // mod.groups * mod.out_channels * mod.kernel_size[0] * mod.kernel_size[1]
                        * out.shape[-2] * out.shape[-1])

    hs = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    try:
        with torch.no_grad():
            y = torch.zeros(1, dtype=torch.long) if net.spec.num_classes else None
            net(torch.zeros(1, net.spec.nz), y)
    finally:
        for h in hs:
            h.remove()
    return 2 * sum(macs) / 1e9




def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-uri", default=None)
    ap.add_argument("--generator-file", default=None)
    ap.add_argument("--train-steps", type=int, default=0,
                    help="train the reference DCGAN shape this many steps first (cached in bench/out/)")
    ap.add_argument("--extractor", default=None, help="domain extractor folder (default: <artifacts>/features/domain_cnn)")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--browser", action="store_true", help="run the browser test and report its timings")
    ap.add_argument("--write", default=None, help="markdown file whose App section is replaced")
    ap.add_argument("--from-json", action="store_true", help="re-render bench/out/bench_app.json without measuring")
    args = ap.parse_args(argv)
    if args.from_json:
        res = json.loads((OUT / "bench_app.json").read_text())
        print(markdown(res))
        if args.write:
            write_section(Path(args.write), markdown(res), 'app', SECTION)
        return 0
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if not 1 <= args.reps <= 1000:
        ap.error("--reps: 1..1000")
    machine = cpu_info()
    fp32, bf16, desc = pick_generator(args)
    labels = {n: (None if not fp32.classes else [i % len(fp32.classes) for i in range(n)]) for n in COUNTS}
    lat = {p: {str(n): latency(g, n, args.reps, labels[n]) for n in COUNTS} for p, g in (("fp32", fp32), ("bf16", bf16))}
    ex = Path(args.extractor) if args.extractor else REPO / "artifacts" / "features" / "domain_cnn"
    res = {
        "generator": desc, "reps": args.reps, "threads": torch.get_num_threads(), "machine": machine,
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "latency": lat,
        "quality": quality(fp32, bf16, ex if ex.is_dir() else None, trained="fresh DCGAN init" not in desc),
        "generator_params": sum(p.numel() for p in fp32.net.parameters()) if hasattr(fp32, "net") else None,
        "gflop_per_image": gflop_per_image(fp32.net) if hasattr(fp32, "net") else None,
        "browser": browser_timing(args.browser),
        "command": "python bench/bench_app.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "bench_app.json").write_text(json.dumps(res, indent=2))
    body = markdown(res)
    print(body)
    if args.write:
        write_section(Path(args.write), body, 'app', SECTION)
    return 0


if __name__ == "__main__":
    sys.exit(main())
