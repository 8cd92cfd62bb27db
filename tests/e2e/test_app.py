"""The Streamlit app, driven by streamlit's AppTest against a real registry, generator and feedback db.

Flows: choose a model (champion by default), read its verdict, measurements and card, generate,
compare with real images, see the live check, export valid PNG/DICOM files, leave feedback; and the
failures a person can meet, each shown as a message, never a traceback: nothing registered yet,
registry unreachable, count or seed out of range (the seed shown is always the seed used).
"""

from __future__ import annotations

import io
import json
import socket
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from app_fixtures import (  # noqa: F401 - fixtures
    CT_CLASSES,
    MODEL_NAME,
    extractor_dir,
    generator_file,
    install_extractor,
    register_generator,
)

APP = Path(__file__).resolve().parents[2] / "app" / "streamlit_app.py"


def _app():
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    st.cache_resource.clear()
    st.cache_data.clear()
    return AppTest.from_file(str(APP), default_timeout=120)


def _texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def _no_traceback(at) -> None:
    assert not at.exception, [e.value for e in at.exception]


def test_no_model_registered_says_how_to_make_one(project_home):
    at = _app().run()
    _no_traceback(at)
    msg = _texts(at.warning)
    assert "No generator is registered yet" in msg and "make demo" in msg and "medsynth promote" in msg


