"""Identifiers through folder names (issue 14, item 2): every string that comes from a path or a
file's metadata -- class names, ids, source paths, quarantine reasons, report lines -- passes the
identifier rules of medsynth.deid, or is refused / hashed. Checked by grepping every byte the
steps write (datasets, reports, quarantine, the MLflow store and its artifacts)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medsynth.cli import main
from medsynth.deid import check_name, identifier_rule, scrub_path, scrub_text
from medsynth.errors import InputError

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data"
PATIENT_DIR, RECORD_DIR = "Doe_Jane_19700412", "MRN-88231-X"
SECRETS = [b"Doe_Jane", b"19700412", b"88231", b"MRN-"]


def leaks(root: Path, skip: Path) -> list[str]:
    """Files under ``root`` (outside ``skip``) holding any secret, with the secret."""
    found = []
    for f in sorted(p for p in root.rglob("*") if p.is_file() and skip not in p.parents):
        blob = f.read_bytes()
        found += [f"{f.relative_to(root)}: {s.decode()}" for s in SECRETS if s in blob]
    return found


def run_steps(home: Path, *ingest_args: str) -> None:
    """ingest --input (then validate, preprocess: tracked in MLflow) as a user runs them."""
    params = ["--params", str(REPO / "params.yaml")]
    assert main(["ingest", *params, "--input", str(home / "in"), *ingest_args]) == 0
    assert main(["validate", *params]) == 0
    assert main(["preprocess", *params]) == 0


@pytest.mark.parametrize(("text", "rule"), [
    (PATIENT_DIR, "a date"), (RECORD_DIR, "5 or more digits"), ("1.2.826.0.1.3680043.8.498", "DICOM UID"),
    ("Doe^Jane", "person name"), ("mrn_4412", "record-number label"), ("jane.doe@example.org", "e-mail"),
    ("AbdomenCT", None), ("XR/PediatricNormal", None), ("pneumoniamnist.npz", None), ("IM0001.dcm", None),
    ("covid19", None), ("CT_head_CQ500_693_UNCI.dcm", None),
])
def test_identifier_rules(text, rule):
    got = identifier_rule(text)
    assert (got is None) if rule is None else (got is not None and rule in got), got


def test_refusal_names_the_rule_not_the_identifier():
    with pytest.raises(InputError) as exc:
        check_name(PATIENT_DIR, "a class name", "pass --classes")
    assert "rule: a date" in str(exc.value) and "Doe" not in str(exc.value) and "1970" not in str(exc.value)
    assert scrub_path(f"{PATIENT_DIR}/{RECORD_DIR}/IM0001.dcm").endswith("/IM0001.dcm")
    assert not any(s.decode() in scrub_text(f"cannot open '/x/{PATIENT_DIR}/{RECORD_DIR}/a.png'") for s in SECRETS)


def test_dicom_tree_named_after_a_patient_leaves_no_trace(project_home: Path, capsys):
    """The reported tree: patient folder / record-number folder / *.dcm, plus a broken file."""
    d = project_home / "in" / PATIENT_DIR / RECORD_DIR
    d.mkdir(parents=True)
    shutil.copyfile(DATA / "dicom_samples" / "CT_small.dcm", d / "IM1.dcm")
    shutil.copyfile(DATA / "dicom_samples" / "CT_head_CQ500_693_UNCI.dcm", d / "IM2.dcm")
    (d / "broken.dcm").write_bytes((DATA / "dicom_samples" / "CT_small.dcm").read_bytes()[:300])
    run_steps(project_home, "--modality", "CT")
    out = capsys.readouterr()
    assert "1 quarantined" in out.out and "not used as class names" in out.err
    assert (project_home / "artifacts" / "preprocess").is_dir() and (project_home / ".medsynth").is_dir()
    assert leaks(project_home, project_home / "in") == []


def png_tree(root: Path, folders: list[str], bad: bool = False) -> None:
    with np.load(DATA / "pneumoniamnist.npz") as z:
        imgs = z["test_images"][:12]
    d = root.joinpath(*folders)
    d.mkdir(parents=True)
    for i, img in enumerate(imgs):
        Image.fromarray(img).save(d / f"img_{i:02d}.png")
    if bad:
        (d / f"{RECORD_DIR}.png").write_bytes(b"\x89PNG not really")


def test_class_folder_that_looks_like_an_identifier_is_refused(project_home: Path, capsys):
    png_tree(project_home / "in", [PATIENT_DIR])
    assert main(["ingest", "--params", str(REPO / "params.yaml"), "--input", str(project_home / "in"),
                 "--modality", "XR"]) == 2
    err = capsys.readouterr().err
    assert "rule: a date" in err and "--classes" in err and "Doe" not in err and "1970" not in err
    assert not (project_home / "artifacts").exists()


def test_declared_class_keeps_folder_names_out_of_every_artifact(project_home: Path, capsys):
    png_tree(project_home / "in", [PATIENT_DIR, RECORD_DIR], bad=True)
    run_steps(project_home, "--modality", "XR", "--classes", "xray")
    assert "1 quarantined" in capsys.readouterr().out
    records = (project_home / "artifacts" / "ingest" / "quarantine" / "records.jsonl").read_text()
    assert "cannot decode image" in records
    assert leaks(project_home, project_home / "in") == []


def test_undeclared_folder_class_is_withheld_in_the_reason(tmp_path: Path):
    """A batch ingested against fixed classes (the monitor): an unknown folder name never reaches a reason."""
    from medsynth.components.ingest import ingest_sources
    from medsynth.readers import Modality, SourceConfig

    png_tree(tmp_path / "in", ["normal"])
    png_tree(tmp_path / "in", [RECORD_DIR])
    src = SourceConfig(path=str(tmp_path / "in"), modality=Modality.XR)
    res = ingest_sources([src], tmp_path, tmp_path / "out", classes=["normal"], modalities=["XR"])
    assert res.n_images == 12 and res.n_quarantined == 12
    text = (tmp_path / "out" / "quarantine" / "records.jsonl").read_text()
    assert "name withheld: a number of 5 or more digits" in text
    assert leaks(tmp_path, tmp_path / "in") == []
