"""The medsynth training pipeline (KFP v2).

    ingest -> validate -> preprocess -> train -> evaluate -> gate -> [dsl.If passed] promote
    features (domain extractor, from the raw sources) ------^

One pipeline, defined here and compiled to ``training_pipeline.yaml`` next to this file (kept in
git; ``tests/unit/test_pipeline_compile.py`` fails when a fresh compile differs).

Parameters: one JSON string per params.yaml section (see ``runtime.py`` for why JSON), resolved
from params.yaml + ``--set`` overrides by :func:`pipeline_arguments` on the machine that runs or
submits the pipeline. The compiled YAML has no defaults for them, so it never goes stale when
params.yaml changes; ``medsynth pipeline compile --bake-params`` writes a copy with today's values as
defaults for uploading through the KFP UI.

Resources: each task requests CPU/memory here (never inside the component code); the train task
also requests one NVIDIA GPU and runs on the CUDA image.

Cluster wiring (ignored by kfp.local): every task takes its environment from the ConfigMap
``medsynth-pipeline`` (``MLFLOW_TRACKING_URI``, ...) and, when they exist, the Secrets
``medsynth-s3`` and ``medsynth-mlflow-auth`` in the run's namespace; infra/k8s/config.yaml defines
them by name. No credential is in the pipeline or the repository.
"""

import importlib
import json
from pathlib import Path
from typing import Any

from kfp import dsl, kubernetes

from medsynth.config import PARAMS_SECTIONS
from medsynth.pipelines import ops

PIPELINE_NAME = "medsynth-training"
PIPELINE_YAML = Path(__file__).with_name("training_pipeline.yaml")

# Pipeline parameters: these params.yaml sections, each checked by its typed config (one table,
# medsynth.config.PARAMS_SECTIONS; monitor and app are not pipeline steps).
SECTIONS: dict[str, tuple[str, str]] = {
    name: PARAMS_SECTIONS[name]
    for name in ("project", "ingest", "validate", "preprocess", "features", "train", "evaluate", "promote")
}

# Requests per task: (cpu, memory). Sized for the bundled data; raise them for full datasets.
RESOURCES: dict[str, tuple[str, str]] = {
    "ingest": ("1", "2Gi"),
    "validate": ("1", "2Gi"),
    "preprocess-plan": ("500m", "1Gi"),
    "preprocess-shards": ("1", "2Gi"),  # one shard in memory at a time, whatever the dataset's size
    "preprocess": ("1", "2Gi"),
    "features": ("2", "4Gi"),
    "train": ("4", "16Gi"),
    "evaluate": ("2", "8Gi"),
    "gate": ("500m", "1Gi"),
    "promote": ("500m", "2Gi"),
}
# At most this many preprocess_shards tasks at once (the fan-out's width on the cluster).
PREPROCESS_PARALLELISM = 16
# The train task's accelerator (set on the task, never in component code).
TRAIN_ACCELERATOR = ("nvidia.com/gpu", 1)


# Where tasks find MLflow and S3 on a cluster: a ConfigMap and Secrets, by name only.
ENV_CONFIG_MAP = "medsynth-pipeline"
ENV_FROM_CONFIG = ("MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL", "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
                   "MLFLOW_HTTP_REQUEST_TIMEOUT")
ENV_SECRETS: dict[str, tuple[str, ...]] = {
    "medsynth-s3": ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
    "medsynth-mlflow-auth": ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"),
}


def _task(task: dsl.PipelineTask, step: str) -> dsl.PipelineTask:
    """Name, resources and cluster environment of one task."""
    cpu, mem = RESOURCES[step]
    task.set_display_name(step).set_cpu_request(cpu).set_memory_request(mem).set_memory_limit(mem)
    kubernetes.use_config_map_as_env(task, ENV_CONFIG_MAP, {k: k for k in ENV_FROM_CONFIG})
    for secret, keys in ENV_SECRETS.items():
        kubernetes.use_secret_as_env(task, secret, {k: k for k in keys}, optional=True)
    return task


@dsl.pipeline(name=PIPELINE_NAME, description="Real medical images -> validated, preprocessed data -> GAN "
              "generator -> evaluation -> gated promotion in the MLflow registry (every step tracked).")
