"""The Streamlit app, driven by streamlit's AppTest against a real registry, generator and feedback db.

Flows: choose a model (champion by default), generate, see live metrics, export valid PNG/DICOM
files, leave feedback; and the failures a person can meet, each shown as a message, never a
traceback: nothing registered yet, registry unreachable, count out of range.
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
    v2 = register_generator(project, generator_file, metrics={"fid_domain": 99.0, "privacy_near_copy_share": 0.0,
                                                              "cond_accuracy": 0.9})
    install_extractor(project, extractor_dir)
    return project, v1, v2


def test_generate_evaluate_export_and_feedback(registered):
    project, v1, v2 = registered
    at = _app().run()
    _no_traceback(at)
    # 1. champion chosen by default, its card, metrics and gate result shown
    assert at.selectbox(key="model_name").value == MODEL_NAME
    assert at.selectbox(key=f"version_{MODEL_NAME}").value == v1
    assert "Promotion gate: gate passed" in _texts(at.success)
    assert "fid_domain" in str(at.table[0].value)
    # 2. class by human name, count, seed -> Generate
    cls = at.selectbox(key=f"class_{MODEL_NAME}_CT")
    assert cls.options == ["every class in turn", "abdomen CT", "chest CT", "head CT"]
    cls.set_value(2)
    at.number_input(key="count").set_value(6)
    at.number_input(key="seed").set_value(7)
    at = at.button(key="generate").click().run()
    _no_traceback(at)
    batch = at.session_state["batch"]
    assert batch["images"].shape == (6, 1, 64, 64) and batch["labels"].tolist() == [2] * 6
    assert "6 SYNTHETIC images" in _texts(at.success)
    # 3. live metrics: FID-domain with its spread and real floor, confidence, nearest neighbours
    ev = batch["eval"]
    assert ev is not None and np.isfinite(ev.fid) and ev.real_floor_mean is not None
    assert ev.fid_boot_interval[0] <= ev.fid_boot_interval[1]
    assert set(ev.confidence_by_class) == {"HeadCT"} and ev.nn_index.shape == (6,)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["FID-domain (this batch)"] == f"{ev.fid:.2f}"
    assert "biased" in _texts(at.caption)
    # same seed, same images
    first = batch["images"].copy()
    at = at.button(key="generate").click().run()
    assert np.array_equal(at.session_state["batch"]["images"], first)
    # 4. export: PNG + DICOM + JSON, unmistakably synthetic
    zf = zipfile.ZipFile(io.BytesIO(at.session_state["batch"]["zip"]))
    params = json.loads(zf.read("generation.json"))
    assert (params["model_name"], params["model_version"], params["seed"]) == (MODEL_NAME, v1, 7)
    assert params["labels"] == [2] * 6 and params["label_names"] == ["HeadCT"] * 6
    dcm = [n for n in zf.namelist() if n.endswith(".dcm")]
    assert len(dcm) == 6 and all("SYNTHETIC_" in n for n in zf.namelist() if n.endswith((".png", ".dcm")))
    ds = pydicom.dcmread(io.BytesIO(zf.read(dcm[0])))
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY"] and ds.BurnedInAnnotation == "YES"
    assert "SYNTHETIC" in ds.SeriesDescription and ds.PatientName.family_name == "SYNTHETIC"
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


def test_other_version_interpolation_and_bad_count(registered):
    project, v1, v2 = registered
    at = _app().run()
    # the failed challenger can be inspected; its gate failure is shown
    at = at.selectbox(key=f"version_{MODEL_NAME}").set_value(v2).run()
    _no_traceback(at)
    assert "Promotion gate: gate failed" in _texts(at.error) and "fid" in _texts(at.error)
    # a count out of range is a message, and nothing is generated
    at.number_input(key="count").set_value(1000)
    at = at.button(key="generate").click().run()
    _no_traceback(at)
    assert "Count 1000 is out of range: choose 1..64" in _texts(at.error)
    assert "batch" not in at.session_state
    # interpolation between two seeds: end points are those seeds' images
    at.checkbox(key="live_eval").uncheck()
    at.checkbox(key="interpolate").check().run()
    at.number_input(key="seed").set_value(3)
    at.number_input(key="seed_b").set_value(11)
    at.number_input(key="steps").set_value(5)
    at.selectbox(key=f"class_{MODEL_NAME}_CT").set_value(0)
    at = at.button(key="generate").click().run()
    _no_traceback(at)
    imgs = at.session_state["batch"]["images"]
    assert imgs.shape == (5, 1, 64, 64)
    from medsynth.app.model_store import load_generator

    gen = load_generator(project, f"models:/{MODEL_NAME}/{v2}")
    np.testing.assert_allclose(imgs[0], gen.generate(1, 3, labels=[0])[0], atol=1e-5)
    np.testing.assert_allclose(imgs[-1], gen.generate(1, 11, labels=[0])[0], atol=1e-5)
    assert at.session_state["batch"]["record"].mode == "interpolate"
