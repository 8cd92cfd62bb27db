"""The demo: the whole pipeline on the bundled real data, in this process, under one MLflow parent run.

1. ingest -> validate -> preprocess the configured dataset into ``<artifacts>/``; the domain
   feature extractor (trained when missing);
2. the shipped champion of the dataset (``training/zoo/``, when there is one): registered as a
   tracked run, evaluated on this machine's data and extractor, gated by the absolute floors;
3. a short training (``train.profile``): the challenger, evaluated;
4. promote: the challenger against the champion (if any) under the same gate.

``medsynth demo`` is the face (it prints where to look); this module owns the sequence.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medsynth import metric_keys as K


@dataclass
class DemoOutcome:
    artifacts: Path
    parent_run_id: str
    promotion: Any  # components.promote's result for the challenger
    shipped: Any = None  # components.promote's result for the shipped champion (None: none shipped / not promoted)
    timings: dict[str, float] = field(default_factory=dict)  # step -> wall seconds
    seconds: float = 0.0


def run(project, stage, log: Callable[[str], None] = print) -> DemoOutcome:
    """Steps 1-4 of the module docstring, each reported through ``log``.

    ``stage(cls, section)`` builds a params.yaml section with the command's overrides applied
    (``medsynth.cli.Context.stage``).
    """
    from medsynth.components import evaluate, features, ingest, preprocess, promote, train, validate
    from medsynth.tracking import parent_run
    from medsynth.training.loading import load_generator
    from medsynth.training.train_config import TrainConfig

    art = project.artifacts_path()
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    def step(name: str, fn):
        log(f"==> {name}")
        t = time.perf_counter()
        out = fn()
        timings[name] = time.perf_counter() - t
        return out

    with parent_run(project, "demo") as run:
        ing_cfg = stage(ingest.IngestConfig, "ingest")
        res = step("ingest", lambda: ingest.run(ing_cfg, project, art / "ingest"))
        log(f"    {res.n_images} images from dataset {ing_cfg.dataset!r}, {res.n_quarantined} quarantined")
        val_cfg = stage(validate.ValidateConfig, "validate")
        vres = step("validate", lambda: validate.run(val_cfg, project, art / "ingest", art / "validate"))
        log(f"    {vres.n_checked - vres.n_failed}/{vres.n_checked} records passed, {vres.n_failed} quarantined")
        pre_cfg = stage(preprocess.PreprocessConfig, "preprocess")
        pres = step("preprocess", lambda: preprocess.run(pre_cfg, project, art / "validate", art / "preprocess"))
        log(f"    prepared {pres.n_images} images at {pre_cfg.resolution} px")
        f_cfg = stage(features.FeaturesConfig, "features")
        ext = step("features", lambda: features.ensure(f_cfg, project, ing_cfg.datasets))
        ev_cfg = stage(evaluate.EvaluateConfig, "evaluate")
        pr_cfg = stage(promote.PromoteConfig, "promote")
        champ = step("shipped champion", lambda: _shipped_champion(project, ing_cfg.dataset, art, ev_cfg, pr_cfg, ext,
                                                                     log))
        tr_cfg = stage(TrainConfig, "train")
        tres = step("train", lambda: train.run(tr_cfg, project, art / "preprocess", art / "train"))
        log(f"    {tr_cfg.model} trained for {tres.global_step} steps{train.resume_note(tres)}; model {tres.model_uri}")
        gen = load_generator(tres.generator_path)
        eres = step("evaluate", lambda: evaluate.run(ev_cfg, project, gen, art / "preprocess", art / "evaluate",
                                                     extractor=ext, model_uri=tres.model_uri, gate=pr_cfg.gate))
        m = eres.metrics
        log(f"    FID-domain {m[K.FID_DOMAIN]:.2f} (real floor {m[K.FID_DOMAIN_FLOOR]:.2f}), "
            f"near-copy share {m[K.PRIVACY_NEAR_COPY_SHARE]:.2%}"
            + (f", conditional accuracy {m[K.COND_ACCURACY]:.2f}" if K.COND_ACCURACY in m else ""))
        pres2 = step("promote", lambda: promote.run(pr_cfg, project, art / "train", art / "evaluate",
                                                    art / "promote", dataset=ing_cfg.dataset))
        log(f"    {pres2.name} v{pres2.version}: {'champion' if pres2.promoted else 'not promoted'} ({pres2.reason})")
        log(f"    grade: {m.get(K.GATE_GRADE_REASON, 'not graded')}")
        if champ is not None and champ.name == pres2.name:
            winner = (f"the challenger v{pres2.version} won" if pres2.promoted else
                      f"the shipped champion v{champ.version} stays champion")
            log(f"    challenger vs shipped champion: {winner}")
        elif champ is not None:  # another model kind: each registered model has its own champion
            log(f"    the shipped champion is {champ.name} v{champ.version} (another model kind than the challenger "
                f"{pres2.name}: compare them in the app or with `medsynth review list --all`)")
        run_id = run.info.run_id

    return DemoOutcome(art, run_id, pres2, champ, timings, time.perf_counter() - t0)


def _shipped_champion(project, dataset: str, art, ev_cfg, pr_cfg, ext, log: Callable[[str], None]):
    """Register, evaluate and gate the shipped generator of ``dataset``; None when there is none."""
    from medsynth.components import evaluate, promote, train
    from medsynth.training.loading import load_generator

    zres = train.import_shipped(project, dataset, art / "zoo_champion", art / "preprocess")
    if zres is None:
        log(f"    no shipped generator for {dataset!r} trained on this data (see `medsynth zoo list`): "
            "the trained model is gated on its own")
        return None
    ev = evaluate.run(ev_cfg, project, load_generator(zres.generator_path), art / "preprocess",
                      art / "evaluate_champion", extractor=ext, model_uri=zres.model_uri, gate=pr_cfg.gate)
    res = promote.run(pr_cfg, project, art / "zoo_champion", art / "evaluate_champion", art / "promote_champion",
                      dataset=dataset)
    state = "champion" if res.promoted else "not promoted"
    log(f"    shipped generator {res.name} v{res.version}: {state} ({res.reason})")
    log(f"    grade: {ev.metrics.get(K.GATE_GRADE_REASON, 'not graded')}")
    return res if res.promoted else None
