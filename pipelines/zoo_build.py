"""Build one shipped champion (``training/zoo/<dataset>/``): the steps in sequence, in this process.

1. ingest -> validate -> preprocess the dataset into ``<artifacts>/zoo/<dataset>/``, and make sure
   the domain feature extractor exists;
2. train with ``train.profile=zoo`` (resumable: a rerun continues from the checkpoint);
3. evaluate, the gate's absolute floors included;
4. copy the generator (plain tensors), its evaluation report, metrics, sample grid, a real-vs-
   synthetic figure (``real_vs_synthetic.png``: real test images beside synthetic ones, per class)
   and a model card into ``training/zoo/<dataset>/`` and record every file's sha256 and size in
   the manifest (``medsynth.training.zoo_manifest``).

An entry whose evaluation fails the floors is still written (so its report can be read) and marked
``gate_floors_passed: false``. ``medsynth zoo build`` is the face; this module owns the sequence.
"""

from __future__ import annotations

from pathlib import Path


def prepare(project, stage, dataset: str, track: bool = True, log=print):
    """Step 1: ingest -> validate -> preprocess ``dataset`` into ``<artifacts>/zoo/<dataset>/preprocess``;
    returns the loaded domain feature extractor (trained once, shared by every dataset)."""
    from medsynth.components import features, ingest, preprocess, validate

    art = project.artifacts_path() / "zoo" / dataset
    ing = stage(ingest.IngestConfig, "ingest")
    log(f"==> zoo {dataset}: ingest, validate, preprocess into {art}")
    ingest.run(ing, project, art / "ingest", track=track)
    validate.run(stage(validate.ValidateConfig, "validate"), project, art / "ingest", art / "validate", track=track)
    preprocess.run(stage(preprocess.PreprocessConfig, "preprocess"), project, art / "validate", art / "preprocess",
                   track=track)
    return features.ensure(stage(features.FeaturesConfig, "features"), project, ing.datasets)


