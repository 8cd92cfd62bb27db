"""The app's pure logic: bounded requests, class names people read, labels, the live FID."""

from __future__ import annotations

import numpy as np
import pytest

from medsynth.app import generate, live_eval
from medsynth.errors import InputError


@pytest.mark.parametrize(("name", "modality", "human"), [
    ("AbdomenCT", "CT", "abdomen CT"),
    ("CT/HeadCT", "", "head CT"),
    ("XR/PediatricPneumonia", "", "pediatric pneumonia X-ray"),
    ("pneumonia", "XR", "pneumonia X-ray"),
    ("BreastMRI", "MR", "breast MRI"),
    ("CXR", "XR", "chest X-ray"),
])
def test_human_class_names(name, modality, human):
    assert generate.human_class_name(name, modality) == human


def _req(**kw) -> generate.Request:
    base = {"count": 16, "seed": 0, "class_index": generate.MIX, "truncation": 1.0}
    return generate.Request(**{**base, **kw})


@pytest.mark.parametrize(("kw", "msg"), [
    ({"count": 0}, "Count 0 is out of range: choose 1..64"),
    ({"count": 65}, "Count 65 is out of range"),
    ({"seed": -1}, "Seed -1 is out of range"),
    ({"seed": 2**31}, "Seed 2147483648 is out of range"),
    ({"truncation": 0.05}, "Truncation 0.05 is out of range"),
    ({"class_index": 3}, "Class 3 is out of range"),
    ({"interpolate": True, "steps": 17}, "Interpolation steps 17 is out of range: choose 2..16"),
])
def test_requests_out_of_bounds_are_refused_with_the_valid_range(kw, msg):
    with pytest.raises(InputError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        generate.check_request(_req(**kw), 64, 2**31 - 1, 16, 0.1, num_classes=3)


def test_requests_in_bounds_pass():
    generate.check_request(_req(count=64, seed=2**31 - 1, truncation=0.1, class_index=2), 64, 2**31 - 1, 16, 0.1, 3)
    # interpolation ignores the count field; a count out of range does not block it
    generate.check_request(_req(count=0, interpolate=True, steps=16), 64, 2**31 - 1, 16, 0.1, 3)


def test_labels_one_class_every_class_or_none():
    assert generate.labels_for(5, generate.MIX, 3).tolist() == [0, 1, 2, 0, 1]
    assert generate.labels_for(3, 1, 3).tolist() == [1, 1, 1]
    assert generate.labels_for(3, generate.MIX, 0) is None


def test_frechet_matches_the_classic_sqrtm_formula():
    """The live FID (eigenvalues, fast enough to bootstrap) equals Heusel et al.'s sqrtm formula."""
    from scipy import linalg

    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 16))
    b = rng.normal(loc=0.3, scale=1.2, size=(64, 16))
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(sa @ sb).real
    d = a.mean(0) - b.mean(0)
    classic = d @ d + np.trace(sa) + np.trace(sb) - 2 * np.trace(covmean)
    assert live_eval.frechet(a, b) == pytest.approx(classic, rel=1e-6)
    assert live_eval.frechet(a, a) == pytest.approx(0.0, abs=1e-8)


def test_enlarge_keeps_pixels_crisp():
    img = np.arange(4, dtype=np.uint8).reshape(2, 2)
    big = generate.enlarge(img, 6)
    assert big.shape == (6, 6) and np.array_equal(big[::3, ::3], img)
    assert generate.side_by_side(img, img).shape == (2, 8)
