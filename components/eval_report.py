"""The evaluation report: markdown + PNG figures (sample grid, nearest neighbours, closest training
pairs, metric table). Every synthetic image shown carries a "SYNTHETIC" band; file names say so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

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
    ("FID-domain", "fid_domain", "fid_domain_floor", "lower"),
    ("C2ST AUC (0.5 = indistinguishable)", "c2st_auc", "c2st_auc_floor", "~0.5"),
    ("KID-domain (mean)", "kid_domain_mean", "kid_domain_floor_mean", "lower"),
    ("precision", "prdc_precision", "prdc_precision_floor", "higher"),
    ("recall", "prdc_recall", "prdc_recall_floor", "higher"),
    ("density", "prdc_density", "prdc_density_floor", "~1"),
    ("coverage", "prdc_coverage", "prdc_coverage_floor", "higher"),
    ("SSIM to nearest real test image", "nn_ssim_mean", "nn_ssim_mean_floor", "info"),
    ("PSNR to nearest real test image (dB)", "nn_psnr_mean", "nn_psnr_mean_floor", "info"),
    ("MS-SSIM between random pairs", "diversity_ms_ssim_generated", "diversity_ms_ssim_real", "~real"),
    ("SSIM between random pairs", "diversity_ssim_generated", "diversity_ssim_real", "~real"),
    ("standard FID (Inception, local weights)", "fid_standard", "fid_standard_floor", "lower"),
]


def table_lines(m: dict[str, Any]) -> list[str]:
    lines = ["| metric | generated | real floor / real | better |", "| --- | --- | --- | --- |"]
    for label, g, r, better in ROWS:
        if g in m:
            lines.append(f"| {label} | {_fmt(m[g])} | {_fmt(m.get(r, ''))} | {better} |")
    return lines


def render(m: dict[str, Any]) -> str:
    """The markdown report."""
    p = m["protocol"]
    out = ["# medsynth evaluation report", "",
           ("The scored images were supplied by the user (`medsynth evaluate --images`); treat them as "
            "**SYNTHETIC**: not for diagnosis." if p.get("source") == "images" else
            "All generated images in this report are **SYNTHETIC** and not for diagnosis."), ""]
    if m.get("real_reference"):
        out += ["> Reference run: the \"generator\" returned **real held-out images**, so these numbers show "
                "what real-vs-real looks like; they are not a model's scores.", ""]
    if m["unstable"]:
        out += ["> **UNSTABLE: too few samples for stable metrics** -- " + "; ".join(m["unstable_reasons"])
                + ". The numbers below are indicative only.", ""]
    if m.get("small_reference"):
        out += ["> **Small real reference set** -- " + "; ".join(m.get("small_reference_reasons", [])) + ".", ""]
    out += _floors(m)
    out += ["## Protocol", "",
            f"- Metric names: {p['metric_names']}.",
            f"- Backbone: `{p['backbone']}` (sha256 `{p['extractor_sha256'][:16]}...`, its own test accuracy "
            f"{_fmt(p['extractor_test_accuracy'])}), {p['feature_dim']}-d features.",
            f"- Resize policy: {p['resize_policy']}.",
            f"- Images: {p['images']['generated']} generated vs {p['reference_set']}; floor: {p['floor']}.",
            f"- Dataset: {p['dataset_resolution']} px, classes {', '.join(p['classes'])}, data hash `{p['data_hash'][:12]}`.",
            f"- KID: {p['kid']}. NN distance: {p['nn_distance']}. Diversity: {p['diversity']}.", "",
            f"- Scored: {p.get('source', 'generator')} `{p.get('model_uri', '')}`"
            + (f" (sha256 `{p['source_sha256'][:12]}`)" if p.get("source_sha256") else "") + ".",
            f"- Bootstrap: {p.get('bootstrap', 'off')}.", *_c2st_protocol(p), "",
            "## Quality and diversity", "", *table_lines(m), *_intervals(m), ""]
    if m.get("conditional"):
        out += ["## Conditional generation", "", f"Judge: {m.get('cond_judge')}.", ""]
        cls = [k for k in m if k.startswith("cond_accuracy_")]
        if "cond_accuracy" in m:
            out += [f"- accuracy on the requested label: **{_fmt(m['cond_accuracy'])}** "
                    f"(in-domain share {_fmt(m.get('cond_in_domain_share'))})"]
        out += [f"- majority-class share (what a judge ignoring the image scores): {_fmt(m.get('cond_majority_share'))}"]
        out += [f"- {c}: accuracy {_fmt(m[k])}, FID-domain {_fmt(m.get('fid_domain_class_' + c))} (floor "
                f"{_fmt(m.get('fid_domain_floor_class_' + c))}), coverage {_fmt(m.get('prdc_coverage_class_' + c))}, "
                f"C2ST AUC {_fmt(m.get('c2st_auc_class_' + c))}"
                for k in cls for c in [k.removeprefix('cond_accuracy_')]]
        if m["per_class_unstable"]:
            out += [f"- unstable per-class FID (too few samples): {'; '.join(m['per_class_unstable'])}"]
        out += [""]
    out += ["## Privacy (memorisation)", "",
            f"- near-copies: **{m['privacy_n_near_copies']} of {m['n_generated']}** "
            f"(share {_fmt(m['privacy_near_copy_share'])}); threshold RMS < {_fmt(m['privacy_near_copy_threshold'])} "
            f"= {p['config']['near_copy_ratio']} x median training-to-training NN distance",
            f"- median NN distance to training: synthetic {_fmt(m['privacy_synth_nn_median'])} vs training's own "
            f"{_fmt(m['privacy_train_nn_median'])} (ratio {_fmt(m['privacy_nn_median_ratio'])}; < 1 means closer "
            "to training images than they are to each other)",
            f"- share below the training set's 5th percentile: {_fmt(m['privacy_share_below_train_p5'])} "
            "(about 0.05 when nothing is copied)",
            "- closest pairs for review: `closest_training_pairs.png`", ""]
    if "utility_acc_real" in m:
        ref = m.get("utility_reference")
        out += ["## Utility (classifier tested on the real test split)", "",
                "| training data | ACC | AUC | images |", "| --- | --- | --- | --- |"]
        for key, label in (("real", "(a) real"), ("real_plus_synth", "(b) real + synthetic"),
                           ("synth_only", "(c) synthetic only"), ("real_dup", "(d) real duplicated (control)")):
            out.append(f"| {label} | {_fmt(m[f'utility_acc_{key}'])} | {_fmt(m[f'utility_auc_{key}'])} | "
                       f"{m[f'utility_n_train_{key}']} |")
        if ref:
            out.append(f"| MedMNIST v2 {ref['model']} on {ref['dataset']} (published) | {ref['acc']} | {ref['auc']} | full set |")
        out += ["", "The utility classifier is a small CNN trained for a few epochs on a subset"
                + (", so its absolute numbers sit below the published ResNet-18 reference" if ref else
                   "; no published MedMNIST v2 reference exists for this class set")
                + ". The comparison that matters is (b) against the control (d)."
                + (" The generator is unconditional: its images were labelled by classifier (a) (pseudo-labels)."
                   if m.get("utility_pseudo_labels") else ""), ""]
    for note in m.get("notes", []):
        out.append(f"- note: {note}")
    out += ["", "## Figures", "", "![synthetic samples](synthetic_samples.png)", "",
            "![nearest real neighbours](nearest_neighbours.png)", "",
            "![closest training pairs](closest_training_pairs.png)", "", "![metrics](metrics_table.png)", ""]
    return "\n".join(out)


def _floors(m: dict[str, Any]) -> list[str]:
    """The gate's absolute floors in plain words, first thing in the report."""
    floors = m.get("gate_floors")
    if not floors:
        return []
    verdict = ("**PASSES the gate's absolute floors**" if m.get("gate_floors_passed")
               else "**FAILS the gate's absolute floors**: " + ", ".join(k for k, v in floors.items() if not v["passed"]))
    out = ["## Verdict", "", f"This set {verdict} (promote.gate in params.yaml; a candidate must pass them all to "
           "become champion, the first champion too).", "", "| floor | value | limit | passed | detail |",
           "| --- | --- | --- | --- | --- |"]
    out += [f"| {k} | {_fmt(v['value'])} | {_fmt(v['limit'])} | {'yes' if v['passed'] else '**no**'} | {v['detail']} |"
            for k, v in floors.items()]
    return out + [""]


