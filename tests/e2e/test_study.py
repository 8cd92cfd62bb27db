"""The GAN study end to end on a one-cell micro profile: MLflow runs -> RESULTS.md with every column filled."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from medsynth.cli import main

pytestmark = pytest.mark.slow

NUMBER = re.compile(r"^-?\d[\d,]*(\.\d+)?(e[+-]?\d+)?%?( ± -?\d[\d,]*(\.\d+)?(e[+-]?\d+)?%?)?$")


def _study_runs(home: Path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{home / '.medsynth' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("study")
    return client.search_runs([exp.experiment_id], max_results=1000) if exp else []


def test_micro_study_writes_results_from_mlflow(project_home: Path, capsys: pytest.CaptureFixture) -> None:
    from medsynth.study.report import parse_tables

    out = project_home / "docs" / "RESULTS.md"
    assert main(["study", "--profile", "micro", "--out", str(out)]) == 0
    text = out.read_text()
    tables = parse_tables(text)
    assert len(tables) == 4, list(tables)
    for title, (header, rows) in tables.items():
        assert header[:2] == ["Cell", "Seeds"], title
        assert len(rows) == 1 and rows[0][0] == "cgan · pneumonia", (title, rows)
        for name, value in zip(header, rows[0], strict=True):
            assert value and "n/a" not in value and "nan" not in value.lower(), f"{title}: {name} empty ({value!r})"
            if name not in ("Cell", "device", "MedMNIST v2 reference", "memory added (MiB)"):
                assert NUMBER.match(value), f"{title}: {name} = {value!r} is not a number"
    ref = tables[next(t for t in tables if t.startswith("Utility"))]
    assert "ACC 0.854" in ref[1][0][-1]  # MedMNIST v2 ResNet-18 (28) reference for PneumoniaMNIST

    # the numbers are MLflow's: FID-domain and training steps read back from the runs
    runs = _study_runs(project_home)
    by_step = {r.data.tags.get("medsynth.step"): r for r in runs}
    assert {"study", "train", "evaluate", "ingest", "validate", "preprocess", "features"} <= set(by_step)
    ev, tr = by_step["evaluate"], by_step["train"]
    quality = tables[next(t for t in tables if t.startswith("Quality"))]
    assert quality[1][0][2] == f"{ev.data.metrics['fid_domain']:.3g}"
    compute = tables[next(t for t in tables if t.startswith("Compute"))]
    row = dict(zip(compute[0], compute[1][0], strict=True))
    assert row["steps"] == "12" and tr.data.metrics["global_step"] == 12
    assert int(row["G params"].replace(",", "")) == int(tr.data.params["model.params_g"]) > 0
    assert tr.data.metrics["peak_memory_mib"] > tr.data.metrics["memory_added_mib"] >= 0
    assert row["device"].startswith("cpu")
    assert ev.data.tags["medsynth.study.cell"] == tr.data.tags["medsynth.study.cell"] == "cgan-pneumonia"

    # quality-per-compute curve: probe points logged at increasing training time
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{project_home / '.medsynth' / 'mlflow.db'}")
    secs = [m.value for m in sorted(client.get_metric_history(tr.info.run_id, "curve_train_seconds"), key=lambda m: m.step)]
    fids = client.get_metric_history(tr.info.run_id, "curve_fid_domain")
    assert len(secs) == len(fids) == 2 and secs[0] < secs[1]

    figs = out.parent / "results"
    for name in ("quality_vs_compute.png", "cgan-pneumonia_synthetic_samples.png",
                 "cgan-pneumonia_nearest_real.png", "cgan-pneumonia_closest_training_pairs.png"):
        assert (figs / name).stat().st_size > 1000, name
        assert f"results/{name}" in text
    assert "## Discussion" in text and "duplicated-real control" in text

    # re-running skips the finished cell: no new train/evaluate runs, the document is rewritten
    n_before = len(runs)
    out.unlink()
    capsys.readouterr()
    assert main(["study", "--profile", "micro", "--out", str(out)]) == 0
    assert "0 runs to do, 1 already finished" in capsys.readouterr().out
    assert len(_study_runs(project_home)) == n_before
    assert parse_tables(out.read_text()) == tables
    # the augmentation question's block (`medsynth study --augment`) survives a rewrite of the document
    from medsynth.fileio import put_block
    from medsynth.study.augment_study import END, SECTION, START

    put_block(out, f"{START}\naugmentation table\n{END}", START, END, SECTION)
    assert main(["study", "--profile", "micro", "--report-only", "--out", str(out)]) == 0
    assert "augmentation table" in out.read_text() and out.read_text().count(SECTION) == 1
    assert parse_tables(out.read_text()) == tables
    # a study made by other settings or code is still reportable by its id
    sid = ev.data.tags["medsynth.study.id"]
    again = project_home / "again.md"
    assert main(["study", "--profile", "micro", "--set", "train.lr_g=0.001", "--report-only",
                 "--study-id", sid, "--out", str(again)]) == 0
    assert parse_tables(again.read_text()) == tables and sid in again.read_text()


def test_study_bad_arguments_are_one_line_errors(project_home: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["study", "--profile", "huge"]) != 0
    assert "unknown; valid: micro, quick, full" in capsys.readouterr().err
    assert main(["study", "--profile", "quick", "--cells", "vae-ct"]) != 0
    assert "vae-ct not in profile" in capsys.readouterr().err
    assert main(["study", "--profile", "micro", "--seeds", "a,b"]) != 0
    assert "--seeds" in capsys.readouterr().err
    # no runs yet: the report says so instead of writing an empty document
    out = project_home / "RESULTS.md"
    assert main(["study", "--profile", "micro", "--report-only", "--out", str(out)]) != 0
    assert "no finished train+evaluate runs" in capsys.readouterr().err
    assert not out.exists()
    assert main(["study", "--profile", "micro", "--study-id", "micro-0123456789"]) != 0
    assert "only with --report-only" in capsys.readouterr().err
    # the augmentation question: grid options refused, and a generator without labelled classes
    assert main(["study", "--augment", "--cells", "cgan-ct"]) != 0
    assert "--cells and --study-id belong to the study grid" in capsys.readouterr().err
    assert main(["study", "--augment", "--report-only", "--out", str(out)]) != 0
    assert "no augment run in MLflow yet" in capsys.readouterr().err and not out.exists()
    assert main(["study", "--augment", "--generator", "zoo:mri"]) != 0
    err = capsys.readouterr().err
    assert "unconditional or has one class" in err and len(err.strip().splitlines()) == 1
    assert main(["study", "--augment", "--generator", "zoo:nope"]) != 0
    assert "zoo" in capsys.readouterr().err


def test_profiles_resolve_and_the_study_id_hashes_settings_not_seeds(project_home: Path, params: dict) -> None:
    from medsynth.project import load_project
    from medsynth.study.run import PROFILES, cell_name, get_profile, plan

    project = load_project(params)
    ids = {name: plan(get_profile(name), params, {}, project).study_id for name in PROFILES}
    assert len(set(ids.values())) == len(PROFILES) and all(ids[n].startswith(n + "-") for n in PROFILES)
    quick = get_profile("quick")
    assert [cell_name(*c) for c in quick.cells] == ["dcgan-pneumonia", "cgan-pneumonia", "dcgan-ct", "cgan-ct",
                                                  "dcgan-mri", "cgan-mri", "cgan-multi"]
    assert len(quick.seeds) >= 2
    # other seeds or a subset of cells: the same study (results accumulate); another setting: a new one
    assert plan(get_profile("quick", [5, 6], ["cgan-ct"]), params, {}, project).study_id == ids["quick"]
    assert plan(quick, params, {"train.lr_g": "0.0001"}, project).study_id != ids["quick"]
    # the user's overrides win over the profile's
    p = plan(quick, params, {"train.max_steps": "7"}, project)
    assert p.overrides["train.max_steps"] == "7" and p.root.parent == project.artifacts_path() / "study"