def build(project, stage, dataset: str, track: bool = True, command: str = "", log=print,
          resume: bool = False, minutes: float | None = None) -> bool:
    """Steps 1-4 of the module docstring; reports each through ``log``. True when the floors passed.

    ``stage(cls, section)`` builds a params.yaml section with the command's overrides applied
    (``medsynth.cli.Context.stage``). ``resume`` continues the saved training state of an earlier
    build (``<artifacts>/zoo/<dataset>/train``; without it that state is discarded first), ``minutes``
    bounds this session's training (``train.max_minutes``): champions improve over several runs.
    The new entry replaces the shipped one only when its evaluation is better on the gate's measures
    (:func:`medsynth.components.gate.better_entry`, the shipped one re-evaluated now on the same data);
    both evaluations are recorded in the manifest either way.
    """
    import json
    import shutil
    import time

    from medsynth import metric_keys as K
    from medsynth.components import evaluate, train
    from medsynth.components.gate import better_entry
    from medsynth.components.promote import PromoteConfig
    from medsynth.generator import GENERATOR_FILE
    from medsynth.prepared import PreparedData
    from medsynth.training import zoo_manifest
    from medsynth.training.loading import load_generator
    from medsynth.training.train_config import TrainConfig

    art = project.artifacts_path() / "zoo" / dataset
    t0 = time.perf_counter()
    ext = prepare(project, stage, dataset, track, log)
    cfg = stage(TrainConfig, "train")
    if minutes:
        from dataclasses import replace

        cfg = replace(cfg, max_minutes=float(minutes))
    if not resume and (art / "train").exists():
        log(f"==> fresh build: discarding the earlier training state in {art / 'train'} (--resume continues it)")
        shutil.rmtree(art / "train")
    commands = command_history(art / "train", resume, command or f"medsynth zoo build {dataset}")
    log(f"==> train {_model_words(cfg)} ({cfg.profile}: {cfg.max_steps or cfg.epochs} "
        f"{'steps' if cfg.max_steps else 'epochs'}{f', at most {minutes:g} min now' if minutes else ''}; resumable)")
    tres = train.run(cfg, project, art / "preprocess", art / "train", track=track, resume=resume)
    log(f"==> evaluate ({tres.global_step} steps trained)")
    gen = load_generator(art / "train")
    gate = stage(PromoteConfig, "promote").gate
    eres = evaluate.run(stage(evaluate.EvaluateConfig, "evaluate"), project, gen, art / "preprocess",
                        art / "evaluate", extractor=ext, track=track, model_uri=tres.model_uri or "", gate=gate)
    m = eres.metrics
    dest = zoo_manifest.ZOO_DIR / dataset
    shipped = _shipped_metrics(project, stage, dataset, art, ext, gate, track, log)
    if shipped is not None:
        better, why = better_entry(gate, m, shipped)
        if not better:
            log(f"zoo entry {dataset}: kept the shipped generator; the new one is not better on the gate's measures "
                f"({why}); its evaluation is in {art / 'evaluate'}")
            zoo_manifest.note_candidate(dataset, {"command": command or f"medsynth zoo build {dataset}", "kept_because": why,
                                         "key_metrics": _key_metrics(m), "global_step": tres.global_step})
            return bool(m.get(K.GATE_FLOORS_PASSED, False))
        log(f"==> the new generator beats the shipped one ({why}): replacing it")
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    shutil.copy2(art / "train" / GENERATOR_FILE, dest / GENERATOR_FILE)
    for name in ("metrics.json", "report.md", "synthetic_samples.png"):
        if (art / "evaluate" / name).is_file():
            shutil.copy2(art / "evaluate" / name, dest / name)
    real_vs_synthetic(gen, PreparedData.load(art / "preprocess"), dest / SIDE_BY_SIDE)
    passed = bool(m.get(K.GATE_FLOORS_PASSED, False))
    info = {"command": command or f"medsynth zoo build {dataset}", "dataset": dataset, "model": cfg.model, "arch": cfg.arch,
            "commands": commands,
            "replaced": {"key_metrics": _key_metrics(shipped)} if shipped is not None else {},
            "profile": str(cfg.profile), "global_step": tres.global_step, "ngf": cfg.ngf, "ndf": cfg.ndf,
            "classes": list(gen.classes), "resolution": gen.resolution, "train_run_id": tres.run_id or "",
            "data_hash": json.loads((art / "preprocess" / "meta.json").read_text()).get("data_hash", ""),
            "extractor_sha256": m.get(K.PROTOCOL, {}).get(K.EXTRACTOR_SHA256, ""),
            "gate_floors_passed": passed, "build_seconds": round(time.perf_counter() - t0, 1),
            "key_metrics": _key_metrics(m)}
    if cfg.model == "ldm":
        info.update(arch=f"ldm-{cfg.autoencoder}", autoencoder=cfg.autoencoder, unet_channels=list(cfg.unet_channels),
                    sample_steps=cfg.sample_steps, guidance=cfg.guidance, ngf=0, ndf=0)
    (dest / "MODEL_CARD.md").write_text(_card(dataset, info, m))
    zoo_manifest.write_entry(dataset, dest, info)
    log(f"zoo entry {dataset}: {dest} ({sum(p.stat().st_size for p in dest.iterdir()) / 1e6:.1f} MB); "
        f"gate floors {'passed' if passed else 'NOT passed'}; FID-domain {m.get(K.FID_DOMAIN, float('nan')):.3f} "
        f"(floor {m.get(K.FID_DOMAIN_FLOOR, float('nan')):.3f}), C2ST AUC {m.get(K.C2ST_AUC, float('nan')):.3f}")
    return passed


SIDE_BY_SIDE = "real_vs_synthetic.png"


