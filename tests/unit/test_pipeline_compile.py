"""The KFP pipeline: the committed YAML is current, the graph is the designed one, arguments resolve."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from medsynth.errors import ConfigError
from medsynth.pipelines import ops
from medsynth.pipelines.training_pipeline import (
    PIPELINE_YAML,
    RESOURCES,
    SECTIONS,
    compile_pipeline,
    pipeline_arguments,
)

STEPS = ["ingest", "validate", "preprocess-plan", "preprocess-shards", "preprocess", "features", "train", "evaluate",
         "gate", "promote"]


def load(path: Path) -> dict:
    """The pipeline spec and the Kubernetes platform spec (two YAML documents) as one dict."""
    merged: dict = {}
    for doc in yaml.safe_load_all(path.read_text()):
        merged.update(doc)
    return merged


@pytest.fixture(scope="module")
def spec() -> dict:
    return load(PIPELINE_YAML)


def test_committed_yaml_matches_a_fresh_compile(tmp_path: Path) -> None:
    # Risk guarded: someone edits the pipeline code and the YAML a cluster gets is stale.
    fresh = compile_pipeline(tmp_path / "p.yaml").read_text()
    assert fresh == PIPELINE_YAML.read_text(), "pipelines/training_pipeline.yaml is stale: run `medsynth pipeline compile`"


def _tasks(spec: dict) -> dict:
    """Every task of the graph, including those inside the dsl.If sub-DAG, by name."""
    tasks = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        tasks.update(comp.get("dag", {}).get("tasks", {}))
    return tasks


def test_graph_has_every_step(spec: dict) -> None:
    assert {f"{s}-op" for s in STEPS} <= set(_tasks(spec))


def test_data_chain_passes_artifacts_step_to_step(spec: dict) -> None:
    # each step consumes the previous step's output artifact, so a failed step stops the rest
    tasks = _tasks(spec)

    def producers(task: str) -> set[str]:
        return {a["taskOutputArtifact"]["producerTask"] for a in tasks[task]["inputs"]["artifacts"].values()}

    assert tasks["validate-op"]["dependentTasks"] == ["ingest-op"] and producers("validate-op") == {"ingest-op"}
    assert producers("preprocess-plan-op") == {"validate-op"}
    assert producers("preprocess-op") == {"validate-op", "preprocess-plan-op", _loop(spec)}
    assert tasks["train-op"]["dependentTasks"] == ["preprocess-op"] and producers("train-op") == {"preprocess-op"}
    evaluate = tasks["evaluate-op"]
    assert set(evaluate["dependentTasks"]) == {"preprocess-op", "train-op", "features-op"}


def _loop(spec: dict) -> str:
    (name,) = [n for n, t in spec["root"]["dag"]["tasks"].items() if "parameterIterator" in t]
    return name


def test_preprocess_fans_out_over_shard_groups_and_joins(spec: dict) -> None:
    # a dsl.ParallelFor over the plan's groups of shards, one preprocess-shards task per group,
    # its outputs collected (dsl.Collected) into the join
    root = spec["root"]["dag"]["tasks"]
    loop = root[_loop(spec)]
    assert loop["parameterIterator"]["items"] == {"inputParameter": "pipelinechannel--preprocess-plan-op-Output"}
    assert loop["iteratorPolicy"]["parallelismLimit"] > 1
    inner = spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
    assert list(inner) == ["preprocess-shards-op"]
    group_input = inner["preprocess-shards-op"]["inputs"]["parameters"]["group"]
    assert group_input["componentInputParameter"].endswith("loop-item")
    pieces = root["preprocess-op"]["inputs"]["artifacts"]["pieces"]["taskOutputArtifact"]
    assert pieces == {"outputArtifactKey": "pipelinechannel--preprocess-shards-op-pieces", "producerTask": _loop(spec)}
    join = spec["components"][root["preprocess-op"]["componentRef"]["name"]]
    assert join["inputDefinitions"]["artifacts"]["pieces"]["isArtifactList"] is True


def test_promotion_is_a_dsl_if_branch_on_the_gate(spec: dict) -> None:
    root = spec["root"]["dag"]["tasks"]
    assert "promote-op" not in root  # only inside the condition
    (cond_name,) = [n for n, t in root.items() if "triggerPolicy" in t]
    cond = root[cond_name]
    assert "gate-op" in cond["dependentTasks"]
    assert "gate-op" in str(cond["inputs"]["parameters"])
    assert cond["triggerPolicy"]["condition"].endswith("== true")
    inner = spec["components"][cond["componentRef"]["name"]]["dag"]["tasks"]
    assert list(inner) == ["promote-op"]
    # gate and promote read the live registry: never answered from the KFP cache
    assert root["gate-op"]["cachingOptions"] == {} and inner["promote-op"]["cachingOptions"] == {}


def test_train_requests_a_gpu_on_the_cuda_image(spec: dict) -> None:
    ex = spec["deploymentSpec"]["executors"]["exec-train-op"]["container"]
    assert ex["image"] == ops.CUDA_IMAGE
    acc = ex["resources"]["accelerator"]
    assert acc["resourceType"] == "nvidia.com/gpu" and acc["resourceCount"] == "1"
    others = [k for k in spec["deploymentSpec"]["executors"] if k != "exec-train-op"]
    assert all("accelerator" not in spec["deploymentSpec"]["executors"][k]["container"].get("resources", {})
               for k in others)


def test_every_task_requests_cpu_and_memory(spec: dict) -> None:
    executors = spec["deploymentSpec"]["executors"]
    for step in STEPS:
        res = executors[f"exec-{step}-op"]["container"]["resources"]
        cpu, mem = RESOURCES[step]
        assert res["resourceCpuRequest"] == cpu
        assert res["resourceMemoryRequest"] == mem
        if step != "train":
            assert executors[f"exec-{step}-op"]["container"]["image"] == ops.CPU_IMAGE


def test_parameters_are_one_json_string_per_section_without_defaults(spec: dict) -> None:
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) == set(SECTIONS)
    assert all(p["parameterType"] == "STRING" and "defaultValue" not in p for p in params.values())


def test_components_install_nothing_at_start(spec: dict) -> None:
    # The images carry medsynth and kfp; a pip install at task start would need the internet.
    for ex in spec["deploymentSpec"]["executors"].values():
        assert "pip install" not in " ".join(ex["container"]["command"])


def test_arguments_come_from_params_with_overrides(params: dict) -> None:
    args = pipeline_arguments(params, {"ingest.limit_per_class": "5", "project.seed": "3"})
    assert set(args) == set(SECTIONS)
    ingest = json.loads(args["ingest"])
    assert ingest["limit_per_class"] == 5 and ingest["dataset"] == params["ingest"]["dataset"]
    assert json.loads(args["project"])["seed"] == 3
    assert json.loads(args["preprocess"]) == params["preprocess"]


@pytest.mark.parametrize("override, needle", [
    ({"ingest.limit_per_class": "many"}, "limit_per_class"),
    ({"nosuch.key": "1"}, "unknown section"),
    ({"ingest.dataset": "nope"}, "unknown dataset"),
])
def test_bad_arguments_fail_before_anything_runs(params: dict, override: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        pipeline_arguments(params, override)


def test_registry_prefix_and_baked_defaults(tmp_path: Path, params: dict) -> None:
    args = pipeline_arguments(params)
    out = compile_pipeline(tmp_path / "p.yaml", registry="ghcr.io/acme/", arguments=args)
    spec = load(out)
    images = {ex["container"]["image"] for ex in spec["deploymentSpec"]["executors"].values()}
    assert images and all(i.startswith("ghcr.io/acme/medsynth/components:") for i in images)
    defaults = {k: v["defaultValue"] for k, v in spec["root"]["inputDefinitions"]["parameters"].items()}
    assert defaults == args


def test_tasks_reach_mlflow_and_s3_through_named_configmap_and_secrets(spec: dict) -> None:
    # Risk guarded: credentials baked into the pipeline, or a task that logs to a pod-local store.
    from medsynth.pipelines.training_pipeline import ENV_CONFIG_MAP, ENV_SECRETS

    k8s = spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for step in STEPS:
        ex = k8s[f"exec-{step}-op"]
        (cm,) = ex["configMapAsEnv"]
        assert cm["configMapName"] == ENV_CONFIG_MAP and not cm["optional"]
        assert "MLFLOW_TRACKING_URI" in {e["envVar"] for e in cm["keyToEnv"]}
        assert {s["secretName"] for s in ex["secretAsEnv"]} == set(ENV_SECRETS)
    # secret-looking variables come only from Secrets, never as literal container env
    for ex in spec["deploymentSpec"]["executors"].values():
        literal = {e["name"] for e in ex["container"].get("env", [])}
        assert not {n for n in literal if "PASSWORD" in n or "SECRET" in n or "TOKEN" in n}


def test_cli_compile_and_run_needs_local(tmp_path: Path, repo: Path, capsys) -> None:
    from medsynth.cli import main

    out = tmp_path / "baked.yaml"
    assert main(["pipeline", "compile", "--out", str(out), "--bake-params", "--registry", "reg.example",
                 "--params", str(repo / "params.yaml"), "--set", "train.epochs=2"]) == 0
    baked = load(out)
    assert json.loads(baked["root"]["inputDefinitions"]["parameters"]["train"]["defaultValue"])["epochs"] == 2
    with pytest.raises(SystemExit) as exc:  # `run` without --local: argparse says what is missing
        main(["pipeline", "run"])
    assert exc.value.code == 2 and "--local" in capsys.readouterr().err
