"""The evaluation report: markdown + PNG figures (sample grid, nearest neighbours, closest training
pairs, metric table). Every synthetic image shown carries a "SYNTHETIC" band; file names say so.

It reads metrics.json's keys through medsynth/metric_keys.py; a new metric's row goes in ``ROWS``
(a score beside its real floor) or in ``render``'s section for its stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from medsynth import metric_keys as K
from medsynth.imaging import make_grid

BAND = 12  # px of the label band above each panel


def _mosaic(images: np.ndarray, cols: int) -> np.ndarray:
    """[N,1,R,R] in [-1,1] -> one uint8 mosaic on white (scaled 2x below 64 px so it stays visible)."""
    return make_grid(images, cols, pad=2, fill=255, scale=2 if images.shape[-1] < 64 else 1)


def _save(panel: np.ndarray, title: str, path: Path, synthetic: bool) -> None:
    img = Image.fromarray(panel).convert("RGB")
    canvas = Image.new("RGB", (max(img.width, 360), img.height + BAND + 4), "white")
    canvas.paste(img, (0, BAND + 4))
    d = ImageDraw.Draw(canvas)
    if synthetic:
        d.rectangle([0, 0, canvas.width, BAND + 2], fill=(200, 30, 30))
    d.text((3, 1), title, fill="white" if synthetic else "black")
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("medsynth:synthetic", "true" if synthetic else "contains synthetic images")
    info.add_text("Description", title)
    canvas.save(path, pnginfo=info)


def _pairs(a: np.ndarray, b: np.ndarray, per_row: int = 8) -> np.ndarray:
    """Pairs side by side: columns alternate a[i] (synthetic), b[i] (real)."""
    both = np.empty((2 * len(a), *a.shape[1:]), np.float32)
    both[0::2], both[1::2] = a, b
    return _mosaic(both, 2 * min(per_row, max(len(a), 1)))


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


ROWS = [  # (label, generated key, floor/real key, direction)
    ("FID-domain", K.FID_DOMAIN, K.FID_DOMAIN_FLOOR, "lower"),
    ("C2ST AUC at full resolution (0.5 = indistinguishable)", K.C2ST_AUC, K.C2ST_AUC_FLOOR, "~0.5"),
    ("C2ST AUC at 32 px", K.C2ST_AUC_32PX, K.floor(K.C2ST_AUC_32PX), "~0.5"),
    ("C2ST AUC at 16 px (the gate's scale)", K.C2ST_AUC_16PX, K.floor(K.C2ST_AUC_16PX), "~0.5"),
    ("FID-domain, coarse view (16 px)", K.FID_DOMAIN_16PX, K.floor(K.FID_DOMAIN_16PX), "lower"),
    ("recall, coarse view (16 px)", K.PRDC_RECALL_16PX, K.floor(K.PRDC_RECALL_16PX), "higher"),
    ("coverage, coarse view (16 px)", K.PRDC_COVERAGE_16PX, K.floor(K.PRDC_COVERAGE_16PX), "higher"),
    ("synthetic-only / real-trained classifier ACC (CAS)", K.UTILITY_CAS_RATIO, "", "~1"),
    ("KID-domain (mean)", K.KID_DOMAIN_MEAN, K.KID_DOMAIN_FLOOR_MEAN, "lower"),
    ("precision", K.PRDC_PRECISION, K.PRDC_PRECISION_FLOOR, "higher"),
    ("recall", K.PRDC_RECALL, K.PRDC_RECALL_FLOOR, "higher"),
    ("density", K.PRDC_DENSITY, K.PRDC_DENSITY_FLOOR, "~1"),
    ("coverage", K.PRDC_COVERAGE, K.PRDC_COVERAGE_FLOOR, "higher"),
    ("SSIM to nearest real test image", K.NN_SSIM_MEAN, K.NN_SSIM_MEAN_FLOOR, "info"),
    ("PSNR to nearest real test image (dB)", K.NN_PSNR_MEAN, K.NN_PSNR_MEAN_FLOOR, "info"),
    ("MS-SSIM between random pairs", K.DIVERSITY_MS_SSIM_GENERATED, K.DIVERSITY_MS_SSIM_REAL, "~real"),
    ("SSIM between random pairs", K.DIVERSITY_SSIM_GENERATED, K.DIVERSITY_SSIM_REAL, "~real"),
    ("standard FID (Inception, local weights)", K.FID_STANDARD, K.FID_STANDARD_FLOOR, "lower"),
]


def table_lines(m: dict[str, Any]) -> list[str]:
    lines = ["| metric | generated | real floor / real | better |", "| --- | --- | --- | --- |"]
    for label, g, r, better in ROWS:
        if g in m:
            lines.append(f"| {label} | {_fmt(m[g])} | {_fmt(m.get(r, ''))} | {better} |")
    return lines


def render(m: dict[str, Any]) -> str:
    """The markdown report."""
    p = m[K.PROTOCOL]
    out = ["# medsynth evaluation report", "",
           ("The scored images were supplied by the user (`medsynth evaluate --images`); treat them as "
            "**SYNTHETIC**: not for diagnosis." if p.get(K.SOURCE) == "images" else
            "All generated images in this report are **SYNTHETIC** and not for diagnosis."), ""]
    if m.get(K.REAL_REFERENCE):
        out += ["> Reference run: the \"generator\" returned **real held-out images**, so these numbers show "
                "what real-vs-real looks like; they are not a model's scores.", ""]
    if m[K.UNSTABLE]:
        out += ["> **UNSTABLE: too few samples for stable metrics** -- " + "; ".join(m[K.UNSTABLE_REASONS])
                + ". The numbers below are indicative only.", ""]
    if m.get(K.SMALL_REFERENCE):
        out += ["> **Small real reference set** -- " + "; ".join(m.get(K.SMALL_REFERENCE_REASONS, [])) + ".", ""]
    out += _floors(m)
    out += ["## Protocol", "",
            f"- Metric names: {p['metric_names']}.",
            f"- Backbone: `{p[K.BACKBONE]}` (sha256 `{p[K.EXTRACTOR_SHA256][:16]}...`, its own test accuracy "
            f"{_fmt(p['extractor_test_accuracy'])}), {p['feature_dim']}-d features.",
            f"- Resize policy: {p['resize_policy']}.",
            f"- Images: {p['images']['generated']} generated vs {p['reference_set']}; floor: {p['floor']}.",
            f"- Dataset: {p['dataset_resolution']} px, classes {', '.join(p['classes'])}, data hash `{p[K.DATA_HASH][:12]}`.",
            f"- KID: {p['kid']}. NN distance: {p['nn_distance']}. Diversity: {p['diversity']}.", "",
            f"- Scored: {p.get(K.SOURCE, 'generator')} `{p.get(K.MODEL_URI, '')}`"
            + (f" (sha256 `{p[K.SOURCE_SHA256][:12]}`)" if p.get(K.SOURCE_SHA256) else "") + ".",
            f"- Bootstrap: {p.get('bootstrap', 'off')}.", *_c2st_protocol(p), "",
            "## Quality and diversity", "", *table_lines(m), *_intervals(m), ""]
    if m.get(K.CONDITIONAL):
        out += _conditional(m)
    out += ["## Privacy (memorisation)", "",
            f"- near-copies: **{m[K.PRIVACY_N_NEAR_COPIES]} of {m[K.N_GENERATED]}** "
            f"(share {_fmt(m[K.PRIVACY_NEAR_COPY_SHARE])}); threshold RMS < {_fmt(m[K.PRIVACY_NEAR_COPY_THRESHOLD])} "
            f"= {p['config']['near_copy_ratio']} x median training-to-training NN distance",
            f"- median NN distance to training: synthetic {_fmt(m[K.PRIVACY_SYNTH_NN_MEDIAN])} vs training's own "
            f"{_fmt(m[K.PRIVACY_TRAIN_NN_MEDIAN])} (ratio {_fmt(m[K.PRIVACY_NN_MEDIAN_RATIO])}; < 1 means closer "
            "to training images than they are to each other)",
            f"- share below the training set's 5th percentile: {_fmt(m[K.PRIVACY_SHARE_BELOW_TRAIN_P5])} "
            "(about 0.05 when nothing is copied)",
            "- closest pairs for review: `closest_training_pairs.png`", ""]
    if K.UTILITY_ACC_REAL in m:
        ref = m.get(K.UTILITY_REFERENCE)
        out += ["## Utility (classifier tested on the real test split)", "",
                "| training data | ACC | AUC | images |", "| --- | --- | --- | --- |"]
        labels = ("(a) real", "(b) real + synthetic", "(c) synthetic only", "(d) real duplicated (control)")
        for key, label in zip(K.UTILITY_TRAINING_SETS, labels, strict=True):
            out.append(f"| {label} | {_fmt(m[K.utility('acc', key)])} | {_fmt(m[K.utility('auc', key)])} | "
                       f"{m[K.utility('n_train', key)]} |")
        if ref:
            out.append(f"| MedMNIST v2 {ref['model']} on {ref['dataset']} (published) | {ref['acc']} | {ref['auc']} | full set |")
        out += ["", "The utility classifier is a small CNN trained for a few epochs on a subset"
                + (", so its absolute numbers sit below the published ResNet-18 reference" if ref else
                   "; no published MedMNIST v2 reference exists for this class set")
                + ". The comparison that matters is (b) against the control (d)."
                + (" The generator is unconditional: its images were labelled by classifier (a) (pseudo-labels)."
                   if m.get(K.UTILITY_PSEUDO_LABELS) else ""), ""]
    for note in m.get(K.NOTES, []):
        out.append(f"- note: {note}")
    out += ["", "## Figures", "", "![synthetic samples](synthetic_samples.png)", "",
            "![nearest real neighbours](nearest_neighbours.png)", "",
            "![closest training pairs](closest_training_pairs.png)", "", "![metrics](metrics_table.png)", ""]
    return "\n".join(out)


def _conditional(m: dict[str, Any]) -> list[str]:
    """The judge's accuracy and each class's scores."""
    out = ["## Conditional generation", "", f"Judge: {m.get(K.COND_JUDGE)}.", ""]
    prefix = K.label_prefix(K.COND_ACCURACY)
    cls = [k for k in m if k.startswith(prefix)]
    if K.COND_ACCURACY in m:
        out += [f"- accuracy on the requested label: **{_fmt(m[K.COND_ACCURACY])}** "
                f"(in-domain share {_fmt(m.get(K.COND_IN_DOMAIN_SHARE))})"]
    out += [f"- majority-class share (what a judge ignoring the image scores): {_fmt(m.get(K.COND_MAJORITY_SHARE))}"]
    out += [f"- {c}: accuracy {_fmt(m[k])}, FID-domain {_fmt(m.get(K.per_class(K.FID_DOMAIN, c)))} (floor "
            f"{_fmt(m.get(K.per_class(K.FID_DOMAIN_FLOOR, c)))}), coverage "
            f"{_fmt(m.get(K.per_class(K.PRDC_COVERAGE, c)))}, C2ST AUC {_fmt(m.get(K.per_class(K.C2ST_AUC, c)))}"
            f" (16 px: {_fmt(m.get(K.per_class(K.C2ST_AUC_16PX, c)))}), recall at 16 px "
            f"{_fmt(m.get(K.per_class(K.PRDC_RECALL_16PX, c)))}"
            for k in cls for c in [k.removeprefix(prefix)]]
    if m[K.PER_CLASS_UNSTABLE]:
        out += [f"- unstable per-class FID (too few samples): {'; '.join(m[K.PER_CLASS_UNSTABLE])}"]
    return out + [""]


def _floors(m: dict[str, Any]) -> list[str]:
    """The gate's absolute floors in plain words, first thing in the report."""
    floors = m.get(K.GATE_FLOORS)
    if not floors:
        return []
    verdict = ("**PASSES the gate's absolute floors**" if m.get(K.GATE_FLOORS_PASSED)
               else "**FAILS the gate's absolute floors**: " + ", ".join(k for k, v in floors.items() if not v["passed"]))
    grade = m.get(K.GATE_GRADE_REASON)
    out = ["## Verdict", "", *([f"**Grade: {grade}**", ""] if grade else []),
           f"This set {verdict} (promote.gate in params.yaml, policy `{str(m.get(K.GATE_POLICY_SHA256, ''))[:12]}`; a "
           "candidate must pass them all to become champion, the first champion too).", "",
           "| floor | value | limit | passed | detail |",
           "| --- | --- | --- | --- | --- |"]
    out += [f"| {k} | {_fmt(v['value'])} | {_fmt(v['limit'])} | {'yes' if v['passed'] else '**no**'} | {v['detail']} |"
            for k, v in floors.items()]
    return out + [""]