def test_registry_unreachable_is_a_message(project_home, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    at = _app().run()
    _no_traceback(at)
    assert f"127.0.0.1:{port}" in _texts(at.error) and "cannot be reached" in _texts(at.error)


@pytest.fixture
def registered(project, generator_file, extractor_dir):  # noqa: F811
    """Two registered versions: v1 champion, v2 a challenger whose gate failed (worse FID)."""
    v1 = register_generator(project, generator_file)
    v2 = register_generator(project, generator_file, metrics={"fid_domain": 99.0, "fid_domain_floor": 10.0,
                                                              "fid_domain_16px": 99.0, "fid_domain_16px_floor": 10.0,
                                                              "privacy_near_copy_share": 0.0, "cond_accuracy": 0.9,
                                                              "gate_floors_passed": False})
    install_extractor(project, extractor_dir)
    return project, v1, v2


def _markdown(at) -> str:
    return _texts(at.markdown)


def test_generate_evaluate_export_and_feedback(registered):
    project, v1, v2 = registered
    at = _app().run()
    _no_traceback(at)
    # 1. champion chosen by default, its standing in words, a plain verdict with figures beside the real floor
    assert at.selectbox(key="model_name").value == MODEL_NAME
    version = at.selectbox(key=f"version_{MODEL_NAME}")
    assert version.value == v1
    assert "champion · chosen by the quality gate on" in _markdown(at) and "awaiting review" in _markdown(at)
    # the gate's grade in words: the fixture's numbers pass every floor and full-resolution detectability
    assert "Quality: near-real." in _texts(at.success)
    figures = {m.label: m.value for m in at.metric}
    assert figures["Distance to real (FID-domain)"] == "12.5" and figures["Detectability (C2ST AUC)"] == "0.55"
    assert "real floor 10 · 1.2× the floor" in _texts(at.caption) or "real floor 10 · 1.3× the floor" in _texts(
        at.caption)
    # every measurement grouped and explained, the warning sign highlighted; no raw snake_case table
    md = _markdown(at)
    for group in ("**Quality**", "**Diversity**", "**Privacy**", "**Utility**"):
        assert group in md
    assert "⚠️ Recall" in md and "less than half of real's 0.7" in md
    assert "All measurements (1 warning sign)" in [e.label for e in at.expander]
    assert not at.table  # the metrics are not a raw table any more
    # the model card is a document with fixed headings; no metrics table repeated; evaluation run named
    card = next(m.value for m in at.markdown if "##### Intended use" in m.value)
    for heading in ("##### Data", "##### Training", "##### Evaluation", "##### Promotion gate", "##### Review"):
        assert heading in card
    assert "| metric |" not in card and "evaluation run:" in card
    # 2. class by human name, count, seed -> Generate
    cls = at.selectbox(key=f"class_{MODEL_NAME}")
    assert cls.options == ["every class in turn", "abdomen CT", "chest CT", "head CT"]
    cls.set_value(2)
    at.number_input(key="count").set_value(6)
    at.text_input(key="seed").input("7")
    at = at.button(key="generate").click().run()
    _no_traceback(at)
    batch = at.session_state["batch"]
    assert batch["images"].shape == (6, 1, 64, 64) and batch["labels"].tolist() == [2] * 6
    assert "6 SYNTHETIC images from medsynth-ct-cgan v1 (seed 7) · head CT" in _texts(at.success)
    # 3. the live check: FID-domain with its spread and real floor, confidence; time includes the reference
    ev = batch["eval"]
    assert ev is not None and np.isfinite(ev.fid) and ev.real_floor_mean is not None
    assert ev.fid_boot_interval[0] <= ev.fid_boot_interval[1]
    assert set(ev.confidence_by_class) == {"HeadCT"} and ev.nn_index.shape == (6,)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["FID-domain (this batch)"] == f"{ev.fid:.2f}"
    total, ref_s = batch["eval_timing"]
    assert total >= ref_s > 0 and "real reference included" in _texts(at.caption) and "biased" in _texts(at.caption)
    # same seed, same images
    first = batch["images"].copy()
    at = at.button(key="generate").click().run()
    assert np.array_equal(at.session_state["batch"]["images"], first)
    # 4. export: PNG + DICOM + JSON, unmistakably synthetic; PNGs carry a visible band by default
    zf = zipfile.ZipFile(io.BytesIO(at.session_state["batch"]["zip"]))
    params = json.loads(zf.read("generation.json"))
    assert (params["model_name"], params["model_version"], params["seed"]) == (MODEL_NAME, v1, 7)
    assert params["labels"] == [2] * 6 and params["label_names"] == ["HeadCT"] * 6
    dcm = [n for n in zf.namelist() if n.endswith(".dcm")]
    assert len(dcm) == 6 and all("SYNTHETIC_" in n for n in zf.namelist() if n.endswith((".png", ".dcm")))
    ds = pydicom.dcmread(io.BytesIO(zf.read(dcm[0])))
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY"] and ds.BurnedInAnnotation == "YES"
    assert "SYNTHETIC" in ds.SeriesDescription and ds.PatientName.family_name == "SYNTHETIC"
    from PIL import Image

    png = sorted(n for n in zf.namelist() if n.endswith(".png"))[0]
    px = np.asarray(Image.open(io.BytesIO(zf.read(png))))
    assert px.shape == (256 + 20, 256)  # 64 px enlarged to 256 + the SYNTHETIC band
    assert np.array_equal(px[:256:4, ::4], export_u8(at.session_state["batch"]["images"])[0])
    # 5. feedback on one image, stored with nothing but what was typed
    at.selectbox(key="fb_target").set_value(3)
    at.radio(key="fb_rating").set_value("unrealistic")
    at.text_area(key="fb_comment").input("bowel looks smeared")
    at = at.button(key="fb_send").click().run()
    _no_traceback(at)
    assert "Thank you" in _texts(at.success)
    from medsynth.monitoring.feedback import FeedbackStore, default_url

    store = FeedbackStore(default_url(project.state_path()))
    rows = store.recent(MODEL_NAME)
    assert len(rows) == 1
    row = rows[0]
    assert (row["version"], row["rating"], row["comment"], row["image_ref"]) == (
        v1, "unrealistic", "bowel looks smeared", "seed=7;index=3")
    assert set(row) == {"id", "created_at", "model", "version", "image_ref", "rating", "comment"}
    store.close()
    # 6. technical details live in the About panel, in plain sight nowhere else
    texts = [m.value for m in at.markdown]
    about = [t for t in texts if "model registry (MLflow)" in t]
    assert len(about) == 1 and "sqlite:" in about[0]
    assert "generator precision: fp32" in about[0] or "generator precision: bf16" in about[0]
    assert not any("sqlite:" in t or "precision" in t for t in texts if "model registry (MLflow)" not in t)


def export_u8(images):
    from medsynth.imaging import uint8_frames

    return uint8_frames(images)


def test_compare_with_real_and_nearest_training_image(registered):
    project, v1, v2 = registered
    at = _app().run()
    at.toggle(key="compare_real").set_value(True)
    at.toggle(key="nearest").set_value(True)
    at.toggle(key="live_eval").set_value(False)
    at.selectbox(key=f"class_{MODEL_NAME}").set_value(0)
    at.number_input(key="count").set_value(4)
    at = at.button(key="generate").click().run()
    _no_traceback(at)
    captions = [c for img in at.image for c in img.captions]
    assert sum(c.startswith("SYNTHETIC #") and c.endswith("abdomen CT") for c in captions) == 4
    assert sum(c == "REAL · abdomen CT" for c in captions) == 4
    assert sum("| REAL training image, distance" in c for c in captions) == 4
    # with the live check off, only what was asked for: no batch verdict, no batch figures
    assert "This batch" not in _texts(at.success) + _texts(at.warning) + _texts(at.error)
    assert "FID-domain (this batch)" not in [m.label for m in at.metric]


@pytest.mark.parametrize("typed", ["9007199254740993", "12abc"])  # every other entry: test_app_logic.py
def test_every_out_of_range_seed_gets_the_range_and_nothing_stale_is_shown(registered, typed):
    at = _app().run()
    at.number_input(key="count").set_value(2)
    at.text_input(key="seed").input("5")
    at = at.button(key="generate").click().run()
    assert "(seed 5)" in _texts(at.success)
    at.text_input(key="seed").input(typed)
    at = at.button(key="generate").click().run()
    _no_traceback(at)
    assert "choose 0..2147483647" in _texts(at.error)
    assert "batch" not in at.session_state and "(seed 5)" not in _texts(at.success)


def test_other_version_interpolation_and_bad_count(registered):
    project, v1, v2 = registered
    at = _app().run()
    # the failed challenger can be inspected; its verdict and standing say so
    at = at.selectbox(key=f"version_{MODEL_NAME}").set_value(v2).run()
    _no_traceback(at)
    assert "not promoted · failed the quality gate" in _markdown(at)
    assert "Quality: refused." in _texts(at.error) and "too far from real images" in _texts(at.error).lower()
    # a count out of range is a message, and nothing is generated
    at.number_input(key="count").set_value(1000)
    at = at.button(key="generate").click().run()
    _no_traceback(at)
    assert "Count 1000 is out of range: choose 1..64" in _texts(at.error)
    assert "batch" not in at.session_state
    # interpolation between two seeds: end points are those seeds' images
    at.toggle(key="live_eval").set_value(False)
    at.checkbox(key="interpolate").check().run()
    at.text_input(key="seed").input("3")
    at.text_input(key="seed_b").input("11")
    at.number_input(key="steps").set_value(5)
    at.selectbox(key=f"class_{MODEL_NAME}").set_value(0)
    at = at.button(key="generate").click().run()
    _no_traceback(at)
    imgs = at.session_state["batch"]["images"]
    assert imgs.shape == (5, 1, 64, 64)
    from medsynth.training.loading import load_generator

    gen = load_generator(f"models:/{MODEL_NAME}/{v2}", project)
    np.testing.assert_allclose(imgs[0], gen.generate(1, 3, labels=[0])[0], atol=1e-5)
    np.testing.assert_allclose(imgs[-1], gen.generate(1, 11, labels=[0])[0], atol=1e-5)
    assert at.session_state["batch"]["record"].mode == "interpolate"
    assert "seed 3 → seed 11, morphed" in _texts(at.success)
