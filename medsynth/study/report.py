"""docs/RESULTS.md from the MLflow runs of one study (medsynth/study/run.py); nothing typed by hand.

For every cell (model, dataset) the train and evaluate runs of all seeds are read back from MLflow:
metrics, params, the probe's metric histories (quality against training time) and the evaluation
figures (sample grid, nearest-neighbour pairs). Tables show mean ± sd over seeds; the discussion
is computed from the same numbers by fixed rules, so it says what the runs say.
"""

from __future__ import annotations

import datetime as _dt
import math
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medsynth import metric_keys as K
from medsynth.errors import InputError

NA_UNCOND = "n/a (unconditional)"
NA_ONE_CLASS = "n/a (1 class)"
DATASET_LABEL = {"pneumonia": "PneumoniaMNIST chest X-ray (pediatric, 2 classes)",
                 "ct": "MedNIST CT (abdomen / chest / head)", "mri": "MedNIST breast MRI",
                 "cxr": "MedNIST adult chest X-ray", "multi": "all of the above, 7 classes (X-ray, CT, MRI)"}
PER_IMAGE_SPLIT = {"ct", "mri", "cxr"}  # MedNIST subsets: no patient id, split per image


@dataclass
class CellRuns:
    """Every seed's train and evaluate run of one cell."""

    model: str
    dataset: str
    train: dict[int, Any] = field(default_factory=dict)  # seed -> mlflow Run
    evaluate: dict[int, Any] = field(default_factory=dict)
    curves: dict[int, list[tuple[float, float]]] = field(default_factory=dict)  # seed -> [(train s, FID)]

    @property
    def name(self) -> str:
        return f"{self.model}-{self.dataset}"

    @property
    def seeds(self) -> list[int]:
        return sorted(set(self.train) & set(self.evaluate))

    def values(self, key: str, step: str = "evaluate") -> list[float]:
        runs = self.evaluate if step == "evaluate" else self.train
        out = []
        for s in self.seeds:
            v = runs[s].data.metrics.get(key)
            if v is not None and math.isfinite(v):
                out.append(float(v))
        return out

    def param(self, key: str) -> str | None:
        for s in self.seeds:
            v = self.train[s].data.params.get(key)
            if v is not None:
                return v
        return None

    @property
    def reference(self) -> str:
        """The published MedMNIST v2 classifier result for this cell's class set ('' when none)."""
        from medsynth.components.evaluate import medmnist_reference

        ref = medmnist_reference((self.param("data.classes") or "").split(","))
        return f"{ref['model']}: ACC {ref['acc']:.3f}, AUC {ref['auc']:.3f}" if ref else ""

    @property
    def conditional(self) -> bool:
        return int(self.param("model.num_classes") or 0) > 0


def collect(project: Any, study_id: str, experiment: str, with_curves: bool = True) -> list[CellRuns]:
    """The FINISHED train/evaluate runs of ``study_id``, grouped by cell (in study order)."""
    from mlflow.tracking import MlflowClient

    from medsynth.study.run import finished_runs
    from medsynth.tracking import tracking_uri

    runs = finished_runs(project, experiment, study_id)
    client = MlflowClient(tracking_uri(project))
    cells: dict[str, CellRuns] = {}
    for r in runs:
        t = r.data.tags
        step = t.get("medsynth.step")
        if step not in ("train", "evaluate") or "medsynth.study.cell" not in t:
            continue
        c = cells.setdefault(t["medsynth.study.cell"], CellRuns(t["medsynth.study.model"], t["medsynth.study.dataset"]))
        getattr(c, step)[int(t["medsynth.study.seed"])] = r  # newest finished run wins
    out = [c for c in cells.values() if c.seeds]
    if not out:
        raise InputError(f"study {study_id}: no finished train+evaluate runs in MLflow experiment {experiment!r}; "
                         "run `medsynth study` first")
    if with_curves:
        for c in out:
            for s in c.seeds:
                rid = c.train[s].info.run_id
                fid = {m.step: m.value for m in client.get_metric_history(rid, "curve_fid_domain")}
                sec = {m.step: m.value for m in client.get_metric_history(rid, "curve_train_seconds")}
                c.curves[s] = sorted((sec[k], fid[k]) for k in fid if k in sec)
    return out


