"""The continuous loop: monitor's decision -> retraining on old + new data -> record, with the
pipeline launcher injected.

1. :func:`act` applies the trigger policy (``components.trigger.decide``). On a trigger (and not a
   dry run) it builds the retraining's params (the same pipeline, the decision's batches added as
   sources), hands them to the :class:`Launcher` it is given and records the trigger, so those
   batches never trigger again. A launch that fails is recorded as an error in the history and
   re-raised; its batches stay unconsumed and the next decision may try again.
2. :func:`loop` is the whole loop as a demonstration: a champion trained through the pipeline,
   held-out real images passed through an acquisition change as new batches, the monitor flags them,
   the policy triggers, the retraining runs and is gated, and the monitor re-checks against the new
   training data. It reports through ``log`` and returns a :class:`LoopOutcome`.

Components never import ``pipelines/`` (the dependency points the other way), so the launchers
live in ``medsynth.pipelines.launch``: ``LocalLauncher`` (kfp.local on this machine, its outputs
readable here) and ``KfpLauncher`` (a run on a KFP cluster). The CLI, a scheduled job or the app
chooses one and calls these functions; a test can pass its own.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from medsynth.components.monitor import MonitorConfig, history_of, load_reference, reference_path
from medsynth.errors import ConfigError
from medsynth.monitoring.policy import Decision
from medsynth.project import ProjectConfig


@dataclass
class Launched:
    """A started retraining. ``record`` is what the history keeps; a local run also names its outputs."""

    runner: str
    record: dict[str, Any]
    prepared: Path | None = None  # the new training data (preprocess output)
    generator: Path | None = None  # the new generator.pt
    gate: dict[str, Any] | None = None  # the gate's result (``components.gate.GateResult.as_dict``)
    promotion: dict[str, Any] | None = None  # promote's promotion.json (absent when the gate refused)

    def verdict(self) -> str:
        """Promoted or not, and why, in one line."""
        if self.promotion is not None:
            p = self.promotion
            how = "promoted to champion" if p.get("promoted") else "registered, not promoted"
            return f"{p.get('name')} v{p.get('version')} {how}: {p.get('reason', '')}"
        if self.gate is not None:
            failed = [c for c in self.gate.get("checks", []) if not c.get("passed")]
            return "rejected by the gate: " + ("; ".join(f"{c['name']}: {c.get('detail', '')}" for c in failed)
                                               or "no check failed but the gate did not pass")
        return f"started on {self.runner}: {json.dumps(self.record, sort_keys=True)}"


class Launcher(Protocol):
    """Starts the training pipeline with these params (and the pipeline's own overrides)."""

    def launch(self, params: dict[str, Any], overrides: dict[str, str]) -> Launched: ...


@dataclass
class Acted:
    decision: Decision
    launched: Launched | None = None  # None: no trigger, a dry run, or no launcher


def act(cfg: MonitorConfig, project: ProjectConfig, params: dict[str, Any], overrides: dict[str, str],
        launcher: Launcher | None, model: str | None = None, version: str | None = None,
        reference: str | Path | None = None, dry_run: bool = False) -> Acted:
    """Step 1 of the module docstring. ``launcher`` None (or ``dry_run``) decides without acting."""
    from medsynth.components.trigger import decide, record_trigger, retrain_params

    dry = dry_run or launcher is None
    decision = decide(cfg, project, model=model, version=version, reference=reference, dry_run=dry)
    if not decision.trigger or dry:
        return Acted(decision)
    try:
        ref = load_reference(reference_path(cfg, project, reference))
        launched = launcher.launch(retrain_params(params, decision, ref, overrides), overrides)
    except Exception as exc:
        history_of(project).append("error", stage="launch", error=f"{type(exc).__name__}: {exc}"[:500],
                                   batches=decision.batches)
        raise
    record_trigger(project, decision, launched.record)
    return Acted(decision, launched)


def check_outputs(cfg: MonitorConfig, project: ProjectConfig, generator: str | Path, label: str,
                  seed: int | None = None, track: bool = True) -> Any:
    """The champion's outputs against its first (evaluation-time) batch; ``generator`` is any
    reference :func:`medsynth.training.loading.load_generator` takes."""
    from medsynth.components.monitor_outputs import run_outputs
    from medsynth.training.loading import load_generator

    return run_outputs(cfg, project, load_generator(generator, project), label, seed=seed, track=track)


@dataclass
class LoopOutcome:
    champion: Launched | None  # None: an existing champion's data was given
    decision: Decision
    retrained: Launched | None = None
    drift_resolved: bool | None = None
    seconds: float = 0.0


def loop(cfg: MonitorConfig, project: ProjectConfig, params: dict[str, Any], overrides: dict[str, str],
         launcher: Launcher, shift: str = "blur=1.0", reference: str | Path | None = None,
         log: Callable[[str], None] = print) -> LoopOutcome:
    """Step 2 of the module docstring. ``shift`` is ``KIND=VALUE`` (monitoring/shifts.py)."""
    import numpy as np

    from medsynth.components import monitor, trigger
    from medsynth.monitoring.shifts import Shift, apply_shift

    kind, _, value = shift.partition("=")
    shift_kind, strength = Shift(kind), float(value or 1.0)
    cfg = dataclasses.replace(cfg, policy=dataclasses.replace(cfg.policy, consecutive_drift=2))
    t0 = time.perf_counter()

    def outputs_check(gen: Path) -> None:
        res = check_outputs(cfg, project, gen, f"loop-champion:{gen}")
        log(f"champion outputs (seed {res.batch_hash.rsplit(':', 1)[-1]}): {res.drift.summary_line()}")

    # 1. the champion (trained now through the same pipeline, unless one is given)
    first = None
    if reference:
        ref_dir = Path(reference)
    else:
        log("1. training the champion (pipeline: ingest -> ... -> promote)")
        first = launcher.launch(params, overrides)
        log(f"   {first.verdict()}")
        if first.prepared is None:
            raise ConfigError(f"the {first.runner} launcher gives no local outputs: pass reference= (the champion's "
                             "prepared data) to run the loop against a remote pipeline")
        ref_dir = first.prepared
        if first.generator is not None and first.generator.is_file():  # becomes the output check's reference
            outputs_check(first.generator)
    ref = monitor.load_reference(ref_dir)

    # 2. new real batches: held-out test images of the champion's data through an acquisition change
    x, y = ref.split_uint8("test")
    parts = np.array_split(np.random.default_rng(project.seed).permutation(len(x)), 3)
    batch_dir = project.artifacts_path() / "monitor" / "loop-batches"
    batch_dir.mkdir(parents=True, exist_ok=True)
    batches = []
    for i, idx in enumerate(parts):
        path = batch_dir / f"batch{i + 1}-{shift_kind.value}{strength:g}.npz"
        # stored as ``train_*``: new data meant for learning (ingest keeps an npz's split keys)
        np.savez(path, train_images=apply_shift(x[idx, 0], shift_kind, strength, seed=i),
                 train_labels=y[idx].reshape(-1, 1))
        batches.append(path)
    log(f"2. {len(batches)} new batches of held-out real images with {shift_kind.value}={strength:g} in {batch_dir}")

    # 3. the monitor flags them; in-domain ones are approved (here by the demo, normally by a person);
    #    the policy triggers after two consecutive drifted batches
    for b in batches[:2]:
        res = monitor.run(cfg, project, b, params, reference=ref_dir)
        log(f"3. {b.name}: {res.drift.summary_line()}; domain {res.domain.verdict if res.domain else '?'}")
        if res.domain is not None and res.domain.verdict != "off":
            trigger.approve(project, res.batch_hash, "medsynth monitor loop (demo)",
                            "held-out real images of the champion's own data, acquisition changed")
    acted = act(cfg, project, params, overrides, launcher, reference=ref_dir)
    out = LoopOutcome(first, acted.decision)
    log(f"4. {acted.decision.summary_line()}")
    if acted.launched is None:
        log("   no retraining: the loop stops here (see the notes above)")
        out.seconds = time.perf_counter() - t0
        return out

    # 4. retrained on old + new data through the same pipeline and gate
    out.retrained = new = acted.launched
    log(f"5. retrained on the current data + {len(acted.decision.batches)} new batches "
        f"({new.record.get('seconds', '?')}s): {new.verdict()}")

    # 5. the monitor against the new model's training data
    if new.prepared is not None:
        res = monitor.run(cfg, project, batches[2], params, reference=new.prepared)
        out.drift_resolved = not res.drift.drifted
        if res.drift.drifted:
            ids = monitor.load_reference(new.prepared).arrays["train_ids"].astype(str)
            stems = tuple(f"{Path(p).stem}:" for p in acted.decision.batch_paths)
            share = float(np.mean([i.startswith(stems) for i in ids])) if len(ids) else 0.0
            log(f"6. re-check of {batches[2].name} against the new training data: still drifted "
                f"({res.drift.summary_line()}): {share:.0%} of the new training split is of the new kind, so a "
                "batch made only of it still differs from that mixture; more new data (or a reference of recent "
                "data only) resolves it")
        else:
            log(f"6. re-check of {batches[2].name} against the new training data: drift resolved "
                f"({res.drift.summary_line()})")
    if first is not None and first.generator is not None and first.generator.is_file():
        outputs_check(first.generator)  # a later check of the first champion's outputs
    out.seconds = time.perf_counter() - t0
    log(f"loop done in {out.seconds:.0f}s; `medsynth monitor history` shows every step")
    return out
