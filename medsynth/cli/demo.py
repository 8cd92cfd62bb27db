"""``medsynth demo``: the whole pipeline on the bundled real data with the embedded defaults.

MLflow on a SQLite file under the project's state folder, artifacts under ``artifacts/``, no server,
no Docker. Every step is nested under one parent MLflow run; the end prints where to look.

When the project ships a trained generator for the dataset (training/zoo/, ``make zoo``), the demo
registers it first -- evaluated on this machine's data and extractor, gated by the same absolute
floors -- so the app serves a good model from the first minute; the short training that follows
is a challenger that must beat it, and the demo prints which won and why.
"""

from __future__ import annotations

import argparse
import time

from medsynth import metric_keys as K


def register(sub: argparse._SubParsersAction) -> None:
    from medsynth.cli import add_common

    p = sub.add_parser("demo", help="run the whole pipeline on the bundled real data and print where to look",
                       description=__doc__)
    add_common(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from medsynth.cli import Context
    from medsynth.components import evaluate, features, ingest, preprocess, promote, train, validate
    from medsynth.generator import load_generator
    from medsynth.tracking import parent_run, redact, tracking_uri
    from medsynth.training.config import TrainConfig

    ctx = Context(args)
    project, stage = ctx.project, ctx.stage
    art = project.artifacts_path()
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    def step(name: str, fn):
        print(f"==> {name}", flush=True)
        t = time.perf_counter()
        out = fn()
        timings[name] = time.perf_counter() - t
        return out

    with parent_run(project, "demo") as run:
        ing_cfg = stage(ingest.IngestConfig, "ingest")
        res = step("ingest", lambda: ingest.run(ing_cfg, project, art / "ingest"))
        print(f"    {res.n_images} images from dataset {ing_cfg.dataset!r}, {res.n_quarantined} quarantined")
        val_cfg = stage(validate.ValidateConfig, "validate")
        vres = step("validate", lambda: validate.run(val_cfg, project, art / "ingest", art / "validate"))
        print(f"    {vres.n_checked - vres.n_failed}/{vres.n_checked} records passed, {vres.n_failed} quarantined")
        pre_cfg = stage(preprocess.PreprocessConfig, "preprocess")
        pres = step("preprocess", lambda: preprocess.run(pre_cfg, project, art / "validate", art / "preprocess"))
        print(f"    prepared {pres.n_images} images at {pre_cfg.resolution} px")
        f_cfg = stage(features.FeaturesConfig, "features")
        ext = step("features", lambda: features.ensure(f_cfg, project, ing_cfg.datasets))
        ev_cfg = stage(evaluate.EvaluateConfig, "evaluate")
        pr_cfg = stage(promote.PromoteConfig, "promote")
        champ = step("shipped champion", lambda: _shipped_champion(project, ing_cfg.dataset, art, ev_cfg, pr_cfg, ext))
        tr_cfg = stage(TrainConfig, "train")
        tres = step("train", lambda: train.run(tr_cfg, project, art / "preprocess", art / "train"))
        print(f"    {tr_cfg.model} trained for {tres.global_step} steps{train.resume_note(tres)}; model {tres.model_uri}")
        gen = load_generator(tres.generator_path)
        eres = step("evaluate", lambda: evaluate.run(ev_cfg, project, gen, art / "preprocess", art / "evaluate",
                                                     extractor=ext, model_uri=tres.model_uri, gate=pr_cfg.gate))
        m = eres.metrics
        print(f"    FID-domain {m[K.FID_DOMAIN]:.2f} (real floor {m[K.FID_DOMAIN_FLOOR]:.2f}), "
              f"near-copy share {m[K.PRIVACY_NEAR_COPY_SHARE]:.2%}"
              + (f", conditional accuracy {m[K.COND_ACCURACY]:.2f}" if K.COND_ACCURACY in m else ""))
        pres2 = step("promote", lambda: promote.run(pr_cfg, project, art / "train", art / "evaluate",
                                                    art / "promote", dataset=ing_cfg.dataset))
        print(f"    {pres2.name} v{pres2.version}: {'champion' if pres2.promoted else 'not promoted'} ({pres2.reason})")
        if champ is not None:
            winner = (f"the challenger v{pres2.version} won" if pres2.promoted else
                      f"the shipped champion v{champ.version} stays champion")
            print(f"    challenger vs shipped champion: {winner}")
        run_id = run.info.run_id

    uri = tracking_uri(project)
    total = time.perf_counter() - t0
    print()
    print(f"demo finished in {total:.0f}s (" + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()) + ")")
    print("where to look:")
    print(f"  MLflow runs      : .venv/bin/mlflow ui --backend-store-uri {redact(uri)}   (parent run {run_id})")
    print(f"  artifacts        : {art}/  (ingest, validate, preprocess, train, evaluate, promote)")
    print(f"  validation report: {art / 'validate' / 'report.md'}")
    print(f"  evaluation report: {art / 'evaluate' / 'report.md'}")
    print(f"  model card       : {art / 'promote' / 'model_card.md'}")
    champ_now = (f"champion: models:/{pres2.name}@champion (v{pres2.champion_version})" if pres2.champion_version
                 else "no champion: no model passed the gate's floors yet")
    print(f"  registry         : .venv/bin/medsynth review list --all   ({champ_now})")
    print("  app              : .venv/bin/medsynth app   (Streamlit on http://127.0.0.1:8501)")
    return 0


def _shipped_champion(project, dataset: str, art, ev_cfg, pr_cfg, ext):
    """Register, evaluate and gate the shipped generator of ``dataset``; None when there is none."""
    from medsynth.components import evaluate, promote, train
    from medsynth.generator import load_generator

    zres = train.import_shipped(project, dataset, art / "zoo_champion", art / "preprocess")
    if zres is None:
        print(f"    no shipped generator for {dataset!r} trained on this data (see `medsynth zoo list`): "
              "the trained model is gated on its own")
        return None
    evaluate.run(ev_cfg, project, load_generator(zres.generator_path), art / "preprocess", art / "evaluate_champion",
                 extractor=ext, model_uri=zres.model_uri, gate=pr_cfg.gate)
    res = promote.run(pr_cfg, project, art / "zoo_champion", art / "evaluate_champion", art / "promote_champion",
                      dataset=dataset)
    state = "champion" if res.promoted else "not promoted"
    print(f"    shipped generator {res.name} v{res.version}: {state} ({res.reason})")
    return res if res.promoted else None
