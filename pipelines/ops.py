"""KFP v2 components: thin wrappers that map Input/Output artifact paths onto the step functions.

Each wrapper is a lightweight Python component whose body only
1. turns its parameter (one params.yaml section as JSON) into the step's typed config (``runtime.stage``),
2. calls the same ``medsynth.components.<step>.run`` that the CLI and DVC call, with artifact paths,
3. copies a few numbers into the output artifacts' metadata so the KFP UI shows them.

KFP copies each body into the compiled YAML, so imports live inside the bodies. The images already
contain medsynth (and kfp), so nothing is pip-installed when a task starts
(``install_kfp_package=False``); locally, kfp.local's SubprocessRunner runs the bodies in this venv.
Resources and accelerators are set on the tasks in ``training_pipeline.py``, not here.
"""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from medsynth import __version__

# Placeholders a deployment replaces with its registry (``medsynth pipeline compile --registry``).
CPU_IMAGE = f"medsynth/components:{__version__}-cpu"
CUDA_IMAGE = f"medsynth/components:{__version__}-cuda"


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def ingest_op(project: str, ingest: str, kfp_run: str, dataset: Output[Dataset]):
    """Read the configured sources into the canonical dataset."""
    from medsynth.components.ingest import IngestConfig, run
    from medsynth.pipelines.runtime import enter_step, stage

    proj = enter_step(project, kfp_run)
    res = run(stage(IngestConfig, "ingest", ingest), proj, dataset.path)
    dataset.metadata.update({"n_images": res.n_images, "n_quarantined": res.n_quarantined,
                             "data_hash": res.data_hash})


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def validate_op(project: str, validate: str, kfp_run: str, dataset: Input[Dataset],
                validated: Output[Dataset], report: Output[Markdown]):
    """Check the canonical dataset; quarantine bad records; fail the run when too many are bad."""
    import shutil

    from medsynth.components.validate import ValidateConfig, run
    from medsynth.pipelines.runtime import enter_step, stage

    proj = enter_step(project, kfp_run)
    res = run(stage(ValidateConfig, "validate", validate), proj, dataset.path, validated.path)
    shutil.copyfile(f"{validated.path}/report.md", report.path)
    validated.metadata.update({"n_checked": res.n_checked, "n_failed": res.n_failed,
                               "failure_share": res.failure_share, "data_hash": res.data_hash})


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def preprocess_plan_op(project: str, preprocess: str, kfp_run: str, dataset: Input[Dataset],
                       plan: Output[Artifact]) -> list:
    """Plan the preprocessing: one piece per shard, in groups of preprocess.shards_per_task (the
    fan-out's items)."""
    from medsynth.components.preprocess import PreprocessConfig, write_plan
    from medsynth.pipelines.runtime import enter_step, stage

    proj = enter_step(project, kfp_run)
    groups = write_plan(stage(PreprocessConfig, "preprocess", preprocess), dataset.path, proj.seed, plan.path)
    plan.metadata.update({"groups": len(groups)})
    return groups


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def preprocess_shards_op(preprocess: str, group: str, dataset: Input[Dataset], plan: Input[Artifact],
                         pieces: Output[Dataset]):
    """Window, square, resize and normalise one group of shards into pieces (one task of the fan-out)."""
    from medsynth.components.preprocess import PreprocessConfig, make_group
    from medsynth.pipelines.runtime import stage

    made = make_group(stage(PreprocessConfig, "preprocess", preprocess), dataset.path, plan.path, group, pieces.path)
    pieces.metadata.update({"pieces": len(made)})


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def preprocess_op(project: str, preprocess: str, kfp_run: str, dataset: Input[Dataset], plan: Input[Artifact],
                  pieces: Input[list[Dataset]], prepared: Output[Dataset]):
    """Join the pieces of every shard into the training-ready artifact (split, in shard order)."""
    from medsynth.components.preprocess import PreprocessConfig, join_groups, run
    from medsynth.pipelines.runtime import enter_step, read_json, stage

    proj = enter_step(project, kfp_run)
    cfg = stage(PreprocessConfig, "preprocess", preprocess)
    joined = join_groups(cfg, dataset.path, plan.path, [p.path for p in pieces], prepared.path)
    run(cfg, proj, dataset.path, prepared.path, joined=joined)
    meta = read_json(f"{prepared.path}/meta.json")
    prepared.metadata.update({"resolution": meta.get("resolution"), "classes": meta.get("classes"),
                              "counts": meta.get("counts"), "data_hash": meta.get("data_hash")})


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def features_op(project: str, features: str, ingest: str, kfp_run: str, extractor: Output[Model]):
    """Train the domain feature extractor (FID-/KID-domain, PRDC) on the real training splits."""
    from medsynth.components.features import FeaturesConfig, run
    from medsynth.components.ingest import IngestConfig
    from medsynth.pipelines.runtime import enter_step, read_json, stage

    proj = enter_step(project, kfp_run)
    datasets = stage(IngestConfig, "ingest", ingest).datasets
    run(stage(FeaturesConfig, "features", features), proj, datasets, extractor.path)
    meta = read_json(f"{extractor.path}/meta.json")
    extractor.metadata.update({"sha256": meta.get("sha256"), "classes": meta.get("classes")})


