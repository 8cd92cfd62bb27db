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
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

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
def preprocess_op(project: str, preprocess: str, kfp_run: str, dataset: Input[Dataset],
                  prepared: Output[Dataset]):
    """Window, square, resize, normalise and split into the training-ready artifact."""
    from medsynth.components.preprocess import PreprocessConfig, run
    from medsynth.pipelines.runtime import enter_step, read_json, stage

    proj = enter_step(project, kfp_run)
    run(stage(PreprocessConfig, "preprocess", preprocess), proj, dataset.path, prepared.path)
    meta = read_json(f"{prepared.path}/meta.json")
    prepared.metadata.update({"resolution": meta.get("resolution"), "classes": meta.get("classes"),
                              "counts": meta.get("counts")})


__all__ = ["CPU_IMAGE", "CUDA_IMAGE", "Dataset", "Markdown", "Metrics", "Model", "ingest_op",
           "preprocess_op", "validate_op"]