def _intervals(m: dict[str, Any]) -> list[str]:
    rows = [(label, k) for label, k in (("FID-domain", "fid_domain"), ("FID-domain floor", "fid_domain_floor"),
                                        ("FID-domain / floor", "fid_domain_ratio_to_floor")) if f"{k}_lo" in m]
    rows_c = [("C2ST AUC", "c2st_auc"), ("C2ST AUC, real-vs-real control", "c2st_auc_floor")]
    out = [f"- {label}: {_fmt(m[k])} (bootstrap 90% interval {_fmt(m[k + '_lo'])}-{_fmt(m[k + '_hi'])})"
           for label, k in rows]
    out += [f"- {label}: {_fmt(m[k])} (95% interval {_fmt(m[k + '_lo'])}-{_fmt(m[k + '_hi'])})"
            for label, k in rows_c if f"{k}_lo" in m]
    return [""] + out if out else []


def _c2st_protocol(p: dict[str, Any]) -> list[str]:
    c = p.get("c2st") or {}
    if not c.get("test"):
        return ["- C2ST: off (evaluate.c2st)."]
    return [f"- C2ST: {c['test']}; real side: {c.get('real')}; control: {c.get('control')}; CNN width {c.get('width')}, "
            f"{c.get('epochs')} epochs, at most {c.get('max_images')} images per set, resized to {c.get('resolution')} px."]


def _table_png(m: dict[str, Any], path: Path) -> None:
    lines = [f"{'metric':42s} {'generated':>11s} {'floor/real':>11s}"]
    for label, g, r, _ in ROWS:
        if g in m:
            lines.append(f"{label[:42]:42s} {_fmt(m[g]):>11s} {_fmt(m.get(r, '')):>11s}")
    for k in ("privacy_near_copy_share", "cond_accuracy", "utility_acc_real", "utility_acc_real_plus_synth",
              "utility_acc_synth_only", "utility_acc_real_dup"):
        if k in m:
            lines.append(f"{k[:42]:42s} {_fmt(m[k]):>11s}")
    lines.append(f"backbone {m['protocol']['backbone']}; n={m['n_generated']}" + ("; UNSTABLE" if m["unstable"] else ""))
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
