"""The GAN study (``medsynth study``, ``make study``): a face beside the CLI, not a pipeline step.

``run.py`` plans and runs the grid of (dataset, model, augmentation, seed) cells through the same
components as the pipeline (ingest -> ... -> train -> evaluate), every cell an MLflow run tagged
with the study id; ``report.py`` writes docs/RESULTS.md from those runs only. Like the CLI and the
app it may import ``components/``; nothing below it imports the study.
"""
