"""Registry: register, gate, move champion only when earned, review, rollback, races, dead server."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import pytest

from medsynth.components.promote import CHALLENGER, CHAMPION, PromoteConfig, client, run
from medsynth.components.review import decide, list_versions, rollback
from medsynth.config import build
from medsynth.errors import ConfigError, InputError, RegistryError

# clears every absolute floor of the default gate (fid_domain <= 3 x floor 10, C2ST, coverage, ...)
GOOD = {"fid_domain_16px": 20.0, "fid_domain_16px_floor": 10.0, "c2st_auc_16px": 0.55, "prdc_coverage_16px": 0.8, "prdc_recall_16px": 0.8,
        "diversity_ms_ssim_generated": 0.22, "diversity_ms_ssim_real": 0.2, "privacy_near_copy_share": 0.0,
        "privacy_share_below_train_p5": 0.05, "cond_accuracy": 0.9, "cond_majority_share": 0.34,
        "utility_acc_real_plus_synth": 0.86, "utility_acc_real_dup": 0.85, "unstable": False}
EXTRACTOR = "e" * 64


def _log_model() -> tuple[str, str]:
    """Log a tiny pyfunc model (a real MLflow model) in a training-like run; return (uri, run id)."""
    import mlflow
    import mlflow.pyfunc

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    with mlflow.start_run(run_name="train", tags={"medsynth.data_hash": "abc",
                                                  "mlflow.source.git.commit": "deadbeef"}) as run:
        mlflow.log_params({"model": "cgan", "loss": "ns"})
        info = mlflow.pyfunc.log_model(name="generator", python_model=Echo(), pip_requirements=["mlflow"])
    return info.model_uri, run.info.run_id


def _candidate(project, tmp: Path, metrics: dict, tag: str, scored: str | None = None, data_hash: str = "abc",
               extractor: str = EXTRACTOR) -> tuple[Path, Path]:
    """A train folder and its evaluation; ``scored``/``data_hash``/``extractor`` fake a mismatched one."""
    from medsynth.tracking import setup_mlflow

    setup_mlflow(project)
    train, ev = tmp / f"train-{tag}", tmp / f"eval-{tag}"
    train.mkdir()
    ev.mkdir()
    uri, run_id = _log_model()
    (train / "train_summary.json").write_text(json.dumps({
        "model_uri": uri, "run_id": run_id, "classes": ["AbdomenCT", "ChestCT", "HeadCT"],
    }))
    protocol = {"data_hash": data_hash, "extractor_sha256": extractor}
    (ev / "metrics.json").write_text(json.dumps({**metrics, "model_uri": scored or uri, "protocol": protocol}))
    return train, ev


def test_promotion_gate_review_and_rollback(project, tmp_path):
    cfg = PromoteConfig(model_name="m")
    t1, e1 = _candidate(project, tmp_path, GOOD, "1")
    r1 = run(cfg, project, t1, e1, tmp_path / "p1", extractor=EXTRACTOR)
    assert r1.promoted and r1.champion_version == "1"
    assert client().get_model_version("m", "1").tags["eval.extractor_sha256"] == EXTRACTOR
    card = (tmp_path / "p1" / "model_card.md").read_text()
    assert "not for diagnosis" in card and "abc" in card and "deadbeef" in card

    # worse FID than champion x 1.1: stays challenger, champion untouched, reasons recorded
    t2, e2 = _candidate(project, tmp_path, {**GOOD, "fid_domain_16px": 30.0}, "2")
    r2 = run(cfg, project, t2, e2, tmp_path / "p2")
    assert not r2.promoted and "fid_vs_champion" in r2.reason and "floors" not in r2.reason
    c = client()
    assert str(c.get_model_version_by_alias("m", CHAMPION).version) == "1"
    assert str(c.get_model_version_by_alias("m", CHALLENGER).version) == "2"
    tags = c.get_model_version("m", "2").tags
    assert tags["gate.passed"] == "false" and "fid_vs_champion" in tags["gate.checks"]

    # a better model with approval required waits for the reviewer
    appr = build(PromoteConfig, {"model_name": "m", "require_approval": True}, "promote")
    # an unstable evaluation never passes, however good its numbers
    t4, e4 = _candidate(project, tmp_path, {**GOOD, "fid_domain_16px": 1.0, "unstable": True}, "u")
    r4 = run(cfg, project, t4, e4, tmp_path / "p4")
    assert not r4.promoted and "stable_metrics" in r4.reason
    t3, e3 = _candidate(project, tmp_path, {**GOOD, "fid_domain_16px": 15.0}, "3")
    r3 = run(appr, project, t3, e3, tmp_path / "p3")
    assert not r3.promoted and "approval" in r3.reason
    pending = [v.version for v in list_versions(project, "m", only_pending=True)]
    assert "4" in pending and "1" not in pending
    with pytest.raises(ConfigError, match="reason"):
        decide(project, appr, "m", "4", True, "  ")
    msg = decide(project, appr, "m", "4", True, "looked at samples", reviewer="dr-who")
    assert "now champion" in msg
    tags = c.get_model_version("m", "4").tags
    assert tags["review.by"] == "dr-who" and tags["champion.by"] == "dr-who"
    assert str(c.get_model_version_by_alias("m", CHAMPION).version) == "4"

    # rejecting a failed version, rolling back to v1, refusing rollback to an ungated one
    assert "rejected" in decide(project, appr, "m", "2", False, "blurry")
    assert "to v1" in rollback(project, cfg, "m", "1", "incident 42")
    assert str(c.get_model_version_by_alias("m", CHAMPION).version) == "1"
    with pytest.raises(ConfigError, match="gate did not pass"):
        rollback(project, cfg, "m", "2", "nope")


def _race(home: str, train: str, ev: str, out: str, q) -> None:
    import os

    os.environ["MEDSYNTH_HOME"] = home
    from medsynth.config import read_params
    from medsynth.project import load_project

    project = load_project(read_params(Path(__file__).resolve().parents[2] / "params.yaml"))
    res = run(PromoteConfig(model_name="race"), project, train, ev, out)
    q.put((res.version, res.promoted))


@pytest.mark.slow
def test_racing_promotions_leave_champion_on_a_version_that_beat_the_champion_it_saw(project, project_home, tmp_path):
    t0, e0 = _candidate(project, tmp_path, {**GOOD, "fid_domain_16px": 30.0}, "0")
    run(PromoteConfig(model_name="race"), project, t0, e0, tmp_path / "p0")
    ta, ea = _candidate(project, tmp_path, {**GOOD, "fid_domain_16px": 10.0}, "a")  # clearly best
    tb, eb = _candidate(project, tmp_path, {**GOOD, "fid_domain_16px": 20.0}, "b")  # beats v1, not A
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(project_home), str(t), str(e), str(tmp_path / f"o{i}"), q))
             for i, (t, e) in enumerate([(ta, ea), (tb, eb)])]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    results = dict(q.get(timeout=5) for _ in procs)
    c = client()
    champ = c.get_model_version_by_alias("race", CHAMPION)
    assert c.get_model_version(champ.name, champ.version).tags["metric.fid_domain_16px"] == "10.0"
    assert champ.tags["gate.passed"] == "true"
    assert sum(results.values()) >= 1


def test_unreachable_registry_is_one_clear_error(project, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with pytest.raises(RegistryError, match="cannot be reached"):
        list_versions(project, "m")


def test_first_champion_must_clear_the_absolute_floors(project, tmp_path):
    """No champion yet is no free pass: the demo's checkerboard champion of issue 12 is refused."""
    blobs = {**GOOD, "fid_domain_16px": 186.0, "fid_domain_16px_floor": 0.15, "c2st_auc_16px": 1.0, "prdc_coverage_16px": 0.06}
    t, e = _candidate(project, tmp_path, blobs, "blobs")
    res = run(PromoteConfig(model_name="first"), project, t, e, tmp_path / "p")
    assert not res.promoted and res.champion_version is None
    assert all(name in res.reason for name in ("fid_floor_ratio", "c2st", "coverage"))