def training_pipeline(project: str, ingest: str, validate: str, preprocess: str, features: str, train: str,
                      evaluate: str, promote: str) -> None:
    """Each argument is one params.yaml section as JSON (see :func:`pipeline_arguments`)."""
    run = dsl.PIPELINE_JOB_NAME_PLACEHOLDER
    t_ingest = _task(ops.ingest_op(project=project, ingest=ingest, kfp_run=run), "ingest")
    t_validate = _task(ops.validate_op(project=project, validate=validate, kfp_run=run,
                                       dataset=t_ingest.outputs["dataset"]), "validate")
    # preprocess fans out: a plan, one task per group of shards (dsl.ParallelFor), a join
    validated = t_validate.outputs["validated"]
    t_plan = _task(ops.preprocess_plan_op(project=project, preprocess=preprocess, kfp_run=run, dataset=validated),
                   "preprocess-plan")
    with dsl.ParallelFor(t_plan.outputs["Output"], parallelism=PREPROCESS_PARALLELISM, name="shard-groups") as group:
        t_shards = _task(ops.preprocess_shards_op(preprocess=preprocess, group=group, dataset=validated,
                                                  plan=t_plan.outputs["plan"]), "preprocess-shards")
    t_pre = _task(ops.preprocess_op(project=project, preprocess=preprocess, kfp_run=run, dataset=validated,
                                    plan=t_plan.outputs["plan"], pieces=dsl.Collected(t_shards.outputs["pieces"])),
                  "preprocess")
    # independent of the data chain: runs beside it
    t_feat = _task(ops.features_op(project=project, features=features, ingest=ingest, kfp_run=run), "features")
    t_train = _task(ops.train_op(project=project, train=train, kfp_run=run,
                                 prepared=t_pre.outputs["prepared"]), "train")
    t_train.set_accelerator_type(TRAIN_ACCELERATOR[0]).set_accelerator_limit(TRAIN_ACCELERATOR[1])
    t_eval = _task(ops.evaluate_op(project=project, evaluate=evaluate, promote=promote, kfp_run=run,
                                   prepared=t_pre.outputs["prepared"], model=t_train.outputs["model"],
                                   extractor=t_feat.outputs["extractor"]), "evaluate")
    t_gate = _task(ops.gate_op(project=project, promote=promote, ingest=ingest, kfp_run=run,
                               model=t_train.outputs["model"], evaluation=t_eval.outputs["evaluation"]), "gate")
    # the registry is touched on every run (gate reads the champion): never served from cache
    t_gate.set_caching_options(False)
    with dsl.If(t_gate.outputs["Output"] == True, name="gate-passed"):  # noqa: E712 - KFP condition syntax
        t_promote = _task(ops.promote_op(project=project, promote=promote, ingest=ingest, kfp_run=run,
                                         model=t_train.outputs["model"], evaluation=t_eval.outputs["evaluation"]),
                          "promote")
        t_promote.set_caching_options(False)


def pipeline_arguments(params: dict[str, Any], overrides: dict[str, str] | None = None) -> dict[str, str]:
    """Resolve the pipeline's arguments from params.yaml + overrides, checking every section now.

    Each argument is the section as written in params.yaml with the overrides applied (values parsed
    as YAML, as if written in the file), so a task builds its config exactly the way the CLI does.
    Checking here means a typo fails on the laptop in a second, not in a pod ten minutes later.

    Raises:
        ConfigError: a section or override is invalid.
    """
    import yaml

    from medsynth.config import build, check_overrides, set_dotted

    classes = {name: getattr(importlib.import_module(mod), cls) for name, (mod, cls) in SECTIONS.items()}
    check_overrides(overrides or {}, classes)
    out: dict[str, str] = {}
    for name, cls in classes.items():
        raw = json.loads(json.dumps(params.get(name) or {}))  # deep copy, JSON-safe
        for key, value in (overrides or {}).items():
            head, _, rest = key.partition(".")
            if head == name and rest:
                set_dotted(raw, rest, yaml.safe_load(value))
        build(cls, raw, name)  # fail early, on this machine
        out[name] = json.dumps(raw, sort_keys=True)
    return out


def compile_pipeline(path: str | Path = PIPELINE_YAML, registry: str | None = None,
                     arguments: dict[str, str] | None = None) -> Path:
    """Compile the pipeline to ``path``.

    Args:
        registry: image registry prefix (``ghcr.io/acme``) put in front of the placeholder images.
        arguments: pipeline arguments to bake in as parameter defaults (for UI uploads).
    """
    from kfp import compiler

    path = Path(path)
    compiler.Compiler().compile(training_pipeline, package_path=str(path), pipeline_parameters=arguments)
    if registry:
        text = path.read_text()
        for image in (ops.CPU_IMAGE, ops.CUDA_IMAGE):
            text = text.replace(f"image: {image}", f"image: {registry.rstrip('/')}/{image}")
        path.write_text(text)
    return path
