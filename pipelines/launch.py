"""Launchers for the retraining loop (``components.retrain.Launcher``): where a triggered retraining runs.

* :class:`LocalLauncher`: the pipeline through ``kfp.local`` on this machine; its outputs (the new
  prepared data, the generator, the gate's ``gate.json`` and promote's ``promotion.json``) are
  read back from the run's folders through ``LocalRun.output``.
* :class:`KfpLauncher`: a run on a KFP cluster (``medsynth.pipelines.remote``); it returns the run
  id, the outputs stay in the cluster's artifact store.

Both pass on only the overrides of the pipeline's own sections (``monitor.*``, ``app.*`` belong to
the command that decided).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from medsynth.components.retrain import Launched


def pipeline_overrides(overrides: dict[str, str]) -> dict[str, str]:
    """The ``--set`` overrides the pipeline takes."""
    from medsynth.pipelines.training_pipeline import SECTIONS

    return {k: v for k, v in overrides.items() if k.split(".", 1)[0] in SECTIONS}


@dataclass
class LocalLauncher:
    echo: bool = False

    def launch(self, params: dict[str, Any], overrides: dict[str, str]) -> Launched:
        from medsynth.generator import GENERATOR_FILE
        from medsynth.pipelines.local import run_local

        res = run_local(params, pipeline_overrides(overrides), echo=self.echo)
        gate_file = res.output("gate", "result")
        promo_file = res.output("promote", "promotion") / "promotion.json"
        return Launched(
            runner="kfp.local",
            record={"runner": "kfp.local", "parent_run_id": res.parent_run_id, "run_dir": str(res.run_dir),
                    "seconds": round(res.total_seconds, 1)},
            prepared=res.output("preprocess", "prepared"),
            generator=res.output("train", "model") / GENERATOR_FILE,
            gate=json.loads(gate_file.read_text()) if gate_file.is_file() else None,
            promotion=json.loads(promo_file.read_text()) if promo_file.is_file() else None)


@dataclass
class KfpLauncher:
    host: str
    namespace: str | None = None
    run_name: str = "medsynth-retrain"

    def launch(self, params: dict[str, Any], overrides: dict[str, str]) -> Launched:
        from medsynth.pipelines.remote import Connection, submit
        from medsynth.pipelines.training_pipeline import pipeline_arguments

        run_id = submit(Connection(host=self.host, namespace=self.namespace),
                        pipeline_arguments(params, pipeline_overrides(overrides)), run_name=self.run_name)
        return Launched(runner="kfp", record={"runner": "kfp", "host": self.host, "run_id": run_id})
