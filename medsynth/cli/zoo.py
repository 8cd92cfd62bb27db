"""``medsynth zoo``: the shipped champions (one trained generator per bundled dataset).

``medsynth zoo list`` shows what is shipped (dataset, classes, size, sha256, how it was made and
its gate result). ``medsynth zoo build DATASET`` is the one recorded command that makes an entry:
ingest -> validate -> preprocess -> features -> train (``train.profile=zoo``, resumable) ->
evaluate (the gate's absolute floors included) into ``<artifacts>/zoo/<dataset>/``, then copies
the generator (plain tensors), its evaluation report, metrics and model card into
``training/zoo/<dataset>/`` and records every file's sha256 and size in the manifest.
An entry whose evaluation fails the floors is still written (so its report can be read) and
marked ``gate_floors_passed: false``; ``medsynth demo`` registers it and the gate (evaluated again
on the user's machine) keeps it from becoming champion.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from medsynth.cli import add_common

    p = sub.add_parser("zoo", help="list or build the shipped champions (one trained generator per dataset)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p)
    p.add_argument("action", choices=["list", "build"])
    p.add_argument("dataset", nargs="?", help="build: the ingest.datasets entry to train on (ct, pneumonia, ...)")
    p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from medsynth.errors import ConfigError
    from medsynth.training import zoo

    if args.action == "list":
        found = zoo.entries()
        if not found:
            print("no shipped generators (build one with `medsynth zoo build DATASET`)")
        for name, e in found.items():
            i = e.info
            print(f"{name:10s} {i.get('model', '?'):5s} {i.get('arch', '?'):7s} {len(i.get('classes', [])):2d} classes  "
                  f"{e.size / 1e6:5.2f} MB  steps {i.get('global_step', '?')}  floors "
                  f"{'passed' if i.get('gate_floors_passed') else 'NOT passed'}  sha256 {e.sha256[:12]}")
        return 0
    if not args.dataset:
        raise ConfigError("zoo build: name the dataset, e.g. `medsynth zoo build ct`")
    from medsynth.cli import Context

    ctx = Context(args, extra={"ingest.dataset": args.dataset, "train.profile": "zoo"})
    command = " ".join(["medsynth zoo build", args.dataset, *(f"--set {o}" for o in args.overrides)])
    return build(ctx, args.dataset, track=not args.no_track, command=command)


def build(ctx, dataset: str, track: bool = True, command: str = "") -> int:
    """Steps of the module docstring; prints each and the floors' verdict."""
    import json
    import shutil
    import time

    from medsynth.components import evaluate, features, ingest, preprocess, train, validate
    from medsynth.components.promote import PromoteConfig
    from medsynth.generator import GENERATOR_FILE, load_generator
    from medsynth.prepared import PreparedData
    from medsynth.training import zoo
    from medsynth.training.config import TrainConfig

    project, stage = ctx.project, ctx.stage
    art = project.artifacts_path() / "zoo" / dataset
    t0 = time.perf_counter()
    ing = stage(ingest.IngestConfig, "ingest")
    print(f"==> zoo {dataset}: ingest, validate, preprocess into {art}", flush=True)
    ingest.run(ing, project, art / "ingest", track=track)
    validate.run(stage(validate.ValidateConfig, "validate"), project, art / "ingest", art / "validate", track=track)
    preprocess.run(stage(preprocess.PreprocessConfig, "preprocess"), project, art / "validate", art / "preprocess",
                   track=track)
    ext = features.ensure(stage(features.FeaturesConfig, "features"), project, ing.datasets)
    cfg = stage(TrainConfig, "train")
    print(f"==> train {cfg.model}/{cfg.arch} ({cfg.profile}: {cfg.max_steps or cfg.epochs} "
          f"{'steps' if cfg.max_steps else 'epochs'}, ngf {cfg.ngf}, ndf {cfg.ndf}; resumable)", flush=True)
    tres = train.run(cfg, project, art / "preprocess", art / "train", track=track)
    print(f"==> evaluate ({tres.global_step} steps trained)", flush=True)
    gen = load_generator(art / "train")
    gate = stage(PromoteConfig, "promote").gate
    eres = evaluate.run(stage(evaluate.EvaluateConfig, "evaluate"), project, gen, art / "preprocess",
                        art / "evaluate", extractor=ext, track=track, model_uri=tres.model_uri or "", gate=gate)
    m = eres.metrics
    dest = zoo.ZOO_DIR / dataset
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    shutil.copy2(art / "train" / GENERATOR_FILE, dest / GENERATOR_FILE)
    for name in ("metrics.json", "report.md", "synthetic_samples.png"):
        if (art / "evaluate" / name).is_file():
            shutil.copy2(art / "evaluate" / name, dest / name)
    real_vs_synthetic(gen, PreparedData.load(art / "preprocess"), dest / SIDE_BY_SIDE)
    passed = bool(m.get("gate_floors_passed", False))
    info = {"command": command or f"medsynth zoo build {dataset}", "dataset": dataset, "model": cfg.model, "arch": cfg.arch,
            "profile": str(cfg.profile), "global_step": tres.global_step, "ngf": cfg.ngf, "ndf": cfg.ndf,
            "classes": list(gen.classes), "resolution": gen.resolution, "train_run_id": tres.run_id or "",
            "data_hash": json.loads((art / "preprocess" / "meta.json").read_text()).get("data_hash", ""),
            "extractor_sha256": m.get("protocol", {}).get("extractor_sha256", ""),
            "gate_floors_passed": passed, "build_seconds": round(time.perf_counter() - t0, 1),
            "key_metrics": {k: m[k] for k in ("fid_domain", "fid_domain_floor", "c2st_auc", "c2st_auc_floor",
                                               "prdc_coverage", "cond_accuracy") if k in m}}
    (dest / "MODEL_CARD.md").write_text(_card(dataset, info, m))
    zoo.write_entry(dataset, dest, info)
    print(f"zoo entry {dataset}: {dest} ({sum(p.stat().st_size for p in dest.iterdir()) / 1e6:.1f} MB); "
          f"gate floors {'passed' if passed else 'NOT passed'}; FID-domain {m.get('fid_domain', float('nan')):.3f} "
          f"(floor {m.get('fid_domain_floor', float('nan')):.3f}), C2ST AUC {m.get('c2st_auc', float('nan')):.3f}")
    return 0


