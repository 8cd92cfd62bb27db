"""Promote: register a trained generator, gate it, and move the ``champion`` alias when it earns it.

1. Register the model (MLflow registry) and point the ``challenger`` alias at the new version.
2. Attach the evaluation metrics and a model card (lineage, config, metrics, privacy, intended use).
3. Under a registry lock, read the current champion's metrics, apply the gate policy and, when it
   passes (and no reviewer approval is required), move ``champion``; record why as version tags.
   A failing gate leaves the champion untouched. Holding the lock across read-compare-set means two
   promotions racing cannot leave ``champion`` on a version that did not beat the champion it saw.

Evaluation integrity (:func:`candidate`): an evaluation is accepted only for the model it scored.
Its ``model_uri`` must be the trained model's (same run), its data hash the training data's and its
extractor sha256 the project's current extractor's; anything else is refused with one line saying
which evaluation to run. FID-domain is compared with the champion's only when both evaluations used
the same extractor and dataset hash (recorded as ``eval.*`` tags on every version); otherwise the
comparison is skipped, saying why, and the gate's absolute floors alone decide.

Review (``medsynth review``) and rollback use the same registry helpers (``medsynth/registry.py``:
tag names, aliases, client, lock), so every alias move is recorded the same way: ``champion.*``
tags on the version (who, when, why).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medsynth import metric_keys as K
from medsynth.components.gate import (
    GRADE_WORDS,
    GatePolicy,
    GateResult,
    evaluate_gate,
    grade,
)
from medsynth.config import params_defaults, to_dict
from medsynth.errors import ConfigError, InputError, RegistryError
from medsynth.fileio import write_json, write_text
from medsynth.project import ProjectConfig
from medsynth.registry import (  # CHAMPION, CHALLENGER, client, ... stay importable from here
    APPROVED,
    CHALLENGER,
    CHAMPION,
    GATE_CHAMPION_COMPARED,
    GATE_CHECKS,
    GATE_GRADE,
    GATE_GRADE_REASON,
    GATE_PASSED,
    GATE_SUMMARY,
    LINEAGE_CLASSES,
    LINEAGE_DATA_HASH,
    LINEAGE_DATASET,
    LINEAGE_GIT_COMMIT,
    METRIC_PREFIX,
    PROTOCOL_TAGS,
    REVIEW_DECISION,
    SYNTHETIC,
    client,
    get_alias,
    move_champion,
    registry_lock,
    set_tags,
    version_metrics,
    version_protocol,
)
from medsynth.tracking import first_line, latest_run_id, setup_mlflow, step_run


@dataclass(frozen=True)
@params_defaults("promote")
class PromoteConfig:
    """``promote:`` in params.yaml."""

    model_name: str  # registered model name; "" = medsynth-<dataset>-<model kind>
    require_approval: bool  # champion moves only after `medsynth review approve`
    lock_timeout_s: float
    gate: GatePolicy  # params.yaml promote.gate


@dataclass
class PromoteResult:
    name: str
    version: str
    gate: GateResult
    champion_version: str | None
    promoted: bool
    reason: str


def model_card(name: str, version: str, lineage: dict[str, Any], metrics: dict[str, Any],
               gate: GateResult, train_config: dict[str, Any]) -> str:
    """The model card stored with every registered version (markdown)."""
    rows = "\n".join(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in sorted(metrics.items()))
    checks = "\n".join(f"- {'PASS' if c.passed else 'FAIL'} {c.name}: {c.detail}" for c in gate.checks)
    cfg = json.dumps(train_config, indent=2, sort_keys=True)
    return f"""# Model card: {name} v{version}

**Outputs are synthetic images. They are not for diagnosis or any clinical decision.**
Every exported image is marked synthetic (file name, PNG metadata, DICOM tags).

**Grade: {GRADE_WORDS.get(str(metrics.get(K.GATE_GRADE)), 'not graded (evaluated before grades existed)')}.**
{metrics.get(K.GATE_GRADE_REASON, '')}

## Intended use
Research, education, software testing and data augmentation experiments on the modality and
classes below. Not intended for clinical use, nor to stand in for real patient data in any
evaluation of a medical device.

## Data lineage
| item | value |
| --- | --- |
| dataset | {lineage.get('dataset', 'unknown')} |
| classes | {', '.join(lineage.get('classes', [])) or 'unconditional'} |
| data hash (preprocessed, DVC-tracked) | {lineage.get('data_hash', 'unknown')} |
| git commit | {lineage.get('git_commit', 'unknown')} |
| training run | {lineage.get('run_id', 'unknown')} |
| evaluation run | {lineage.get('eval_run_id', 'unknown')} |