# -- formatting --------------------------------------------------------------------------------
def stats(v: list[float]) -> tuple[float, float, int]:
    a = np.asarray(v, np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0, len(a)


def fmt(v: list[float], digits: int = 3, scale: float = 1.0, pct: bool = False) -> str:
    """mean ± sd (sd only with 2+ seeds); '' when nothing was measured."""
    if not v:
        return ""
    mean, sd, n = stats([x * scale for x in v])
    f = (lambda x: f"{100 * x:.{max(digits - 2, 1)}f}%") if pct else (lambda x: f"{x:.{digits}g}")
    return f"{f(mean)} ± {f(sd)}" if n > 1 else f(mean)


def _metric(key: str, digits: int = 3, scale: float = 1.0, pct: bool = False, step: str = "evaluate",
            na: Callable[[CellRuns], str | None] | None = None) -> Callable[[CellRuns], str]:
    def get(c: CellRuns) -> str:
        reason = na(c) if na else None
        return reason if reason else fmt(c.values(key, step), digits, scale, pct)
    return get


def _na_cond(c: CellRuns) -> str | None:
    return None if c.conditional else NA_UNCOND


def _na_utility(c: CellRuns) -> str | None:
    if c.values(K.UTILITY_ACC_REAL):
        return None
    classes = (c.param("data.classes") or "").split(",")
    return NA_ONE_CLASS if len(classes) < 2 else "n/a (not measured)"


def _params_str(c: CellRuns, key: str) -> str:
    v = c.param(key)
    return f"{int(v):,}" if v and v.isdigit() else (v or "")


def _memory(c: CellRuns) -> str:
    peak = c.values("peak_memory_mib", "train")
    added = c.values("memory_added_mib", "train")
    if not peak:
        return ""
    kind = c.param("memory.kind") or ""
    if kind == "cpu_rss":
        return f"{fmt(added, 3)} (RSS peak {fmt(peak, 3)})"
    return fmt(peak, 3)


COLUMNS: dict[str, list[tuple[str, Callable[[CellRuns], str]]]] = {
    "Quality against the real test split (FID-domain, KID-domain: lower is better)": [
        ("FID-domain", _metric(K.FID_DOMAIN)),
        ("floor", _metric(K.FID_DOMAIN_FLOOR)),
        ("KID-domain ×10³", _metric(K.KID_DOMAIN_MEAN, scale=1e3)),
        ("floor ×10³", _metric(K.KID_DOMAIN_FLOOR_MEAN, scale=1e3)),
        ("precision", _metric(K.PRDC_PRECISION, 2)),
        ("recall", _metric(K.PRDC_RECALL, 2)),
        ("density", _metric(K.PRDC_DENSITY, 2)),
        ("coverage", _metric(K.PRDC_COVERAGE, 2)),
        ("coverage floor", _metric(K.PRDC_COVERAGE_FLOOR, 2)),
    ],
    "Fidelity to the nearest real image, diversity, privacy, conditioning": [
        ("SSIM to NN", _metric(K.NN_SSIM_MEAN, 3)),
        ("floor", _metric(K.NN_SSIM_MEAN_FLOOR, 3)),
        ("PSNR to NN (dB)", _metric(K.NN_PSNR_MEAN, 3)),
        ("floor (dB)", _metric(K.NN_PSNR_MEAN_FLOOR, 3)),
        ("MS-SSIM diversity (synthetic)", _metric(K.DIVERSITY_MS_SSIM_GENERATED, 3)),
        ("MS-SSIM diversity (real)", _metric(K.DIVERSITY_MS_SSIM_REAL, 3)),
        ("near-copy share", _metric(K.PRIVACY_NEAR_COPY_SHARE, 3, pct=True)),
        ("conditional accuracy", _metric(K.COND_ACCURACY, 3, na=_na_cond)),
    ],
    "Utility: a classifier tested on the real test split, trained on (a) real, (b) real + synthetic, "
    "(c) synthetic only, (d) real duplicated to (b)'s size (dcgan images labelled by classifier (a))": [
        ("ACC (a) real", _metric(K.UTILITY_ACC_REAL, 3, na=_na_utility)),
        ("ACC (b) real+synth", _metric(K.UTILITY_ACC_REAL_PLUS_SYNTH, 3, na=_na_utility)),
        ("ACC (c) synth only", _metric(K.UTILITY_ACC_SYNTH_ONLY, 3, na=_na_utility)),
        ("ACC (d) dup. real", _metric(K.UTILITY_ACC_REAL_DUP, 3, na=_na_utility)),
        ("AUC (a)", _metric(K.UTILITY_AUC_REAL, 3, na=_na_utility)),
        ("AUC (b)", _metric(K.UTILITY_AUC_REAL_PLUS_SYNTH, 3, na=_na_utility)),
        ("AUC (c)", _metric(K.UTILITY_AUC_SYNTH_ONLY, 3, na=_na_utility)),
        ("AUC (d)", _metric(K.UTILITY_AUC_REAL_DUP, 3, na=_na_utility)),
        ("MedMNIST v2 reference", lambda c: _na_utility(c) or c.reference or "none published"),
    ],
    "Compute (training only; evaluation excluded)": [
        ("training wall (s)", _metric("train_fit_seconds", 3, step="train")),
        ("images/s", _metric("train_images_per_s_overall", 3, step="train")),
        ("steps", _metric("global_step", 4, step="train")),
        ("G params", lambda c: _params_str(c, "model.params_g")),
        ("D params", lambda c: _params_str(c, "model.params_d")),
        ("memory added (MiB)", _memory),
        ("device", lambda c: c.param("device.name") or ""),
    ],
}


def tables(cells: list[CellRuns]) -> dict[str, tuple[list[str], list[list[str]]]]:
    """Per table: the header and one row per cell (``Cell``, ``Seeds`` first)."""
    out = {}
    for title, cols in COLUMNS.items():
        header = ["Cell", "Seeds"] + [h for h, _ in cols]
        rows = [[f"{c.model} · {c.dataset}", str(len(c.seeds))] + [fn(c) for _, fn in cols] for c in cells]
        out[title] = (header, rows)
    return out


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


# -- discussion --------------------------------------------------------------------------------
def _separable(a: list[float], b: list[float]) -> bool:
    """A difference of means larger than two standard errors (needs 2+ seeds on both sides)."""
    if len(a) < 2 or len(b) < 2:
        return False
    ma, sa, na = stats(a)
    mb, sb, nb = stats(b)
    return abs(ma - mb) > 2 * math.sqrt(sa**2 / na + sb**2 / nb)


def _m(v: list[float]) -> float:
    return stats(v)[0] if v else float("nan")


def discussion(cells: list[CellRuns]) -> list[str]:
    """Findings computed from the numbers by fixed rules (no hand-written conclusions)."""
    lines: list[str] = []
    by = {(c.model, c.dataset): c for c in cells}
    n_seeds = min(len(c.seeds) for c in cells)
    lines += ["### Which model wins where", ""]
    compared = False
    for ds in sorted({c.dataset for c in cells}):
        a, b = by.get(("dcgan", ds)), by.get(("cgan", ds))
        if not (a and b):
            continue
        compared = True
        fa, fb = a.values(K.FID_DOMAIN), b.values(K.FID_DOMAIN)
        win, lose, fw, fl = (b, a, fb, fa) if _m(fb) < _m(fa) else (a, b, fa, fb)
        rel = 100 * (_m(fl) - _m(fw)) / max(_m(fl), 1e-12)
        sep = ("larger than the seed spread (difference of means > 2 standard errors)" if _separable(fw, fl)
               else f"not separable from seed noise with {min(len(fw), len(fl))} seed(s)")
        ca, cb = _m(win.values(K.PRDC_COVERAGE)), _m(lose.values(K.PRDC_COVERAGE))
        lines.append(f"- **{ds}**: {win.model} has the lower FID-domain ({_m(fw):.3g} vs {_m(fl):.3g}, "
                     f"{rel:.0f}% lower), {sep}; coverage {ca:.2f} vs {cb:.2f}, recall "
                     f"{_m(win.values(K.PRDC_RECALL)):.2f} vs {_m(lose.values(K.PRDC_RECALL)):.2f}.")
    if not compared:
        lines.append("- No dataset has both models in this study; nothing to compare.")
    ratios = sorted((_m(c.values(K.FID_DOMAIN)) / max(_m(c.values(K.FID_DOMAIN_FLOOR)), 1e-12), c.name) for c in cells)
    lines += [f"- No cell reaches the real-vs-real floor: the closest is {ratios[0][1]} at "
              f"{ratios[0][0]:.0f}× its floor FID-domain, the farthest {ratios[-1][1]} at {ratios[-1][0]:.0f}×."
              if ratios[0][0] > 1.5 else f"- {ratios[0][1]} comes within {ratios[0][0]:.1f}× of its real-vs-real floor."]
    for c in (c for c in cells if c.conditional and c.values(K.COND_ACCURACY)):
        k = int(c.param("model.num_classes") or 1)
        acc, chance = _m(c.values(K.COND_ACCURACY)), 1.0 / k
        if k < 2:
            lines.append(f"- {c.name}: one class, so there is nothing to condition on; the cgan differs from the "
                         "dcgan only by its class embedding and projection term.")
            continue
        verdict = ("the requested class is recognised" if acc > chance + 0.5 * (1 - chance)
                   else "weakly conditioned" if acc > chance + 0.1 else "no better than chance: conditioning failed")
        lines.append(f"- {c.name}: conditional accuracy {acc:.2f} against chance {chance:.2f} ({k} classes): {verdict}.")
    lines += ["", "### Did synthetic augmentation help?", ""]
    util = [c for c in cells if c.values(K.UTILITY_ACC_REAL_PLUS_SYNTH) and c.values(K.UTILITY_ACC_REAL_DUP)]
    if not util:
        lines.append("- No cell has utility numbers (needs a conditional model on 2+ classes).")
    for c in util:
        b, d = c.values(K.UTILITY_ACC_REAL_PLUS_SYNTH), c.values(K.UTILITY_ACC_REAL_DUP)
        ra, rs = _m(c.values(K.UTILITY_ACC_REAL)), _m(c.values(K.UTILITY_ACC_SYNTH_ONLY))
        delta = _m(b) - _m(d)
        verdict = "beat" if delta > 1e-9 else "tied with" if abs(delta) <= 1e-9 else "did not beat"
        sep = (", larger than the seed spread" if _separable(b, d)
               else f", within seed noise over {len(b)} seed(s)")
        sat = " Accuracy is near 1.0 for every arm, so this dataset cannot show a gain." if min(ra, _m(d)) > 0.98 else ""
        how = " (pseudo-labelled by classifier (a))" if _m(c.values(K.UTILITY_PSEUDO_LABELS)) > 0.5 else ""
        lines.append(f"- **{c.name}**{how}: real + synthetic {verdict} the duplicated-real control (Δ accuracy {delta:+.3f}{sep}; "
                     f"{_m(b):.3f} vs {_m(d):.3f}); synthetic-only reaches {rs:.3f} against {ra:.3f} for real-only "
                     f"({100 * rs / max(ra, 1e-12):.0f}%).{sat}")

    lines += ["", "### Where the scores are optimistic", ""]
    split = [c for c in cells if c.dataset in PER_IMAGE_SPLIT]
    other = [c for c in cells if c.dataset not in PER_IMAGE_SPLIT and c.dataset != "multi"]
    if split:
        s_fl = {c.dataset: (_m(c.values(K.NN_SSIM_MEAN_FLOOR)), _m(c.values(K.FID_DOMAIN_FLOOR))) for c in split}
        o_fl = {c.dataset: (_m(c.values(K.NN_SSIM_MEAN_FLOOR)), _m(c.values(K.FID_DOMAIN_FLOOR))) for c in other}
        desc = "; ".join(f"{d}: nearest-real SSIM {v[0]:.2f}, FID-domain floor {v[1]:.3g}" for d, v in sorted(s_fl.items()))
        ref = "; ".join(f"{d}: {v[0]:.2f}, {v[1]:.3g}" for d, v in sorted(o_fl.items()))
        lines.append(f"- The MedNIST subsets carry no patient or volume identifier, so their splits are per image: "
                     f"slices of one scan can sit in both train and test. The real-vs-real floors show it ({desc}"
                     + (f"; against PneumoniaMNIST's official splits — {ref}" if ref else "") + "). "
                     "A generator that reproduces training slices is then also close to the test split, so "
                     "FID-domain, SSIM/PSNR to the nearest real image and the near-copy baseline are optimistic there.")
    lines.append("- FID-domain and KID-domain use the project's own domain classifier (trained on the same "
                 "train splits), not ImageNet Inception: compare them within this table, not with published FIDs.")

    lines += ["", "### Failure modes seen", ""]
    found = False
    for c in cells:
        notes = []
        col = [s for s in c.seeds if c.train[s].data.metrics.get("final_mode_collapse", 0) > 0.5]
        if col:
            notes.append(f"training flagged mode collapse (per-class diversity ratio < threshold) for seed(s) {col}")
        cov, cov_fl = _m(c.values(K.PRDC_COVERAGE)), _m(c.values(K.PRDC_COVERAGE_FLOOR))
        if cov < 0.5 * cov_fl:
            notes.append(f"coverage {cov:.2f} is under half the real floor {cov_fl:.2f} (missing modes)")
        dg, dr = _m(c.values(K.DIVERSITY_MS_SSIM_GENERATED)), _m(c.values(K.DIVERSITY_MS_SSIM_REAL))
        if dg > 1.5 * dr:
            notes.append(f"synthetic pairs are {dg / max(dr, 1e-12):.1f}× as similar as real pairs (low diversity)")
        dom = [s for s in c.seeds if c.train[s].data.metrics.get("final_d_real", 0) > 0.9
               and c.train[s].data.metrics.get("final_d_fake", 1) < 0.1]
        if dom:
            notes.append(f"the discriminator overpowers G at the end (D(x) > 0.9, D(G(z)) < 0.1) for seed(s) {dom}")
        for s, curve in c.curves.items():
            if len(curve) >= 3:
                best = min(f for _, f in curve)
                if curve[-1][1] > 1.5 * best:
                    notes.append(f"seed {s}: quality got worse late in training (final FID-domain "
                                 f"{curve[-1][1]:.3g} vs best {best:.3g} earlier): oscillation")
        spread = stats(c.values(K.FID_DOMAIN))
        if spread[2] > 1 and spread[1] > 0.3 * spread[0]:
            notes.append(f"unstable across seeds: FID-domain sd {spread[1]:.3g} is over 30% of the mean {spread[0]:.3g}")
        if c.values(K.PRIVACY_NEAR_COPY_SHARE) and _m(c.values(K.PRIVACY_NEAR_COPY_SHARE)) > 0.02:
            notes.append(f"near-copies of training images: {100 * _m(c.values(K.PRIVACY_NEAR_COPY_SHARE)):.1f}%")
        if notes:
            found = True
            lines.append(f"- **{c.name}**: " + "; ".join(notes) + ".")
    if not found:
        lines.append("- None of the rules (collapse flag, coverage < ½ floor, diversity ratio > 1.5, D overpowering, "
                     "late-training regression, seed instability, near-copies > 2%) fired.")

    lines += ["", "### Compute", ""]
    pairs = [(by[("dcgan", d)], by[("cgan", d)]) for d in sorted({c.dataset for c in cells})
             if ("dcgan", d) in by and ("cgan", d) in by]
    for a, b in pairs:
        ia, ib = _m(a.values("train_images_per_s_overall", "train")), _m(b.values("train_images_per_s_overall", "train"))
        ga, gb = int(a.param("model.params_g") or 0), int(b.param("model.params_g") or 0)
        lines.append(f"- **{a.dataset}**: cgan trains at {ib:.0f} images/s vs dcgan {ia:.0f} ({ib / max(ia, 1e-9):.2f}×) "
                     f"with {gb:,} vs {ga:,} generator parameters.")
    reach = []
    for c in cells:
        times = []
        for curve in c.curves.values():
            if len(curve) >= 2:
                final, i = curve[-1][1], len(curve) - 1
                while i > 0 and curve[i - 1][1] <= 1.2 * final:  # earliest point from which it stays close
                    i -= 1
                times.append(curve[i][0] / max(curve[-1][0], 1e-9))
        if times:
            reach.append(f"{c.name} {100 * float(np.mean(times)):.0f}%")
    if reach:
        lines.append("- Share of the training time after which FID-domain stays within 20% of its final value "
                     "(from the curves; lower = the budget could have been shorter): " + ", ".join(reach) + ".")
    devices = sorted({c.param("device.name") or "" for c in cells})
    if all(d.startswith("cpu") for d in devices):
        lines.append(f"- Every run here trained on the CPU ({', '.join(devices)}); the `full` profile (64 px, "
                     "pytorch/examples widths, 25 epochs) is meant for a GPU and has not been run for this report.")
    lines.append(f"- Spread is over {n_seeds} seed(s) per cell; with so few seeds, differences marked "
                 "\"not separable\" should be read as ties.")
    return lines


# -- figures -----------------------------------------------------------------------------------
def curve_figure(cells: list[CellRuns], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=100)
    drawn = False
    for c in cells:
        curves = [np.asarray(v) for v in c.curves.values() if len(v)]
        if not curves:
            continue
        n = min(len(v) for v in curves)
        arr = np.stack([v[:n] for v in curves])  # seeds x points x (seconds, fid)
        sec, fid = arr[:, :, 0].mean(0), arr[:, :, 1]
        line = ax.plot(sec, fid.mean(0), marker="o", ms=3, ls="--" if c.model == "dcgan" else "-", label=c.name)[0]
        if len(curves) > 1:
            ax.fill_between(sec, fid.min(0), fid.max(0), color=line.get_color(), alpha=0.15)
        drawn = True
    if not drawn:
        plt.close(fig)
        return False
    ax.set_yscale("log")
    ax.set_xlabel("training wall time (s, probes excluded)")
    ax.set_ylabel("FID-domain (log scale; lower is better)")
    ax.set_title("Quality per unit of compute (mean over seeds; band: min-max)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _artifact(run_id: str, name: str, dst: Path) -> bool:
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"evaluation/{name}", dst_path=tmp)
        except Exception:  # noqa: BLE001 - an artifact missing from the store: the figure is left out
            return False
        shutil.copyfile(local, dst)
    return True


# -- the document ------------------------------------------------------------------------------
def write(project: Any, study_id: str, experiment: str, out: Path, command: str) -> Path:
    """Write ``out`` (markdown) and its figures in ``<out dir>/results/``; returns ``out``."""
    import os

    from medsynth.fileio import atomic_path

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    cells = collect(project, study_id, experiment)  # also points MLflow at the project's store
    fig_dir = out.parent / "results"
    fig_dir.mkdir(parents=True, exist_ok=True)
    for old in fig_dir.glob("*.png"):
        old.unlink()
    rel = fig_dir.name
    first_eval = cells[0].evaluate[cells[0].seeds[0]]
    ext_sha = first_eval.data.params.get(K.EXTRACTOR_SHA256, "")
    backbone = first_eval.data.params.get(K.BACKBONE, "")
    shas = {c.evaluate[s].data.params.get(K.EXTRACTOR_SHA256) for c in cells for s in c.seeds}
    commits = sorted({c.train[s].data.tags.get("mlflow.source.git.commit", "unknown") for c in cells for s in c.seeds})
    profile = first_eval.data.tags.get("medsynth.study.profile", "")
    res = cells[0].param("model.resolution") or ""
    lines = [
        "# Results: DCGAN vs conditional GAN across X-ray, CT and MRI", "",
        f"<!-- generated by `{command}` from MLflow study {study_id}; do not edit by hand -->", "",
        f"Generated {_dt.datetime.now(_dt.UTC).strftime('%Y-%m-%d %H:%M UTC')} from the MLflow runs of study "
        f"`{study_id}` (profile `{profile}`, {res} px, {len(cells)} cells, "
        f"{sum(len(c.seeds) for c in cells)} train + evaluate runs). Reproduce with `{command}`; every number "
        "below is read back from MLflow (experiment "
        f"`{experiment}`, tag `medsynth.study.id = {study_id}`).", "",
        f"- Code: git {', '.join(sorted({c[:12] + ('-dirty' if c.endswith('-dirty') else '') for c in commits}))}"
        + (" (-dirty: the working tree had uncommitted changes when a run started)" if any(
            c.endswith("-dirty") for c in commits) else "")
        + "; the sources that decide training and evaluation results are pinned by the code digest in the study id",
        f"- Feature space: `{backbone}` (sha256 {ext_sha[:12]}); FID-domain/KID-domain/PRDC are computed in it"
        + ("" if len(shas) == 1 else " — WARNING: the runs used different extractors; values are not comparable"),
        "- Floors: the same metric for a sample of real training images against the real test split "
        "(what \"as good as real\" scores).",
        "- Cells: " + "; ".join(f"{c.name} = {c.model} on {DATASET_LABEL.get(c.dataset, c.dataset)}" for c in cells),
        "",
    ]
    for title, (header, rows) in tables(cells).items():
        lines += [f"## {title}", "", *md_table(header, rows), ""]
    if curve_figure(cells, fig_dir / "quality_vs_compute.png"):
        lines += ["## Quality per unit of compute", "",
                  "FID-domain of the training generator (EMA) measured at evenly spaced steps on a fixed number of "
                  "generated images, against the training time spent so far (measurement time excluded).", "",
                  f"![FID-domain against training time]({rel}/quality_vs_compute.png)", ""]
    lines += ["## Samples and nearest neighbours", "",
              "Every image in these figures marked SYNTHETIC is generated; the nearest-neighbour figures put each "
              "synthetic image beside its closest real image (test split) and the closest synthetic/training pairs "
              "(the privacy review).", ""]
    for c in cells:
        s = c.seeds[0]
        rid = c.evaluate[s].info.run_id
        got = []
        for art, suffix, label in (("synthetic_samples.png", "synthetic_samples", "SYNTHETIC samples"),
                                   ("nearest_neighbours.png", "nearest_real", "synthetic | nearest real (test)"),
                                   ("closest_training_pairs.png", "closest_training_pairs",
                                    "closest synthetic | training pairs")):
            name = f"{c.name}_{suffix}.png"
            if _artifact(rid, art, fig_dir / name):
                got.append(f"![{c.name}: {label}]({rel}/{name})")
        if got:
            lines += [f"### {c.name} (seed {s})", "", *got, ""]
    lines += ["## Discussion (computed from the numbers above)", "", *discussion(cells), ""]
    lines += _kept_blocks(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        Path(tmp).write_text("\n".join(lines))
    return out


def _kept_blocks(out: Path) -> list[str]:
    """Sections other commands own in the same document (``medsynth study --augment``), carried over."""
    from medsynth.study.augment_study import END, SECTION, START

    body = out.read_text() if out.exists() else ""
    if START not in body or END not in body:
        return []
    return [SECTION, "", body[body.index(START): body.index(END) + len(END)], ""]


def parse_tables(markdown: str) -> dict[str, tuple[list[str], list[list[str]]]]:
    """The tables of a RESULTS.md back as (header, rows) by section title (used by the tests)."""
    out: dict[str, tuple[list[str], list[list[str]]]] = {}
    title = ""
    rows: list[list[str]] = []
    for line in markdown.splitlines() + [""]:
        if line.startswith("## "):
            title = line[3:].strip()
        elif line.startswith("|"):
            cells = [x.strip() for x in line.strip().strip("|").split("|")]
            if not all(set(x) <= {"-"} for x in cells):
                rows.append(cells)
        elif rows:
            out[title] = (rows[0], rows[1:])
            rows = []
    return out
