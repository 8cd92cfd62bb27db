"""The GAN study: DCGAN vs conditional GAN across X-ray, CT and MRI, from the pipeline itself.

A profile (``micro``, ``quick``, ``full``) fixes the grid and the settings; ``medsynth study
--profile NAME`` then runs, for each dataset, the normal data steps (ingest -> validate ->
preprocess) once, trains the domain feature extractor once, and for every cell (model, dataset)
and seed the normal train -> evaluate steps. Every step is an MLflow run in the ``study``
experiment, nested under one parent run and tagged with the study id, cell and seed; the report
(docs/RESULTS.md, medsynth/study/report.py) is built from those runs only.

While a cell trains, a probe measures FID-domain on a fixed number of generated images at evenly
spaced steps against the training time spent so far (the probe's own time excluded): the
quality-per-compute curves.

Resuming: the study id is a hash of everything that decides a run's result (profile settings,
params.yaml sections, overrides), not of the seed list. A cell/seed whose evaluate run already
FINISHED under the same id is skipped; a finished train run is reused; an interrupted training
resumes from its last checkpoint. Re-running the same command after a kill finishes the study.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medsynth import metric_keys as K
from medsynth.errors import ConfigError
from medsynth.project import ProjectConfig

DATASETS = ("pneumonia", "ct", "mri")  # X-ray, CT, MRI (params.yaml ingest.datasets)
MULTI = "multi"  # the multi-modality dataset: one conditional GAN over all three
MODELS = ("dcgan", "cgan")


@dataclass(frozen=True)
class StudyProfile:
    """One study design: the grid, the seeds, and the settings every run of it uses.

    ``train`` / ``evaluate`` / ``features`` / ``preprocess`` are ``section.key -> value``
    overrides on top of params.yaml (the user's ``--set`` overrides win over them).
    """

    name: str
    models: tuple[str, ...]
    datasets: tuple[str, ...]
    extra_cells: tuple[tuple[str, str], ...]  # cells outside the model x dataset grid
    seeds: tuple[int, ...]
    overrides: dict[str, str] = field(default_factory=dict)
    curve_points: int = 6  # probe measurements per training run (the last one at the final step)
    curve_images: int = 500  # generated images per probe measurement
    limit_per_class: int | None = None  # ingest subset (micro profile only)

    @property
    def cells(self) -> list[tuple[str, str]]:
        return [(m, d) for d in self.datasets for m in self.models] + list(self.extra_cells)


PROFILES: dict[str, StudyProfile] = {
    # one cell end to end in about a minute: the test of the study machinery itself
    "micro": StudyProfile(
        name="micro", models=("cgan",), datasets=("pneumonia",), extra_cells=(), seeds=(0,),
        curve_points=2, curve_images=200, limit_per_class=300,
        overrides={"preprocess.resolution": "32", "train.profile": "custom", "train.max_steps": "12",
                   "train.epochs": "1", "train.ngf": "8", "train.ndf": "8", "train.batch_size": "32",
                   "train.max_train_images": "400", "train.sample_count": "16",
                   "evaluate.n_generated": "200", "evaluate.min_samples": "50", "evaluate.kid_subsets": "10",
                   "evaluate.diversity_pairs": "100", "evaluate.utility_epochs": "1",
                   "evaluate.utility_max_train": "300", "evaluate.privacy_max_train_queries": "300",
                   "evaluate.grid_images": "16", "evaluate.closest_pairs": "4",
                   "features.per_class_train": "60", "features.epochs": "1", "features.resolution": "32"}),
    # the whole grid with 3 seeds in about 30 minutes on 2 CPU cores (32 px, short training)
    "quick": StudyProfile(
        name="quick", models=MODELS, datasets=DATASETS, extra_cells=(("cgan", MULTI),), seeds=(0, 1, 2),
        curve_points=6, curve_images=500,
        overrides={"preprocess.resolution": "32", "train.profile": "custom", "train.max_steps": "400",
                   "train.epochs": "100", "train.ngf": "32", "train.ndf": "32", "train.batch_size": "64",
                   "train.max_train_images": "4000", "train.sample_count": "64",
                   "evaluate.n_generated": "1000", "evaluate.kid_subsets": "20", "evaluate.diversity_pairs": "300",
                   "evaluate.utility_epochs": "3", "evaluate.utility_max_train": "1000",
                   "evaluate.privacy_max_train_queries": "1000", "features.resolution": "32"}),
    # the paper-scale run for a GPU: 64 px, the pytorch/examples DCGAN widths, 3 seeds
    "full": StudyProfile(
        name="full", models=MODELS, datasets=DATASETS, extra_cells=(("cgan", MULTI),), seeds=(0, 1, 2),
        curve_points=10, curve_images=2000,
        overrides={"preprocess.resolution": "64", "train.profile": "full", "train.max_train_images": "0",
                   "train.device": "auto", "evaluate.n_generated": "5000"}),
}


def get_profile(name: str, seeds: list[int] | None = None, cells: list[str] | None = None) -> StudyProfile:
    """Profile ``name``, optionally with other seeds and only some of its cells (``model-dataset``)."""
    if name not in PROFILES:
        raise ConfigError(f"study profile {name!r}: unknown; valid: {', '.join(PROFILES)}")
    prof = PROFILES[name]
    if cells:
        known = {cell_name(*c): c for c in prof.cells}
        bad = [c for c in cells if c not in known]
        if bad:
            raise ConfigError(f"study cells: {', '.join(bad)} not in profile {name!r}; valid: {', '.join(known)}")
        chosen = [known[c] for c in dict.fromkeys(cells)]
        prof = dataclasses.replace(prof, models=(), datasets=(), extra_cells=tuple(chosen))
    if seeds is not None:
        if not seeds or len(seeds) > 20 or any(s < 0 for s in seeds):
            raise ConfigError("study seeds: 1..20 non-negative integers")
        prof = dataclasses.replace(prof, seeds=tuple(dict.fromkeys(seeds)))
    return prof


def cell_name(model: str, dataset: str) -> str:
    return f"{model}-{dataset}"


@dataclass
class StudyPlan:
    """A profile resolved against params.yaml: the configs every run of the study uses."""

    profile: StudyProfile
    study_id: str
    overrides: dict[str, str]
    root: Path  # <artifacts>/study/<study_id>
    experiment: str
    gate: Any = None  # components.gate.GatePolicy: params.yaml promote.gate with the overrides (every evaluation's)


def plan(profile: StudyProfile, params: dict[str, Any], user_overrides: dict[str, str],
         project: ProjectConfig, experiment: str = "study") -> StudyPlan:
    """Resolve the profile; the study id hashes every setting that decides a run's result."""
    from medsynth.components.evaluate import EvaluateConfig
    from medsynth.components.features import FeaturesConfig
    from medsynth.components.preprocess import PreprocessConfig
    from medsynth.components.promote import PromoteConfig
    from medsynth.config import load_stage, to_dict
    from medsynth.training.train_config import TrainConfig

    overrides = {**profile.overrides, **user_overrides}
    resolved = {"profile": profile.name, "curve": [profile.curve_points, profile.curve_images],
                "limit_per_class": profile.limit_per_class, "project_seed": project.seed}
    for cls, section in ((PreprocessConfig, "preprocess"), (TrainConfig, "train"), (EvaluateConfig, "evaluate"),
                         (FeaturesConfig, "features"), (PromoteConfig, "promote")):
        cfg = load_stage(cls, section, params, overrides)
        if hasattr(cfg, "check"):
            cfg.check()
        resolved[section] = to_dict(cfg)
    resolved["datasets"] = params.get("ingest", {}).get("datasets", {})
    resolved["code"] = code_digest()
    digest = hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()[:10]
    sid = f"{profile.name}-{digest}"
    gate = load_stage(PromoteConfig, "promote", params, overrides).gate
    return StudyPlan(profile, sid, overrides, project.artifacts_path() / "study" / sid, experiment, gate)


# Source files whose change can change a study's numbers (package, file pattern): a new digest
# starts a new study instead of mixing runs of different code under one id.
RESULT_CODE = (("medsynth.training", "*.py"), ("medsynth.readers", "*.py"),
               ("medsynth.components", "ingest.py"), ("medsynth.components", "validate.py"),
               ("medsynth.components", "preprocess.py"), ("medsynth.components", "features.py"),
               ("medsynth.components", "train.py"), ("medsynth.components", "evaluate.py"),
               ("medsynth", "metrics.py"), ("medsynth", "transforms.py"), ("medsynth", "prepared.py"))


def code_digest() -> str:
    """sha256 (12 hex) over the package sources that decide training and evaluation results."""
    import importlib

    h = hashlib.sha256()
    for package, pattern in RESULT_CODE:
        root = Path(importlib.import_module(package).__file__).parent
        files = sorted(root.glob(pattern))
        if not files:
            raise ConfigError(f"study: no {package} sources matching {pattern} in {root}")
        for f in files:
            h.update(f"{package}/{f.name}".encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:12]


class CurveProbe:
    """FID-domain of the training generator (EMA when on) at evenly spaced steps.

    Logged per measurement at the global step: ``curve_fid_domain``, ``curve_kid_domain``,
    ``curve_train_seconds`` (training time so far, probes excluded) and ``curve_images_seen``.
    """

    def __init__(self, extractor: Any, test_feats: np.ndarray, train_labels: np.ndarray, points: int,
                 n_images: int, seed: int) -> None:
        self.module = extractor.feature_module()
        self.test_feats = test_feats
        self.train_labels = train_labels
        self.points, self.n, self.seed = points, n_images, seed
        self.seconds = 0.0
        self.trainer: Any = None
        self.due_steps: list[int] = []
        self.t0 = 0.0

    def attach(self, trainer: Any) -> None:
        cfg = trainer.cfg
        total = cfg.max_steps or cfg.epochs * trainer.steps_per_epoch
        total = min(total, cfg.epochs * trainer.steps_per_epoch)
        self.due_steps = sorted({max(1, round(total * (i + 1) / self.points)) for i in range(self.points)})
        self.trainer, self.t0 = trainer, time.perf_counter()

    def due(self, step: int) -> bool:
        if self.due_steps and step >= self.due_steps[0]:
            while self.due_steps and step >= self.due_steps[0]:
                self.due_steps.pop(0)
            return True
        return False

    def measure(self, step: int) -> dict[str, float]:
        import torch

        from medsynth import metrics as M
        from medsynth.components.evaluate import proportional_labels
        from medsynth.training.sampler import GANSampler

        t = time.perf_counter()
        tr = self.trainer
        net = tr.ema.model if tr.ema else tr.G
        was_training = net.training
        threads = torch.get_num_threads()
        try:
            sampler = GANSampler(net, tr.data.classes if tr.spec.num_classes else [], device=tr.device)
            labels = (proportional_labels(self.train_labels, tr.spec.num_classes, self.n, self.seed)
                      if tr.spec.num_classes else None)
            x = sampler.generate(self.n, self.seed, labels)
            s = M.fid_kid(self.test_feats, M.extract(self.module, x), kid_subset=min(self.n, 500), kid_subsets=10,
                          seed=self.seed)
        finally:
            net.train(was_training)
            torch.set_num_threads(threads)
        train_s = t - self.t0 - self.seconds
        self.seconds += time.perf_counter() - t
        seen = step * tr.cfg.batch_size * tr.info.world_size
        return {"curve_fid_domain": float(s["fid"]), "curve_kid_domain": float(s["kid_mean"]),
                "curve_train_seconds": float(train_s), "curve_images_seen": float(seen)}


@dataclass
class StudyOutcome:
    study_id: str
    parent_run_id: str
    ran: list[str]
    skipped: list[str]
    seconds: float


def finished_runs(project: ProjectConfig, experiment: str, study_id: str, step: str | None = None) -> list[Any]:
    """FINISHED MLflow runs of study ``study_id`` (one ``medsynth.step`` or all), oldest first."""
    from mlflow.tracking import MlflowClient

    from medsynth.tracking import setup_mlflow, tracking_uri

    exp_id = setup_mlflow(project, experiment)
    query = f"tags.`medsynth.study.id` = '{study_id}' and attributes.status = 'FINISHED'"
    if step:
        query += f" and tags.`medsynth.step` = '{step}'"
    return MlflowClient(tracking_uri(project)).search_runs(
        [exp_id], filter_string=query, order_by=["attributes.start_time ASC"], max_results=5000)


def _finished_by_cell(plan_: StudyPlan, project: ProjectConfig, step: str) -> dict[tuple[str, int], Any]:
    """FINISHED runs of ``step`` of this study, by (cell, seed) (the newest wins)."""
    return {(r.data.tags["medsynth.study.cell"], int(r.data.tags["medsynth.study.seed"])): r
            for r in finished_runs(project, plan_.experiment, plan_.study_id, step)}


def prepare_dataset(plan_: StudyPlan, params: dict[str, Any], project: ProjectConfig, dataset: str) -> Path:
    """ingest -> validate -> preprocess of ``dataset`` (once per study; reused when present)."""
    from medsynth.components import ingest, preprocess, validate
    from medsynth.config import load_stage

    root = plan_.root / "data" / dataset
    prepared = root / "preprocess"
    if (prepared / "meta.json").is_file():
        return prepared
    ov = {**plan_.overrides, "ingest.dataset": dataset}
    if plan_.profile.limit_per_class:
        ov["ingest.limit_per_class"] = str(plan_.profile.limit_per_class)
    ing = load_stage(ingest.IngestConfig, "ingest", params, ov)
    ingest.run(ing, project, root / "ingest")
    validate.run(load_stage(validate.ValidateConfig, "validate", params, ov), project, root / "ingest", root / "validate")
    preprocess.run(load_stage(preprocess.PreprocessConfig, "preprocess", params, ov), project, root / "validate", prepared)
    return prepared


def run(plan_: StudyPlan, params: dict[str, Any], project: ProjectConfig, log=print) -> StudyOutcome:
    """Run every (cell, seed) of the plan not finished yet; returns what ran and what was skipped."""
    from medsynth.components import evaluate, features
    from medsynth.components.ingest import IngestConfig
    from medsynth.config import load_stage, to_dict
    from medsynth.fileio import write_json
    from medsynth.tracking import parent_run
    from medsynth.training.loading import load_generator

    t0 = time.perf_counter()
    prof = plan_.profile
    project = dataclasses.replace(project, experiment=plan_.experiment)
    plan_.root.mkdir(parents=True, exist_ok=True)
    write_json(plan_.root / "plan.json", {"study_id": plan_.study_id, "profile": prof.name,
                                          "cells": [cell_name(*c) for c in prof.cells], "seeds": list(prof.seeds),
                                          "overrides": plan_.overrides})
    base_tags = {"medsynth.study.id": plan_.study_id, "medsynth.study.profile": prof.name}
    done_eval = _finished_by_cell(plan_, project, "evaluate")
    done_train = _finished_by_cell(plan_, project, "train")
    todo = [(m, d, s) for (m, d) in prof.cells for s in prof.seeds if (cell_name(m, d), s) not in done_eval]
    skipped = [f"{cell_name(m, d)}/seed {s}" for (m, d) in prof.cells for s in prof.seeds
               if (cell_name(m, d), s) in done_eval]
    ran: list[str] = []
    log(f"study {plan_.study_id}: {len(prof.cells)} cells x {len(prof.seeds)} seeds; "
        f"{len(todo)} runs to do, {len(skipped)} already finished")
    if not todo:
        return StudyOutcome(plan_.study_id, "", ran, skipped, time.perf_counter() - t0)
    with parent_run(project, f"study {plan_.study_id}") as parent:
        import mlflow

        mlflow.set_tags(base_tags | {"medsynth.step": "study"})
        mlflow.log_params({"profile": prof.name, "cells": ",".join(cell_name(*c) for c in prof.cells),
                           "seeds": ",".join(map(str, prof.seeds))})
        f_cfg = load_stage(features.FeaturesConfig, "features", params, plan_.overrides)
        ing_all = load_stage(IngestConfig, "ingest", params, plan_.overrides)
        log("==> features (domain extractor for FID-domain)")
        ext = features.ensure(f_cfg, project, ing_all.datasets, root=plan_.root / "features" / f_cfg.name)
        ev_cfg = load_stage(evaluate.EvaluateConfig, "evaluate", params, plan_.overrides)
        prepared: dict[str, Path] = {}
        for i, (model, dataset, seed) in enumerate(todo, 1):
            cell = cell_name(model, dataset)
            if dataset not in prepared:
                log(f"==> data {dataset}: ingest -> validate -> preprocess")
                prepared[dataset] = prepare_dataset(plan_, params, project, dataset)
            tags = base_tags | {"medsynth.study.cell": cell, "medsynth.study.seed": str(seed),
                                "medsynth.study.model": model, "medsynth.study.dataset": dataset}
            out = plan_.root / "runs" / f"{cell}-s{seed}"
            log(f"==> [{i}/{len(todo)}] {cell} seed {seed}: train")
            prev = done_train.get((cell, seed))
            summary = out / "train" / "train_summary.json"
            finished = json.loads(summary.read_text()) if prev is not None and summary.is_file() else {}
            if prev is not None and finished.get("run_id") == prev.info.run_id:
                model_uri = finished["model_uri"]
                log(f"    reusing finished training run {finished['run_id']}")
            else:
                spec = {"params": params, "project": to_dict(project), "overrides": {
                            **plan_.overrides, "train.model": model, "train.seed": str(seed)},
                        "prepared": str(prepared[dataset]), "out": str(out / "train"), "tags": tags,
                        "extractor": str(ext.root), "curve_points": prof.curve_points,
                        "curve_images": prof.curve_images, "seed": seed}
                model_uri = _train_in_subprocess(spec, out / "train_spec.json", f"{cell} seed {seed}")
                done = json.loads(summary.read_text())
                log(f"    {done['global_step']} steps in {done['seconds']:.0f}s")
            log(f"==> [{i}/{len(todo)}] {cell} seed {seed}: evaluate")
            gen = load_generator(model_uri)
            eres = evaluate.run(ev_cfg, dataclasses.replace(project, seed=seed), gen, prepared[dataset],
                                out / "evaluate", extractor=ext, model_uri=model_uri, tags=tags, gate=plan_.gate)
            m = eres.metrics
            log(f"    FID-domain {m[K.FID_DOMAIN]:.2f} (floor {m[K.FID_DOMAIN_FLOOR]:.2f}), "
                f"coverage {m.get(K.PRDC_COVERAGE, float('nan')):.2f}, {eres.seconds:.0f}s")
            ran.append(f"{cell}/seed {seed}")
        return StudyOutcome(plan_.study_id, parent.info.run_id, ran, skipped, time.perf_counter() - t0)


def _train_in_subprocess(spec: dict[str, Any], spec_path: Path, what: str) -> str:
    """Train one cell/seed in a fresh Python process; returns the logged model URI.

    A fresh process per training keeps the compute figures honest: peak memory, time and
    images/s are not inflated or hidden by the runs before it (allocator caches, thread pools).
    The child inherits the environment, so its MLflow run nests under the study's parent run.
    """
    import subprocess
    import sys

    from medsynth.errors import TrainingError
    from medsynth.fileio import write_json

    write_json(spec_path, spec)
    rc = subprocess.run([sys.executable, "-m", "medsynth.study.run", "--train-cell", str(spec_path)]).returncode
    summary = Path(spec["out"]) / "train_summary.json"
    if rc != 0 or not summary.is_file():
        raise TrainingError(f"{what}: the training process exited with code {rc} (its error is printed above); "
                            "re-run the same command to resume")
    return str(json.loads(summary.read_text())["model_uri"])


def train_cell(spec_path: str | Path) -> None:
    """The child side of :func:`_train_in_subprocess`: one tracked training with the curve probe."""
    from medsynth import metrics as M
    from medsynth.components import train
    from medsynth.config import load_stage
    from medsynth.prepared import PreparedData
    from medsynth.training.extractor import load_extractor
    from medsynth.training.train_config import TrainConfig

    spec = json.loads(Path(spec_path).read_text())
    project = ProjectConfig(**spec["project"])
    cfg = load_stage(TrainConfig, "train", spec["params"], spec["overrides"])
    cfg.check()
    ext = load_extractor(spec["extractor"])
    data = PreparedData.load(spec["prepared"])
    x_te, _ = data.split("test")
    _, y_tr = data.split_uint8("train")
    probe = CurveProbe(ext, M.extract(ext.feature_module(), x_te), y_tr, spec["curve_points"],
                       spec["curve_images"], spec["seed"])
    train.run(cfg, project, spec["prepared"], spec["out"], probe=probe, tags=spec["tags"])


if __name__ == "__main__":  # the training child process of a study
    import argparse
    import sys

    from medsynth.errors import MedsynthError

    ap = argparse.ArgumentParser(prog="python -m medsynth.study.run")
    ap.add_argument("--train-cell", required=True, metavar="SPEC_JSON")
    try:
        train_cell(ap.parse_args().train_cell)
    except MedsynthError as exc:
        print(f"medsynth: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
