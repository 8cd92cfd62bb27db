"""Run the training pipeline on this machine through ``kfp.local`` (SubprocessRunner, no Docker).

1. Resolve the pipeline's arguments from params.yaml + overrides (fails early on a bad config).
2. Open one MLflow parent run; every step's run nests under it (``MEDSYNTH_PARENT_RUN_ID`` is
   inherited by the task subprocesses), in the same store the CLI uses.
3. Run the pipeline with ``kfp.local`` in this venv (``use_venv=False``: the tasks import the
   installed medsynth, nothing is pip-installed). Task output goes to a log file, not the terminal,
   and the wall time of each task is measured from kfp's own "Executing" / "finished" lines.
4. A failing task stops the pipeline (kfp runs nothing after it); its error line is raised as
   :class:`PipelineFailed` with the log file's path, and the parent run is marked FAILED.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medsynth.errors import MedsynthError

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_START = re.compile(r"Executing task '([\w-]+)'")
_END = re.compile(r"Task '([\w-]+)' finished with status (\w+)")
# The last line of a Python traceback (``medsynth.errors.InputError: data/x.npz: ...``).
_ERROR = re.compile(r"^\s*((?:[\w.]+\.)?\w*(?:Error|Failed|Exception|Interrupt)): (.+)$")


class PipelineFailed(MedsynthError):
    """A pipeline task failed; later tasks did not run."""

    exit_code = 4


@dataclass
class LocalRun:
    """What a local pipeline run produced."""

    run_dir: Path  # <pipeline_root>/<kfp run name>: one folder per task with its output artifacts
    parent_run_id: str
    log_file: Path
    step_seconds: dict[str, float] = field(default_factory=dict)  # task -> wall seconds, in run order
    total_seconds: float = 0.0
    step_cpu_seconds: dict[str, float] = field(default_factory=dict)  # task -> CPU seconds of its process

    def output(self, task: str, name: str) -> Path:
        """The output artifact ``name`` of task ``task`` (e.g. ``("ingest", "dataset")``)."""
        return self.run_dir / f"{task}-op" / name


class _TimedLog(io.TextIOBase):
    """A stdout replacement: writes everything to a file and times each kfp task from its log lines."""

    def __init__(self, f: io.TextIOBase, echo: bool) -> None:
        self.f, self.echo, self.buf = f, echo, ""
        self.start: dict[str, float] = {}
        self.cpu0: dict[str, float] = {}
        self.seconds: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.status: dict[str, str] = {}
        self.failures: dict[str, str] = {}
        self.current: str | None = None

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self.f.write(s)
        if self.echo:
            import sys

            sys.__stdout__.write(s)
        self.buf += s
        while "\n" in self.buf:
            line, self.buf = self.buf.split("\n", 1)
            self._line(_ANSI.sub("", line))
        return len(s)

    def _line(self, line: str) -> None:
        now = time.perf_counter()
        if m := _START.search(line):
            self.current = m.group(1)
            self.start[self.current] = now
            self.cpu0[self.current] = _children_cpu()
        elif m := _END.search(line):
            task = m.group(1)
            self.seconds[_step(task)] = now - self.start.get(task, now)
            # the task's subprocess has been waited for, so its CPU time is in RUSAGE_CHILDREN now
            self.cpu[_step(task)] = _children_cpu() - self.cpu0.get(task, 0.0)
            self.status[_step(task)] = m.group(2)
            self.current = None
        elif self.current and (m := _ERROR.match(line)):
            self.failures[_step(self.current)] = f"{m.group(1).rsplit('.', 1)[-1]}: {m.group(2).strip()}"

    def flush(self) -> None:
        self.f.flush()


def _children_cpu() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _step(task: str) -> str:
    return task.removesuffix("-op")


def run_local(
    params: dict[str, Any],
    overrides: dict[str, str] | None = None,
    pipeline_root: str | os.PathLike | None = None,
    echo: bool = False,
) -> LocalRun:
    """Run the whole pipeline locally; returns where its artifacts are and how long each step took.

    Raises:
        ConfigError: params.yaml or an override is invalid (nothing runs).
        PipelineFailed: a step failed (names the step and its error; later steps did not run).
        RegistryError: the MLflow tracking server cannot be reached.
    """
    from kfp import local

    from medsynth.pipelines.training_pipeline import (
        PIPELINE_NAME,
        pipeline_arguments,
        training_pipeline,
    )
    from medsynth.project import load_project
    from medsynth.tracking import parent_run

    arguments = pipeline_arguments(params, overrides)  # 1. fails here on a bad config
    project = load_project(params, overrides)
    root = Path(pipeline_root) if pipeline_root else project.artifacts_path() / "kfp"
    root.mkdir(parents=True, exist_ok=True)
    logs = root / "logs"
    logs.mkdir(exist_ok=True)
    log_file = logs / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    before = {p.name for p in root.iterdir()}
    t0 = time.perf_counter()
    with parent_run(project, "pipeline") as run, open(log_file, "w") as f:  # 2.
        import mlflow

        mlflow.set_tags({"medsynth.runner": "kfp.local", "medsynth.pipeline": PIPELINE_NAME})
        log = _TimedLog(f, echo)
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
        try:
            with contextlib.redirect_stdout(log), warnings.catch_warnings():  # 3.
                # kfp.local warns that resources/images do not apply locally: known, by design.
                warnings.filterwarnings("ignore", module=r"kfp\.local\..*")
                training_pipeline(**arguments)
        except RuntimeError as exc:  # 4. kfp raises RuntimeError("... Inner task failed: 'x'.")
            log.flush()
            failed = [t for t, st in log.status.items() if st != "SUCCESS"]
            step = failed[-1] if failed else _step(log.current or "unknown")
            why = log.failures.get(step) or _ANSI.sub("", str(exc))
            raise PipelineFailed(f"pipeline step {step!r} failed: {why} (log: {log_file})") from None
        total = time.perf_counter() - t0
        for step, sec in log.seconds.items():
            mlflow.log_metrics({f"step_seconds_{step}": sec, f"step_cpu_seconds_{step}": log.cpu.get(step, 0.0)})
        mlflow.log_metric("pipeline_seconds", total)
        mlflow.log_artifact(str(log_file), "pipeline")
    new = sorted((p for p in root.iterdir() if p.is_dir() and p.name not in before and p.name != "logs"),
                 key=lambda p: p.stat().st_mtime)
    run_dir = new[-1] if new else root
    return LocalRun(run_dir, run.info.run_id, log_file, dict(log.seconds), total, dict(log.cpu))