def test_promote_reads_evaluates_record_and_refuses_one_under_another_policy(project, tmp_path):
    """The floors run once (evaluate); promote reads them back, with the grade, and a record made under
    another gate policy is refused, saying to re-evaluate."""
    from dataclasses import replace

    from medsynth.components.gate import floor_checks, floors_dict, gate_policy, grade

    pol = gate_policy()
    m = {**GOOD, "c2st_auc": 0.99}  # detectable at full resolution
    floors = floor_checks(pol, m, True)
    g, why = grade(pol, m, floors, True)
    record = {**m, "gate_floors": floors_dict(floors), "gate_policy_sha256": pol.sha256(), "gate_grade": g,
              "gate_grade_reason": why}
    t, e = _candidate(project, tmp_path, record, "rec")
    res = run(PromoteConfig(model_name="rec"), project, t, e, tmp_path / "p")
    assert res.promoted
    tags = client().get_model_version("rec", res.version).tags
    assert tags["eval.gate_policy_sha256"] == pol.sha256() and tags["gate.grade"] == "usable"
    assert "full resolution" in tags["gate.grade_reason"]
    assert "**Grade: usable for pipeline testing and pre-training.**" in (tmp_path / "p" / "model_card.md").read_text()
    old = replace(pol, max_c2st_auc=0.6)  # the record of an evaluation judged under other limits
    stale = {**record, "gate_policy_sha256": old.sha256()}
    t, e = _candidate(project, tmp_path, stale, "stale")
    res = run(PromoteConfig(model_name="rec"), project, t, e, tmp_path / "p2")
    assert not res.promoted and "gate_policy" in res.reason and "re-run medsynth evaluate" in res.reason
    rows = {v.version: v for v in list_versions(project, "rec")}
    assert rows[res.version].grade.startswith("refused: judged under another gate policy")