def command_history(train_dir: Path, resume: bool, command: str) -> list[str]:
    """Every build command that trained the state in ``train_dir``, this one last, kept in its
    ``commands.json``: the history of the model being built, not of the entry it may replace (a resumed
    state can be a candidate that was kept out)."""
    import json

    from medsynth.fileio import atomic_path

    path = train_dir / "commands.json"
    history = json.loads(path.read_text()) if resume and path.is_file() else []
    commands = [*history, command]
    train_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(commands, indent=1))
    return commands


def _model_words(cfg) -> str:
    if cfg.model == "ldm":
        coder = {"kl": f"autoencoder {cfg.ae_channels} for {cfg.ae_steps} steps",
                 "cascade": f"coarse view + super-resolver (width {cfg.ae_channels[0]}, {cfg.ae_steps} steps)"
                 }.get(cfg.autoencoder, "4 x 4 patches (lossless)")
        return f"ldm ({coder}, denoiser UNet {cfg.unet_channels}, DDIM {cfg.sample_steps} steps)"
    return f"{cfg.model}/{cfg.arch} (ngf {cfg.ngf}, ndf {cfg.ndf})"


def _key_metrics(m: dict) -> dict:
    from medsynth import metric_keys as K

    keys = (K.GATE_GRADE, K.FID_DOMAIN_16PX, K.floor(K.FID_DOMAIN_16PX), K.C2ST_AUC_16PX, K.PRDC_RECALL_16PX,
            K.PRDC_COVERAGE_16PX, K.FID_DOMAIN, K.FID_DOMAIN_FLOOR, K.C2ST_AUC, K.C2ST_AUC_FLOOR, K.PRDC_COVERAGE,
            K.COND_ACCURACY, K.GATE_FLOORS_PASSED)
    return {k: m[k] for k in keys if k in m}


def _shipped_metrics(project, stage, dataset, art, ext, gate, track, log):
    """The shipped entry's evaluation under today's policy, data and extractor (re-evaluated when its record
    was made under another)."""
    from medsynth import metric_keys as K
    from medsynth.components import evaluate
    from medsynth.errors import InputError
    from medsynth.training import zoo_manifest
    from medsynth.training.loading import load_generator

    try:
        entry = zoo_manifest.get(dataset)
    except InputError:
        return None
    import json

    rec = entry.folder / "metrics.json"
    m = json.loads(rec.read_text()) if rec.is_file() else {}
    data_hash = json.loads((art / "preprocess" / "meta.json").read_text()).get("data_hash", "")
    # FID-domain values from another extractor are another scale (gate.comparable): reuse only a record
    # made under today's policy, data and extractor
    same_extractor = m.get(K.PROTOCOL, {}).get(K.EXTRACTOR_SHA256) == ext.meta.get("sha256")
    if m.get(K.GATE_POLICY_SHA256) == gate.sha256() and entry.info.get("data_hash") == data_hash and same_extractor:
        return m
    log(f"==> re-evaluating the shipped {dataset} generator under today's gate policy, data and extractor (to compare)")
    res = evaluate.run(stage(evaluate.EvaluateConfig, "evaluate"), project, load_generator(f"zoo:{dataset}"),
                       art / "preprocess", art / "evaluate_shipped", extractor=ext, track=track, gate=gate)
    return res.metrics


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
            f"- made by: `{'` then `'.join(info.get('commands') or [info['command']])}` (model {info['model']}"
            f"{'' if info['model'] == 'ldm' else ', architecture ' + info['arch'] + ', ngf ' + str(info['ngf'])}, "
            f"{info['global_step']} steps)\n"
            f"- classes: {', '.join(info['classes']) or 'unconditional'}; {info['resolution']} px\n"
            f"- trained on the bundled {dataset} data (data hash {info['data_hash']}); extractor sha256 "
            f"{info['extractor_sha256'][:12]}\n"
            f"- gate floors: {'passed' if info['gate_floors_passed'] else 'NOT passed'} (see report.md and metrics.json)\n\n"
            f"| metric | value |\n| --- | --- |\n{rows}\n\n"
            "Intended use: research, teaching, data augmentation experiments; images are labelled synthetic in "
            "file names, metadata and pixels when exported.\n")