@dsl.component(base_image=CUDA_IMAGE, install_kfp_package=False)
def train_op(project: str, train: str, kfp_run: str, prepared: Input[Dataset], model: Output[Model]):
    """Train the GAN on the prepared data; the EMA generator is logged to MLflow as a model."""
    from medsynth.components.train import run
    from medsynth.pipelines.runtime import enter_step, stage
    from medsynth.training.train_config import TrainConfig

    proj = enter_step(project, kfp_run)
    out = run(stage(TrainConfig, "train", train), proj, prepared.path, model.path)
    model.metadata.update({"model_uri": out.model_uri or "", "run_id": out.run_id or "",
                           "global_step": out.global_step, "epochs": out.epochs})


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def evaluate_op(project: str, evaluate: str, promote: str, kfp_run: str, prepared: Input[Dataset],
                model: Input[Model], extractor: Input[Model], evaluation: Output[Artifact], metrics: Output[Metrics],
                report: Output[Markdown]):
    """Score the generator against the real test split (quality, diversity, privacy, utility) and record
    the gate's floors under the run's own policy (``promote.gate``), which the gate step reads back."""
    import shutil

    from medsynth.components.evaluate import EvaluateConfig, run
    from medsynth.components.promote import PromoteConfig
    from medsynth.pipelines.runtime import enter_step, scalars, stage, train_info
    from medsynth.training.extractor import load_extractor
    from medsynth.training.loading import load_generator

    proj = enter_step(project, kfp_run)
    res = run(stage(EvaluateConfig, "evaluate", evaluate), proj, load_generator(model.path),
              prepared.path, evaluation.path, extractor=load_extractor(extractor.path),
              model_uri=train_info(model.path).get("model_uri") or "",
              gate=stage(PromoteConfig, "promote", promote).gate)
    for key, value in scalars(res.metrics).items():
        metrics.log_metric(key, value)
    shutil.copyfile(f"{evaluation.path}/report.md", report.path)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def gate_op(project: str, promote: str, ingest: str, kfp_run: str, model: Input[Model],
            evaluation: Input[Artifact], decision: Output[Markdown], result: Output[Artifact]) -> bool:
    """The promotion policy (params ``promote.gate``) against the current champion: pass or not.

    ``decision`` is the Markdown shown in the KFP UI; ``result`` the same as JSON
    (``GateResult.as_dict``) for programs (the retraining loop).
    """
    import json

    from medsynth.components.promote import PromoteConfig
    from medsynth.pipelines.runtime import enter_step, gate_check, gate_markdown, section, stage

    proj = enter_step(project, kfp_run)
    dataset = section(ingest).get("dataset", "data")
    gate = gate_check(stage(PromoteConfig, "promote", promote), proj, model.path, evaluation.path, dataset)
    with open(decision.path, "w") as f:
        f.write(gate_markdown(gate))
    with open(result.path, "w") as f:
        json.dump(gate.as_dict(), f, indent=2, default=str)
    print(gate.summary())
    return bool(gate.passed)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def promote_op(project: str, promote: str, ingest: str, kfp_run: str, model: Input[Model],
               evaluation: Input[Artifact], promotion: Output[Artifact], card: Output[Markdown]):
    """Register the generator and move the ``champion`` alias (re-checked under the registry lock)."""
    import shutil

    from medsynth.components.promote import PromoteConfig, run
    from medsynth.pipelines.runtime import enter_step, section, stage

    proj = enter_step(project, kfp_run)
    res = run(stage(PromoteConfig, "promote", promote), proj, model.path, evaluation.path, promotion.path,
              dataset=section(ingest).get("dataset", "data"))
    shutil.copyfile(f"{promotion.path}/model_card.md", card.path)
    card.metadata.update({"model_name": res.name, "version": res.version, "promoted": res.promoted,
                          "reason": res.reason})


__all__ = ["CPU_IMAGE", "CUDA_IMAGE", "evaluate_op", "features_op", "gate_op", "ingest_op", "preprocess_op",
           "preprocess_plan_op", "preprocess_shards_op",
           "promote_op", "train_op", "validate_op"]