@pytest.mark.parametrize(("kw", "match"), [
    ({"scored": "runs:/0123456789abcdef/generator"}, "evaluation of another model"),
    ({"data_hash": "other-data"}, "evaluated on data hash other-data"),
    ({"extractor": "f" * 64}, "evaluated with feature extractor ffffffffffff"),
])
def test_promote_refuses_an_evaluation_of_another_model_data_or_extractor(project, tmp_path, capsys, kw, match):
    t, e = _candidate(project, tmp_path, GOOD, "x", **kw)
    with pytest.raises(InputError, match=match) as err:
        run(PromoteConfig(model_name="integrity"), project, t, e, tmp_path / "p", extractor=EXTRACTOR)
    assert "\n" not in str(err.value) and str(e / "metrics.json") in str(err.value)
    assert "medsynth evaluate --model-uri" in str(err.value)  # says what to run
    with pytest.raises(Exception, match="not found|RESOURCE_DOES_NOT_EXIST|does not exist"):
        client().get_registered_model("integrity")  # nothing was registered


def test_cli_promote_integrity_refusal_is_one_line_and_non_zero(project, project_home, tmp_path, capsys):
    from medsynth.cli import main

    t, e = _candidate(project, tmp_path, GOOD, "cli", scored="images:/somewhere/else.npz")
    capsys.readouterr()  # MLflow's warnings while logging the fixture model
    rc = main(["promote", "--params", str(Path(__file__).resolve().parents[2] / "params.yaml"),
               "--train", str(t), "--eval", str(e), "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "evaluation of another model (images:/somewhere/else.npz)" in err


def test_model_card_fits_the_registrys_description_column():
    """PostgreSQL stores at most 5,000 characters of a version description (SQLite does not check)."""
    from medsynth.components.promote import DESCRIPTION_MAX, registry_description

    assert registry_description("# card\nshort") == "# card\nshort"
    long = registry_description("# card\n" + "x" * 12_000)
    assert len(long) == DESCRIPTION_MAX and long.startswith("# card") and "full card is model_card.md" in long
