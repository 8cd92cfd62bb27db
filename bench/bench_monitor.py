"""Drift monitor: time per 1,000 images, growth with batch size, false-alarm and detection rates.

    .venv/bin/python bench/bench_monitor.py [--false-alarm-batches 1000] [--detect-batches 20]
        [--extractor DIR] [--write docs/BENCHMARKS.md]

Reference: adult chest X-rays, the bundled ``data/mednist_cxr_small.npz`` train split (1,500 images),
through the real ingest -> validate -> preprocess steps. Thresholds: params.yaml ``monitor.drift``.

1. Timing: ``medsynth.components.monitor.run`` (ingest, validate, transform, features, Evidently,
   MLflow logging, history) on held-out CXR batches of growing size, with and without the HTML report.
2. False alarms: random same-distribution batches (held-out real CXR images never in the reference:
   the full MedNIST CXR set minus the reference's images, when ``mednist_cxr.npz`` is found in
   $MEDSYNTH_DATA_DIR or ../shared/datasets; else the bundled val+test) -> share flagged.
3. Detection: the same batches after each acquisition change of ``monitoring/shifts.py`` at each
   strength, and pediatric chest X-rays (PneumoniaMNIST, another hospital and population).
   Steps 2-3 use Evidently's stattests without the report widgets (identical p-values, see
   tests/unit/test_drift.py), with image statistics alone and with the domain embeddings.
4. Results go to bench/out/bench_monitor.json and, with ``--write``, into the "Monitoring" section
   of docs/BENCHMARKS.md (between its markers).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from benchdoc import machine, markers, write_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
START, END = markers("monitor")
SECTION = "## Monitoring"




def find_full_cxr() -> Path | None:
    for d in (os.environ.get("MEDSYNTH_DATA_DIR"), REPO.parent / "shared" / "datasets"):
        if d and (Path(d) / "mednist_cxr.npz").is_file():
            return Path(d) / "mednist_cxr.npz"
    return None


def held_out_pool() -> tuple[np.ndarray, str]:
    """Real CXR images that are not in the reference (uint8 [N, 64, 64]) and where they come from."""
    small = np.load(REPO / "data" / "mednist_cxr_small.npz")
    full_path = find_full_cxr()
    if full_path is None:
        return np.concatenate([small["val_images"], small["test_images"]]), "bundled CXR val+test (400 images)"
    full = np.load(full_path)
    used = set(small["train_source_index"].tolist())
    keep = np.array([i for i in range(len(full["train_images"])) if i not in used])
    pool = np.concatenate([full["train_images"][keep], full["val_images"], full["test_images"]])
    return pool, f"full MedNIST CXR minus the reference's 1,500 images ({len(pool):,} images)"


def build_reference(root: Path) -> Path:
    from medsynth.components.ingest import ingest_sources
    from medsynth.components.preprocess import PreprocessConfig, preprocess_dataset
    from medsynth.components.validate import ValidateConfig, validate_dataset
    from medsynth.config import build
    from medsynth.readers import SourceConfig

    src = build(SourceConfig, {"path": "mednist_cxr_small.npz", "format": "npz", "modality": "XR",
                               "classes": ["CXR"]}, "src")
    ingest_sources([src], REPO / "data", root / "ingest")
    validate_dataset(ValidateConfig(), root / "ingest", root / "validate")
    preprocess_dataset(PreprocessConfig(), root / "validate", root / "preprocess")
    return root / "preprocess"


def extractor_desc(ext: Path | None) -> str | None:
    if ext is None:
        return None
    m = json.loads((ext / "meta.json").read_text())
    return (f"`medsynth features` with params.yaml `features`: {m.get('backbone')} version {str(m.get('sha256'))[:12]}, "
            f"test accuracy {m.get('test_accuracy', float('nan')):.3f} over {len(m.get('classes', []))} classes")


def timing(pool: np.ndarray, sizes: list[int], extractor: Path | None) -> list[dict]:
    """Wall and CPU seconds of one full check per batch size (libraries already imported)."""
    from medsynth.components import monitor
    from medsynth.config import load_stage, read_params
    from medsynth.project import load_project

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        os.environ.update(MEDSYNTH_HOME=str(home), MEDSYNTH_QUIET="1")
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        params = read_params(REPO / "params.yaml")
        project = load_project(params)
        ref = build_reference(home / "ref")
        over = {"monitor.extractor": str(extractor) if extractor else "/nonexistent"}
        rng = np.random.default_rng(0)
        warm = home / "warm.npz"
        np.savez(warm, test_images=pool[:100])
        for html in (True, False):
            cfg = load_stage(monitor.MonitorConfig, "monitor", params, over | {"monitor.html_report": str(html).lower()})
            monitor.run(cfg, project, warm, params, reference=ref)  # warm-up: imports, reference cache
            for n in sizes:
                b = home / f"batch{n}.npz"
                np.savez(b, test_images=pool[rng.choice(len(pool), min(n, len(pool)), replace=False)])
                w0, c0 = time.perf_counter(), time.process_time()
                res = monitor.run(cfg, project, b, params, reference=ref)
                wall, cpu = time.perf_counter() - w0, time.process_time() - c0
                cols = json.loads((res.out_dir / "summary.json").read_text())["columns"]
                rows.append({"html": html, "n": res.n_valid, "wall_s": wall, "cpu_s": cpu, "columns": len(cols),
                             "drifted": res.drift.drifted})
                print(f"  timing html={html} n={res.n_valid}: {wall:.1f}s wall, {cpu:.1f}s CPU, {len(cols)} columns",
                      file=sys.stderr)
    return rows


def rates(pool: np.ndarray, n_false: int, n_detect: int, batch: int, extractor: Path | None) -> dict:
    """False-alarm and detection rates (fast path: Evidently stattests, no widgets)."""
    from medsynth.components.monitor import MonitorConfig
    from medsynth.config import load_stage
    from medsynth.monitoring.drift import detect_drift
    from medsynth.monitoring.image_features import PCA, embed_in_batches, feature_frame
    from medsynth.monitoring.shifts import LADDERS, apply_shift
    from medsynth.prepared import to_uint8, to_unit
    from medsynth.transforms import ImageTransform

    cfg_all = load_stage(MonitorConfig, "monitor", REPO / "params.yaml")
    cfg = cfg_all.drift
    tf = ImageTransform(resolution=64)
    embed = None
    if extractor is not None:
        from medsynth.training.extractor import load_extractor

        ext = load_extractor(extractor)
        module = ext.feature_module()

        def embed(x):
            import torch

            with torch.no_grad():
                return module(torch.from_numpy((x + 1.0) * 0.5)).numpy()

    def images(u8):  # exactly what preprocess stores: transform, then uint8 quantisation
        return to_unit(to_uint8(tf.batch_uint8(u8)))

    small = np.load(REPO / "data" / "mednist_cxr_small.npz")
    ref_x = images(small["train_images"])
    ref_emb = embed_in_batches(embed, ref_x) if embed else None
    pca = PCA.fit(ref_emb, cfg_all.embedding_components) if embed else None

    def frames(u8):
        x = images(u8)
        side = np.full(len(u8), float(np.sqrt(u8.shape[1] * u8.shape[2])))
        stats = feature_frame(x, sizes=side)
        full = feature_frame(x, sizes=side, embeddings=embed_in_batches(embed, x), pca=pca) if embed else None
        return stats, full

    ref_stats, ref_full = frames(small["train_images"])
    variants = {"stats": ref_stats} | ({"stats+emb": ref_full} if embed else {})
    pool_stats, pool_full = frames(pool)
    pools = {"stats": pool_stats, "stats+emb": pool_full}
    rng = np.random.default_rng(0)
    out: dict = {"batch": batch, "false_alarm": {}, "detection": {}, "per_setting_batches": n_detect,
                 "false_alarm_batches": n_false}

    def flagged(kind: str, cur) -> bool:
        return detect_drift(variants[kind], cur, cfg, report=False).drifted

    t0 = time.perf_counter()
    for kind in variants:
        for n in (100, batch, 500):
            hits = sum(flagged(kind, pools[kind].iloc[rng.choice(len(pool), n, replace=False)]) for _ in range(n_false))
            out["false_alarm"][f"{kind}@{n}"] = hits / n_false
    print(f"  false alarms done in {time.perf_counter() - t0:.0f}s: {out['false_alarm']}", file=sys.stderr)

    # detection: one shifted subset per setting, n_detect random batches drawn from it
    sub = pool[rng.choice(len(pool), min(len(pool), max(2 * batch, 2000)), replace=False)]
    ped = np.load(REPO / "data" / "pneumoniamnist.npz")
    cases = {"pediatric CXR (PneumoniaMNIST)": (None, np.concatenate([ped["val_images"], ped["test_images"]]))}
    for shift, ladder in LADDERS.items():
        for v in ladder:
            cases[f"{shift.value} {v:g}"] = (shift, v)
    for name, spec in cases.items():
        u8 = spec[1] if spec[0] is None else apply_shift(sub, spec[0], spec[1], seed=1)
        fs, ff = frames(u8)
        for kind, df in (("stats", fs), ("stats+emb", ff)):
            if kind not in variants:
                continue
            hits = sum(flagged(kind, df.iloc[rng.choice(len(df), batch, replace=False)]) for _ in range(n_detect))
            out["detection"].setdefault(name, {})[kind] = hits / n_detect
        print(f"  {name}: {out['detection'][name]}", file=sys.stderr)
    return out


def render(res: dict) -> str:
    r, t = res["rates"], res["timing"]
    kinds = [k for k in ("stats", "stats+emb") if any(x.startswith(k + "@") for x in r["false_alarm"])]
    d = res["drift_config"]
    lines = [SECTION, "", START,
             f"Reference: adult chest X-rays, `data/mednist_cxr_small.npz` train split (1,500 images, 64 px) through "
             f"ingest -> validate -> preprocess. Thresholds from params.yaml `monitor.drift`: {d['stattest']} test per "
             f"column, a column drifts at p < {d['p_threshold']:g}; a batch drifts when >= {d['drift_share']:.0%} of "
             f"columns drift or any column has p < {d['strong_p']:g}. Columns: 10 image statistics (mean, std, p05, "
             f"p50, p95, contrast, sharpness, noise, entropy, source size)"
             + (f" + {res['embedding_components']} PCA components (fitted on the reference) of the domain feature "
                f"extractor's 128-d embedding ({res.get('extractor_desc') or res['extractor']})"
                if res.get("extractor") else "") + ".",
             "",
             f"- command: `{res['command']}`",
             f"- machine: {res['machine']}; load average at start {res['load']}",
             f"- measured: {res['when']}",
             "",
             "### Time per check",
             "",
             "Full `monitor.run` (ingest, Great Expectations validation, transforms, features, Evidently, MLflow "
             "logging, history), libraries already imported, reference features cached.",
             "",
             "| batch images | columns | HTML report | wall s | CPU s | wall s per 1,000 images |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in t:
        lines.append(f"| {row['n']:,} | {row['columns']} | {'yes' if row['html'] else 'no'} | {row['wall_s']:.1f} | "
                     f"{row['cpu_s']:.1f} | {1000 * row['wall_s'] / row['n']:.1f} |")
    for html in (True, False):
        rows = [x for x in t if x["html"] == html]
        if len(rows) >= 2:
            n = np.array([x["n"] for x in rows], float)
            w = np.array([x["wall_s"] for x in rows])
            slope, icpt = np.polyfit(n, w, 1)
            lines.append("")
            c = np.array([x["cpu_s"] for x in rows])
            cslope, cicpt = np.polyfit(n, c, 1)
            lines.append(f"Growth ({'with' if html else 'without'} HTML): wall ~ {icpt:.1f} s + "
                         f"{1000 * slope:.2f} s per 1,000 images; CPU ~ {cicpt:.1f} s + {1000 * cslope:.2f} s per "
                         "1,000 images (least squares over the rows above): linear in the batch, plus a fixed "
                         "cost that the HTML report dominates.")
    lines += ["", "### False alarms (same distribution)", "",
              f"Random batches of held-out real adult CXR ({res['pool']}), {r['false_alarm_batches']:,} batches "
              f"per cell: share flagged as drift.", "",
              "| columns | " + " | ".join(f"batch {k.split('@')[1]}" for k in r["false_alarm"] if k.startswith(kinds[0] + "@")) + " |",
              "| --- |" + " --- |" * sum(1 for k in r["false_alarm"] if k.startswith(kinds[0] + "@"))]
    for kind in kinds:
        vals = [v for k, v in r["false_alarm"].items() if k.startswith(kind + "@")]
        lines.append(f"| {kind} | " + " | ".join(f"{v:.1%}" for v in vals) + " |")
    lines += ["", "### Detection (real shifts)", "",
              f"Share of {r['per_setting_batches']} random batches of {r['batch']} images flagged. Acquisition "
              "changes (`monitoring/shifts.py`) applied to held-out adult CXR; strengths: gamma = tone-curve "
              "exponent, contrast = factor on the distance from the image mean, noise = Gaussian sigma in [0, 1] "
              "units, blur = Gaussian sigma in px, resolution = detector resolution as a share of the matrix.", "",
              "| shift | " + " | ".join(kinds) + " |", "| --- |" + " --- |" * len(kinds)]
    for name, v in r["detection"].items():
        lines.append(f"| {name} | " + " | ".join(f"{v[k]:.0%}" for k in kinds) + " |")
    lines += ["", "Reading: " + onset(r["detection"], kinds[0]), "",
              "Why so sensitive: the changes are small to the eye but systematic. Contrast 0.99 lowers the 95th "
              "percentile of most images by one grey level (-0.4%); an 8-bit percentile takes discrete values, so a "
              "KS test on 200 images against 1,500 sees that with p ~ 1e-28. Noise 0.005 (1.3 grey levels) raises "
              "the noise column by ~19%; resolution 0.97 (one bilinear down/up-sampling) smooths pixel noise by "
              "~66%. These are real acquisition changes that a model trained on the reference would see; whether "
              "they should start a retraining is the policy's call (two consecutive drifted batches by default). "
              "The same-distribution false-alarm rate stays at the level above; to alarm only on larger changes, "
              "lower `monitor.drift.strong_p` and raise `drift_share`, then re-run this benchmark.",
              "", "Evidently's import (2.5-18 s on this shared machine) is paid once per process and is not in "
              "the rows above. The machine is shared: CPU seconds are the steadier figure.", END]
    return "\n".join(lines)


def onset(detection: dict, kind: str) -> str:
    """Per acquisition change, the mildest setting flagged in >= 90% of batches."""
    parts = []
    for shift in dict.fromkeys(name.rsplit(" ", 1)[0] for name in detection if " " in name and "(" not in name):
        hits = [(name.rsplit(" ", 1)[1], v[kind]) for name, v in detection.items() if name.rsplit(" ", 1)[0] == shift]
        first = next((val for val, rate in hits if rate >= 0.9), None)
        parts.append(f"{shift} from {first}" if first else f"{shift} not reliably at these settings")
    return f"flagged in >= 90% of batches ({kind} columns): " + "; ".join(parts) + "."




def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--false-alarm-batches", type=int, default=1000)
    ap.add_argument("--detect-batches", type=int, default=20)
    ap.add_argument("--batch", type=int, default=200, help="batch size of the detection experiment")
    ap.add_argument("--sizes", default="250,1000,2000,4000", help="batch sizes of the timing runs")
    ap.add_argument("--extractor", default=None, help="domain feature extractor folder (default: <artifacts>/features/domain_cnn when present)")
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--write", default=None, help="update this BENCHMARKS.md")
    ap.add_argument("--from-json", default=None, help="re-render a saved bench/out/bench_monitor.json (no runs)")
    args = ap.parse_args(argv)
    if args.from_json:
        text = render(json.loads(Path(args.from_json).read_text()))
        print(text)
        if args.write:
            write_section(Path(args.write), text, 'monitor', SECTION)
        return 0
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    from medsynth.components.monitor import MonitorConfig
    from medsynth.config import load_stage, to_dict

    ext = Path(args.extractor) if args.extractor else REPO / "artifacts" / "features" / "domain_cnn"
    ext = ext.resolve() if (ext / "meta.json").is_file() else None
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    pool, pool_desc = held_out_pool()
    t0 = time.perf_counter()
    res = {
        "command": "python bench/bench_monitor.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(), "load": load, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "pool": pool_desc, "extractor": str(ext.relative_to(REPO)) if ext and ext.is_relative_to(REPO) else (str(ext) if ext else None),
        "extractor_desc": extractor_desc(ext),
        "embedding_components": load_stage(MonitorConfig, "monitor", REPO / "params.yaml").embedding_components,
        "drift_config": to_dict(load_stage(MonitorConfig, "monitor", REPO / "params.yaml").drift),
        "rates": rates(pool, args.false_alarm_batches, args.detect_batches, args.batch, ext),
        "timing": [] if args.no_timing else timing(pool, [int(s) for s in args.sizes.split(",")], ext),
    }
    res["seconds"] = time.perf_counter() - t0
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_monitor.json").write_text(json.dumps(res, indent=2, default=float) + "\n")
    text = render(res)
    print(text)
    if args.write:
        write_section(Path(args.write), text, 'monitor', SECTION)
    return 0


if __name__ == "__main__":
    sys.exit(main())
