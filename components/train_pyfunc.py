"""The MLflow pyfunc model of a trained generator ("models from code": MLflow runs this file).

MLflow executes this file when the model is logged and when MLflow's own tools load it (e.g.
``mlflow models serve``); medsynth itself never does: ``medsynth.training.loading.load_generator`` reads
only the sha256-checked ``generator.pt``, so a changed copy of this file in the artifact store runs
nowhere in the pipeline, the evaluator or the app. It ends with
``mlflow.models.set_model`` -- the one module in the package with an import-time effect, and it
is never imported by medsynth itself. Nothing is pickled: the model is this code plus the
``generator.pt`` artifact (spec + state dict), read with ``torch.load(weights_only=True)``.

Input: a DataFrame, one row per request, columns ``seed``, ``count`` and optionally ``label``
(class index for a conditional model; missing or -1 cycles over the classes).
Output: float32 images [sum(count), 1, R, R] in [-1, 1] -- synthetic.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np


class GeneratorModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        from medsynth.training.loading import load_sampler

        self.sampler = load_sampler(context.artifacts["generator"])

    def predict(self, context, model_input, params=None):  # noqa: ANN001 - MLflow inspects hints
        out = []
        for row in model_input.to_dict("records"):
            n, seed = int(row["count"]), int(row["seed"])
            label = row.get("label")
            labels = None
            if label is not None and not (isinstance(label, float) and np.isnan(label)) and int(label) >= 0:
                labels = np.full(n, int(label), dtype=np.int64)
            out.append(self.sampler.generate(n, seed, labels))
        return np.concatenate(out)


mlflow.models.set_model(GeneratorModel())