## Metrics (protocol: see the evaluation report; FID-domain/KID-domain use the project's own
domain classifier as feature extractor, not ImageNet Inception, so they are not comparable with
published FID values)
| metric | value |
| --- | --- |
{rows}

## Privacy
Near-copy share (synthetic images closer to a training image than training images are to each
other, see the evaluation protocol): {metrics.get(K.PRIVACY_NEAR_COPY_SHARE, 'n/a')}. A generator that
memorises is not promoted.

## Gate
{'PASSED' if gate.passed else 'FAILED'}
{checks}

## Training configuration
```json
{cfg}
```
"""


def try_promote(c: Any, project: ProjectConfig, cfg: PromoteConfig, name: str, version: str,
                conditional: bool, actor: str | None = None) -> tuple[GateResult, bool, str]:
    """Gate ``version`` against the current champion under the lock; move champion if it passes."""
    with registry_lock(project, name, cfg.lock_timeout_s):
        mv = c.get_model_version(name, version)
        champ = get_alias(c, name, CHAMPION)
        champ_metrics = (version_metrics(champ) | version_protocol(champ)
                         if champ is not None and champ.version != version else None)
        metrics = version_metrics(mv) | version_protocol(mv)
        gate = evaluate_gate(cfg.gate, metrics, champ_metrics, conditional)
        g, why = grade(cfg.gate, metrics, [x for x in gate.checks if x.floor], conditional)
        set_tags(c, name, version, {
            GATE_GRADE: g, GATE_GRADE_REASON: why,
            GATE_PASSED: str(gate.passed).lower(),
            GATE_SUMMARY: gate.summary(),
            GATE_CHECKS: json.dumps(gate.as_dict()["checks"]),
            GATE_CHAMPION_COMPARED: champ.version if champ is not None else "none",
        })
        if not gate.passed:
            return gate, False, gate.summary()
        if cfg.require_approval and (mv.tags or {}).get(REVIEW_DECISION) != APPROVED:
            return gate, False, "gate passed; waiting for reviewer approval (promote.require_approval)"
        reason = gate.summary() + (f" (vs champion v{champ.version})" if champ is not None else " (first champion)")
        move_champion(c, name, version, reason, actor)
        return gate, True, reason


def register(
    project: ProjectConfig,
    cfg: PromoteConfig,
    model_uri: str,
    name: str,
    metrics: dict[str, Any],
    lineage: dict[str, Any],
    train_config: dict[str, Any],
    out_dir: Path,
    protocol: dict[str, str] | None = None,
) -> PromoteResult:
    """Register ``model_uri`` as a new version of ``name`` and try to promote it."""
    import mlflow
    from mlflow.exceptions import MlflowException

    setup_mlflow(project)
    c = client()
    conditional = bool(lineage.get("conditional")) and len(lineage.get("classes", [])) > 1
    try:
        with step_run(project, "promote", {"promote": to_dict(cfg), "model_uri": model_uri, "model_name": name},
                      lineage.get("data_hash")):
            mv = mlflow.register_model(model_uri, name)
            version = str(mv.version)
            set_tags(c, name, version, {f"{METRIC_PREFIX}{k}": v for k, v in metrics.items()
                                        if isinstance(v, (int, float, bool))})
            set_tags(c, name, version, {
                LINEAGE_DATASET: lineage.get("dataset", "unknown"),
                LINEAGE_DATA_HASH: lineage.get("data_hash", "unknown"),
                LINEAGE_GIT_COMMIT: lineage.get("git_commit", "unknown"),
                LINEAGE_CLASSES: json.dumps(lineage.get("classes", [])),
                SYNTHETIC: "true",
                **{PROTOCOL_TAGS[k]: v for k, v in (protocol or {}).items() if k in PROTOCOL_TAGS and v},
            })
            c.set_registered_model_alias(name, CHALLENGER, version)
            gate, promoted, reason = try_promote(c, project, cfg, name, version, conditional)
            graded = c.get_model_version(name, version).tags or {}  # the grade try_promote recorded
            card = model_card(name, version, lineage, {**metrics, K.GATE_GRADE: graded.get(GATE_GRADE),
                                                       K.GATE_GRADE_REASON: graded.get(GATE_GRADE_REASON, "")},
                              gate, train_config)
            c.update_model_version(name, version, description=registry_description(card))
            out_dir.mkdir(parents=True, exist_ok=True)
            write_text(out_dir / "model_card.md", card)
            champ = get_alias(c, name, CHAMPION)
            result = {"name": name, "version": version, "promoted": promoted, "reason": reason,
                      "gate": gate.as_dict(), "champion_version": str(champ.version) if champ else None}
            write_json(out_dir / "promotion.json", result)
            mlflow.log_artifact(str(out_dir / "model_card.md"))
            mlflow.log_artifact(str(out_dir / "promotion.json"))
            mlflow.log_metrics({"gate_passed": float(gate.passed), "promoted": float(promoted)})
    except MlflowException as exc:
        raise RegistryError(f"registry: {first_line(exc)}") from None
    return PromoteResult(name, version, gate, str(champ.version) if champ else None, promoted, reason)


@dataclass
class Candidate:
    """A trained, evaluated generator waiting to be registered: what the gate and registry need."""

    name: str
    model_uri: str
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    train_params: dict[str, str]
    protocol: dict[str, str] = field(default_factory=dict)  # extractor_sha256, data_hash, model_uri

    @property
    def conditional(self) -> bool:
        return bool(self.lineage.get("conditional")) and len(self.lineage.get("classes", [])) > 1


def extractor_sha256(root: str | os.PathLike) -> str | None:
    """The sha256 recorded in a feature extractor folder's meta.json (None when there is none)."""
    meta = Path(root) / "meta.json"
    try:
        return str(json.loads(meta.read_text())["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _same_model(scored: str, info: dict[str, Any], train_dir: Path) -> bool:
    """Whether the evaluation's model URI is the trained model (same URI, run, or generator file)."""
    if scored == info.get("model_uri"):
        return True
    if scored.startswith("runs:/") and scored.split("/")[1] == info.get("run_id"):
        return True
    local = Path(scored)
    return local.suffix == ".pt" and local.is_file() and local.resolve().parent == train_dir.resolve()


def check_integrity(metrics_file: Path, metrics: dict[str, Any], info: dict[str, Any], train_dir: Path,
                    data_hash: str, extractor: str | None) -> dict[str, str]:
    """Refuse an evaluation of another model, other data or another extractor. Returns its protocol.

    Raises:
        InputError: one line naming the evaluation file, what differs and which evaluation to run.
    """
    proto = metrics.get(K.PROTOCOL) if isinstance(metrics.get(K.PROTOCOL), dict) else {}
    scored = str(metrics.get(K.MODEL_URI) or proto.get(K.MODEL_URI) or "")
    fix = f"run `medsynth evaluate --model-uri {info.get('model_uri')}`"
    if not scored:
        raise InputError(f"{metrics_file}: the evaluation does not record which model it scored (no model_uri); {fix}")
    if not _same_model(scored, info, train_dir):
        raise InputError(f"{metrics_file}: evaluation of another model ({scored}); the candidate is "
                         f"{info.get('model_uri')} (training run {info.get('run_id')}); {fix}")
    ev_hash = str(proto.get(K.DATA_HASH) or "")
    if not ev_hash or ev_hash != data_hash:
        raise InputError(f"{metrics_file}: evaluated on data hash {ev_hash[:12] or 'unknown'} but the model was "
                         f"trained on {data_hash[:12]}; {fix} --data <the prepared data it was trained on>")
    ev_ext = str(proto.get(K.EXTRACTOR_SHA256) or "")
    if extractor is not None and ev_ext != extractor:
        raise InputError(f"{metrics_file}: evaluated with feature extractor {ev_ext[:12] or 'unknown'} but the "
                         f"project's extractor is {extractor[:12]}; scores from different extractors are not "
                         f"comparable: {fix}")
    out = {K.MODEL_URI: scored, K.DATA_HASH: ev_hash, K.EXTRACTOR_SHA256: ev_ext}
    if metrics.get(K.GATE_POLICY_SHA256) and isinstance(metrics.get(K.GATE_FLOORS), dict):
        # the floors as evaluate judged them, and under which policy: the gate reads them back
        out[K.GATE_POLICY_SHA256] = str(metrics[K.GATE_POLICY_SHA256])
        out[K.GATE_FLOORS] = json.dumps(metrics[K.GATE_FLOORS], separators=(",", ":"))
    return out


def candidate(cfg: PromoteConfig, project: ProjectConfig, train_dir: str | os.PathLike,
              eval_dir: str | os.PathLike, dataset: str = "data", extractor: str | None = None) -> Candidate:
    """Read the train and evaluate outputs and the training run (lineage) into a :class:`Candidate`.

    The registered name is ``promote.model_name`` or ``medsynth-<dataset>-<model kind>``.
    ``extractor``: the sha256 the evaluation's feature extractor must have (the project's current
    one); None skips that check (e.g. a pipeline step that has no extractor folder).

    Raises:
        InputError: the evaluation is not of this model, data or extractor (:func:`check_integrity`).
    """
    from mlflow.exceptions import MlflowException

    train_dir, eval_dir = Path(train_dir), Path(eval_dir)
    info_file, metrics_file = train_dir / "train_summary.json", eval_dir / "metrics.json"
    for f in (info_file, metrics_file):
        if not f.is_file():
            raise ConfigError(f"{f}: missing (run `medsynth train` and `medsynth evaluate` first)")
    info = json.loads(info_file.read_text())
    metrics = json.loads(metrics_file.read_text())
    if not info.get("model_uri") or not info.get("run_id"):
        raise ConfigError(f"{info_file}: no logged model (the training run was not tracked; rerun without --no-track)")
    setup_mlflow(project)
    try:
        train_run = client().get_run(info["run_id"])
    except MlflowException as exc:
        raise RegistryError(f"training run {info['run_id']}: {first_line(exc)}") from None
    params, tags = train_run.data.params, train_run.data.tags
    data_hash = tags.get("medsynth.data_hash", "unknown")
    protocol = check_integrity(metrics_file, metrics, info, train_dir, data_hash, extractor)
    kind = params.get("model", "gan")
    classes = list(info.get("classes", []))
    lineage = {
        "dataset": dataset,
        "classes": classes if kind != "dcgan" else [],
        "conditional": kind != "dcgan" and len(classes) > 1,
        "data_hash": data_hash,
        "git_commit": tags.get("mlflow.source.git.commit", "unknown"),
        "run_id": info["run_id"],
        "eval_run_id": metrics.get("run_id") or latest_run_id({"medsynth.step": "evaluate", "medsynth.model_uri": protocol[K.MODEL_URI], "medsynth.data_hash": data_hash}) or "unknown",  # noqa: E501
    }
    flat = {k: v for k, v in metrics.items() if isinstance(v, (int, float, bool))}
    return Candidate(cfg.model_name or f"medsynth-{dataset}-{kind}", info["model_uri"], flat, lineage, dict(params),
                     protocol)


def preview_gate(cfg: PromoteConfig, project: ProjectConfig, cand: Candidate) -> GateResult:
    """The gate's verdict against the current champion, without registering anything.

    ``register`` decides again under the registry lock, so a champion that changes in between
    is still respected.
    """
    setup_mlflow(project)
    champ = get_alias(client(), cand.name, CHAMPION)
    champ_metrics = version_metrics(champ) | version_protocol(champ) if champ is not None else None
    return evaluate_gate(cfg.gate, cand.metrics | cand.protocol, champ_metrics, cand.conditional)


DESCRIPTION_MAX = 5000  # MLflow's model_versions.description is VARCHAR(5000) on PostgreSQL (SQLite does not check)


def registry_description(card: str) -> str:
    """The model card as a version description, cut to what every MLflow backend stores; the full
    card is ``model_card.md`` in the promote run's artifacts (and in the promote output folder)."""
    if len(card) <= DESCRIPTION_MAX:
        return card
    note = "\n\n[cut at 5,000 characters, the registry's limit: the full card is model_card.md in the promote run]"
    return card[: DESCRIPTION_MAX - len(note)] + note


def run(cfg: PromoteConfig, project: ProjectConfig, train_dir: str | os.PathLike,
        eval_dir: str | os.PathLike, out_dir: str | os.PathLike, dataset: str = "data",
        extractor: str | None = None) -> PromoteResult:
    """The promote step: read the train and evaluate outputs, check they belong together, register,
    gate, promote.

    Lineage (model kind, data hash, git commit, config) is read from the training run in MLflow,
    so the model card says exactly how the registered model was made. ``extractor``: the sha256 the
    evaluation's extractor must have (see :func:`candidate`).
    """
    c = candidate(cfg, project, train_dir, eval_dir, dataset, extractor)
    return register(project, cfg, c.model_uri, c.name, c.metrics, c.lineage, c.train_params, Path(out_dir),
                    c.protocol)