SIDE_BY_SIDE = "real_vs_synthetic.png"


def real_vs_synthetic(gen, data, path, per_class: int = 8, seed: int = 0) -> None:
    """One row per class: ``per_class`` real test images (left) beside as many synthetic images of
    that class (right, under a red SYNTHETIC band); marked synthetic in the PNG's metadata."""
    import numpy as np
    from PIL import Image, ImageDraw, PngImagePlugin

    from medsynth.imaging import make_grid

    x_te, y_te = data.split("test")
    classes = data.classes if gen.classes else ["unconditional"]
    rng = np.random.default_rng(seed)
    rows = []
    for c, name in enumerate(classes):
        pool = np.flatnonzero(y_te == c) if gen.classes else np.arange(len(x_te))
        real = x_te[rng.choice(pool, min(per_class, len(pool)), replace=False)]
        fake = gen.generate(per_class, seed + c, np.full(per_class, c) if gen.classes else None)
        rows.append((name, make_grid(real, per_class, pad=2, fill=255), make_grid(fake, per_class, pad=2, fill=255)))
    band, label_w, gap = 14, 110, 12
    h, w = rows[0][1].shape[0], rows[0][1].shape[1]
    canvas = Image.new("RGB", (label_w + 2 * w + gap, band + len(rows) * h), "white")
    d = ImageDraw.Draw(canvas)
    d.text((label_w + 3, 1), "REAL (test split)", fill="black")
    d.rectangle([label_w + w + gap, 0, canvas.width, band - 2], fill=(200, 30, 30))
    d.text((label_w + w + gap + 3, 1), "SYNTHETIC (generated)", fill="white")
    for i, (name, real, fake) in enumerate(rows):
        y = band + i * h
        d.text((3, y + h // 2 - 6), name[:18], fill="black")
        canvas.paste(Image.fromarray(real).convert("RGB"), (label_w, y))
        canvas.paste(Image.fromarray(fake).convert("RGB"), (label_w + w + gap, y))
    info = PngImagePlugin.PngInfo()
    info.add_text("medsynth:synthetic", "contains synthetic images (right half)")
    canvas.save(path, pnginfo=info)


def _card(dataset: str, info: dict, m: dict) -> str:
    rows = "\n".join(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
                     for k, v in info["key_metrics"].items())
    return (f"# Shipped generator: {dataset}\n\n"
            f"**Every image this model makes is SYNTHETIC: not a real patient image, not for diagnosis.**\n\n"
            f"- made by: `{info['command']}` (model {info['model']}, architecture {info['arch']}, "
            f"{info['global_step']} steps, ngf {info['ngf']} / ndf {info['ndf']})\n"
            f"- classes: {', '.join(info['classes']) or 'unconditional'}; {info['resolution']} px\n"
            f"- trained on the bundled {dataset} data (data hash {info['data_hash']}); extractor sha256 "
            f"{info['extractor_sha256'][:12]}\n"
            f"- gate floors: {'passed' if info['gate_floors_passed'] else 'NOT passed'} (see report.md and metrics.json)\n\n"
            f"| metric | value |\n| --- | --- |\n{rows}\n\n"
            "Intended use: research, teaching, data augmentation experiments; images are labelled synthetic in "
            "file names, metadata and pixels when exported.\n")