def _intervals(m: dict[str, Any]) -> list[str]:
    rows = [(label, k) for label, k in (("FID-domain", K.FID_DOMAIN), ("FID-domain floor", K.FID_DOMAIN_FLOOR),
                                        ("FID-domain / floor", K.FID_DOMAIN_RATIO_TO_FLOOR)) if K.lo(k) in m]
    rows_c = [(f"C2ST AUC{at}{ctl}", K.floor(key) if ctl else key)
              for at, key in (("", K.C2ST_AUC), (" at 32 px", K.C2ST_AUC_32PX), (" at 16 px", K.C2ST_AUC_16PX))
              for ctl in ("", ", real-vs-real control")]
    out = [f"- {label}: {_fmt(m[k])} (bootstrap 90% interval {_fmt(m[K.lo(k)])}-{_fmt(m[K.hi(k)])})"
           for label, k in rows]
    out += [f"- {label}: {_fmt(m[k])} (95% interval {_fmt(m[K.lo(k)])}-{_fmt(m[K.hi(k)])})"
            for label, k in rows_c if K.lo(k) in m]
    return [""] + out if out else []


def _c2st_protocol(p: dict[str, Any]) -> list[str]:
    c = p.get("c2st") or {}
    if not c.get("test"):
        return ["- C2ST: off (evaluate.c2st)."]
    return [f"- C2ST: {c['test']}; real side: {c.get('real')}; control: {c.get('control')}; CNN width {c.get('width')}, "
            f"{c.get('epochs')} epochs, at most {c.get('max_images')} images per set, resized to {c.get('resolution')} px"
            + (f"; also at {', '.join(c['coarse_scales'])} (both sets brought down with antialiasing, "
               f"{next(iter(c['coarse_scales'].values())).get('epochs')} epochs)" if c.get("coarse_scales") else "")
            + "."]


def _table_png(m: dict[str, Any], path: Path) -> None:
    lines = [f"{'metric':42s} {'generated':>11s} {'floor/real':>11s}"]
    for label, g, r, _ in ROWS:
        if g in m:
            lines.append(f"{label[:42]:42s} {_fmt(m[g]):>11s} {_fmt(m.get(r, '')):>11s}")
    for k in (K.PRIVACY_NEAR_COPY_SHARE, K.COND_ACCURACY, K.UTILITY_ACC_REAL, K.UTILITY_ACC_REAL_PLUS_SYNTH,
              K.UTILITY_ACC_SYNTH_ONLY, K.UTILITY_ACC_REAL_DUP):
        if k in m:
            lines.append(f"{k[:42]:42s} {_fmt(m[k]):>11s}")
    lines.append(f"backbone {m[K.PROTOCOL][K.BACKBONE]}; n={m[K.N_GENERATED]}" + ("; UNSTABLE" if m[K.UNSTABLE] else ""))
    img = Image.new("RGB", (8 * max(len(s) for s in lines) + 10, 14 * len(lines) + 10), "white")
    d = ImageDraw.Draw(img)
    for i, s in enumerate(lines):
        d.text((5, 5 + 14 * i), s, fill="black")
    img.save(path)


def write(out: Path, m: dict[str, Any], details: dict[str, Any]) -> None:
    """Write report.md and the figures into ``out``."""
    x_g, x_te, x_tr = details["x_g"], details["x_te"], details["x_tr"]
    label = details.get("label", "SYNTHETIC")
    synthetic = details.get("synthetic", label == "SYNTHETIC")
    n = min(details["grid"], len(x_g))
    _save(_mosaic(x_g[:n], 8), f"{label} samples ({n})", out / "synthetic_samples.png", synthetic)
    k = min(16, len(x_g))
    _save(_pairs(x_g[:k], x_te[details["nn_index"][:k]]), f"{label} | nearest real test image",
          out / "nearest_neighbours.png", False)
    priv = details["privacy"]
    c = priv.closest(min(details["closest"], len(x_g)))
    _save(_pairs(x_g[c], x_tr[priv.synth_nn_index[c]]),
          f"closest {label} | TRAINING pairs (privacy review)", out / "closest_training_pairs.png", False)
    _table_png(m, out / "metrics_table.png")
    (out / "report.md").write_text(render(m))
