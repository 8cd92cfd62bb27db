"""Data at scale: peak memory and throughput of ingest, validate, preprocess and training against
the number of images, from the bundled set up to 1,000 times its size.

    .venv/bin/python bench/bench_scale.py [--scales 1,10,100,1000] [--base mri]
        [--reference-tree DIR --reference-scales 1,10,100] [--train-steps 40] [--write docs/BENCHMARKS.md]

1. The data: the bundled set (``--base``: mri = 1,900 breast MRI slices at 64 px) copied ``k`` times
   into a folder of ``k`` uncompressed .npz archives; copy ``c`` adds 1 grey level to pixel ``c`` of
   every image (``c`` < 4096), so every image is unique and the copies pass validation as real
   data would. A folder is made once per scale and reused.
2. Each step runs alone in a fresh process (what `medsynth <step>` does, MLflow off), polled 20
   times a second: peak anonymous memory (the process's own heap: what the step needs) and peak
   file-backed resident memory (memory-mapped shards: page cache the kernel can drop), with the
   kernel's own high-water mark (VmHWM, both together). Images per second of wall time.
3. The training step: the train split memory-mapped from the prepared artifact, ``--train-steps``
   DCGAN steps of 64 images; images/s over the steps (set-up timed apart).
4. ``--reference-tree``: the same steps with another checkout's code (e.g. the commit before sharding:
   ``git worktree add /tmp/ref <commit>``), on the same data and machine, side by side.
5. bench/out/bench_scale.json, and with ``--write`` the "Data at scale" section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchdoc import machine, markers, write_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
START, END = markers("scale")
SECTION = "## Data at scale"
STEPS = ("ingest", "validate", "preprocess", "train")
BASES = {"mri": ("mednist_breastmri_small.npz", "MR", ["BreastMRI"]),
         "ct": ("mednist_ct_small.npz", "CT", ["AbdomenCT", "ChestCT", "HeadCT"])}


def make_source(base: str, k: int, dest: Path) -> int:
    """``k`` perturbed copies of the bundled ``base`` set as .npz archives in ``dest``; returns images."""
    import numpy as np

    done = dest / "DONE"
    if done.is_file():
        return int(done.read_text())
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    with np.load(REPO / "data" / BASES[base][0]) as z:
        arrays = {name: z[name] for name in z.files if name.endswith(("_images", "_labels"))}
    n = 0
    for c in range(k):
        out = {}
        for name, a in arrays.items():
            if name.endswith("_images"):
                a = a.copy()
                flat = a.reshape(len(a), -1)
                v = flat[:, c % flat.shape[1]]
                flat[:, c % flat.shape[1]] = np.where(v < 255, v + 1, v - 1) if c else v
                n += len(a)
            out[name] = a
        np.savez(dest / f"copy_{c:05d}.npz", **out)
    done.write_text(str(n))
    return n


# ---- one step in a child process --------------------------------------------------------------------


def use_tree(tree: str | None) -> None:
    """Import the medsynth package from another checkout (the editable install's path mapping)."""
    if not tree:
        return
    for name, mod in list(sys.modules.items()):
        if name.startswith("__editable__") and name.endswith("_finder") and hasattr(mod, "MAPPING"):
            for key, path in mod.MAPPING.items():
                mod.MAPPING[key] = path.replace(str(REPO), str(Path(tree).resolve()))
            return
    raise SystemExit("--tree needs the editable install of medsynth (pip install -e .)")


def child(step: str, work: Path, base: str, train_steps: int, tree: str | None) -> dict:
    use_tree(tree)
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    from medsynth.components.ingest import ingest_sources
    from medsynth.components.preprocess import PreprocessConfig, preprocess_dataset
    from medsynth.components.validate import ValidateConfig, validate_dataset
    from medsynth.config import build
    from medsynth.readers import SourceConfig

    t0 = time.perf_counter()
    if step == "ingest":
        _, modality, classes = BASES[base]
        src = build(SourceConfig, {"path": str(work / "source"), "format": "npz", "modality": modality,
                                   "classes": classes}, "bench")
        n = ingest_sources([src], work, work / "ingest").n_images
    elif step == "validate":
        n = validate_dataset(ValidateConfig(), work / "ingest", work / "validate")[0].n_checked
    elif step == "preprocess":
        n = preprocess_dataset(PreprocessConfig(), work / "validate", work / "preprocess").n_images
    else:
        from medsynth.components.train import load_train_data
        from medsynth.training.train_config import load_train_config
        from medsynth.training.trainer import Trainer

        data = load_train_data(work / "preprocess")
        cfg = load_train_config({"train": {"model": "dcgan", "ngf": 32, "ndf": 32, "batch_size": 64, "epochs": 10_000,
                                           "max_steps": train_steps, "max_train_images": 0, "log_every": 10_000,
                                           "checkpoint_every": 1_000_000}})
        out = work / "train"
        shutil.rmtree(out, ignore_errors=True)
        tr = Trainer(cfg, data, out, seed=0, resume=False)
        setup = time.perf_counter() - t0
        t1 = time.perf_counter()
        tr.fit()
        fit = time.perf_counter() - t1
        return {"n": len(data.y), "seconds": time.perf_counter() - t0, "setup_s": setup, "fit_s": fit,
                "steps": tr.global_step, "images_per_s": tr.global_step * 64 / fit}
    s = time.perf_counter() - t0
    return {"n": n, "seconds": s, "images_per_s": n / s}


def status(pid: int) -> dict[str, int]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("RssAnon", "RssFile", "VmHWM"):
                out[k] = int(v.split()[0]) * 1024
    except OSError:
        pass
    return out


def run_step(step: str, work: Path, base: str, train_steps: int, tree: str | None) -> dict:
    cmd = [sys.executable, __file__, "--child", step, "--work", str(work), "--base", base,
           "--train-steps", str(train_steps)] + (["--tree", tree] if tree else [])
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=os.environ | {"MEDSYNTH_QUIET": "1"})
    peak = {"RssAnon": 0, "RssFile": 0, "VmHWM": 0}
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            for k, v in status(p.pid).items():
                peak[k] = max(peak[k], v)
            time.sleep(0.05)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    out, err = p.communicate()
    stop.set()
    th.join()
    if p.returncode != 0:
        raise SystemExit(f"{step} failed ({p.returncode}):\n{err[-3000:]}")
    res = json.loads(out.strip().splitlines()[-1])
    res |= {"peak_anon_mb": peak["RssAnon"] / 2**20, "peak_file_mb": peak["RssFile"] / 2**20,
            "vm_hwm_mb": peak["VmHWM"] / 2**20}
    return res


def disk_mb(path: Path) -> float:
    seen, total = set(), 0
    for f in path.rglob("*"):
        if f.is_file():
            st = f.stat()
            if st.st_ino not in seen:  # hard links (validate's shards) once
                seen.add(st.st_ino)
                total += st.st_size
    return total / 2**20


def measure(label: str, tree: str | None, scales: list[int], base: str, root: Path, train_steps: int) -> list[dict]:
    rows = []
    for k in scales:
        src = root / f"source-{base}-x{k}"
        n = make_source(base, k, src)
        work = root / f"work-{label}-x{k}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        (work / "source").symlink_to(src)
        row = {"code": label, "scale": k, "images": n}
        for step in STEPS:
            t = time.perf_counter()
            r = run_step(step, work, base, train_steps, tree)
            row[step] = r
            print(f"{label} x{k} {step}: {r['images_per_s']:.0f} img/s, anon {r['peak_anon_mb']:.0f} MB, "
                  f"file {r['peak_file_mb']:.0f} MB, {time.perf_counter() - t:.0f} s", flush=True)
        row["disk_mb"] = {s: round(disk_mb(work / s), 1) for s in ("ingest", "validate", "preprocess")}
        rows.append(row)
        shutil.rmtree(work, ignore_errors=True)
        for name in (".ingest.partial", ".preprocess.pieces"):
            shutil.rmtree(work.parent / name, ignore_errors=True)
    return rows


def formats(n: int, root: Path, batches: int = 300) -> list[dict]:
    """Random batches of 64 images from ``n`` images stored three ways: a .npy (what preprocess
    writes; memory-mapped, and read with pread as training does), an Arrow IPC file (memory-mapped,
    one fixed-size binary per image) and Parquet (row groups of 4,096 images, no compression).
    Arrow and Parquet hand back the column's value buffer, no per-image Python objects. ms per
    batch, warm page cache, best of two passes; each variant's first batch is checked against the
    stored images."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    with np.load(REPO / "data" / BASES["mri"][0]) as z:
        base = z["train_images"]
    reps = -(-n // len(base))
    x = np.concatenate([base] * reps)[:n, None]
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "x.npy", x)
    col = pa.FixedSizeBinaryArray.from_buffers(pa.binary(x[0].size), n, [None, pa.py_buffer(x.tobytes())])
    table = pa.table({"x": col})
    with pa.OSFile(str(root / "x.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table, max_chunksize=4096)
    pq.write_table(table, root / "x.parquet", row_group_size=4096, compression="none")
    del table, col
    rng = np.random.default_rng(0)
    idx = [np.sort(rng.choice(n, 64, replace=False)) for _ in range(batches)]
    shape = x.shape[1:]
    del x

    def npy():
        from medsynth.prepared import random_access

        a = np.load(root / "x.npy", mmap_mode="c")
        random_access(a)
        return lambda i: np.asarray(a[i])

    def values(col) -> np.ndarray:  # the fixed-size binary column's value buffer, no per-image objects
        arr = col.combine_chunks() if hasattr(col, "combine_chunks") else col
        return np.frombuffer(arr.buffers()[1], np.uint8)[arr.offset * arr.type.byte_width:][:len(arr) * arr.type.byte_width].reshape(-1, *shape)

    def reader():
        from medsynth.prepared import ImageReader

        r = ImageReader(root / "x.npy")
        return lambda i: r[i]

    def arrow():  # zero-copy views of each record batch over the mapping; take() would copy the column
        t = pa.ipc.open_file(pa.memory_map(str(root / "x.arrow"))).read_all()
        views = [values(c) for c in t.column("x").chunks]
        step = len(views[0])
        return lambda i: np.stack([views[k // step][k % step] for k in i.tolist()])

    def parquet():
        f = pq.ParquetFile(root / "x.parquet")

        def get(i):
            groups = sorted(set((i // 4096).tolist()))
            t = f.read_row_groups(groups, columns=["x"])
            pos = np.searchsorted(np.array(groups), i // 4096) * 4096 + i % 4096
            return values(t.column("x").take(pa.array(pos)))
        return get

    out = []
    files = {"memory-mapped .npy": "x.npy", ".npy read with pread (ImageReader, what training uses)": "x.npy",
             "Arrow IPC (memory-mapped)": "x.arrow", "Parquet, 4,096 per row group": "x.parquet"}
    makers = (npy, reader, arrow, parquet)
    for name, make in zip(files, makers):
        get = make()
        best = float("inf")
        for _ in range(2):
            t = time.perf_counter()
            for i in idx:
                get(i)
            best = min(best, time.perf_counter() - t)
        out.append({"format": name, "images": n, "ms_per_batch": 1000 * best / batches,
                    "disk_mb": (root / files[name]).stat().st_size / 2**20})
        first = np.asarray(get(idx[0]))
        if not np.array_equal(first, np.load(root / "x.npy", mmap_mode="r")[idx[0]]):
            raise AssertionError(f"{name}: wrong images")
        print(f"{name}: {out[-1]['ms_per_batch']:.2f} ms per batch of 64", flush=True)
    shutil.rmtree(root, ignore_errors=True)
    return out


def table(rows: list[dict]) -> str:
    lines = ["| code | scale | images | " + " | ".join(f"{s} img/s | {s} anon MB | {s} file MB" for s in STEPS) + " |",
             "|---|---:|---:|" + "---:|" * (3 * len(STEPS))]
    for r in rows:
        cells = []
        for s in STEPS:
            cells += [f"{r[s]['images_per_s']:,.0f}", f"{r[s]['peak_anon_mb']:,.0f}", f"{r[s]['peak_file_mb']:,.0f}"]
        lines.append(f"| {r['code']} | {r['scale']}x | {r['images']:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def section(doc: dict) -> str:
    """The docs/BENCHMARKS.md block: the scale table and, when measured, the storage formats."""
    text = f"{START}\nMachine: {doc['machine']}. Command: `{doc['command']}`.\n\n{table(doc['rows'])}\n"
    if doc.get("formats"):
        n = doc["formats"][0]["images"]
        text += (f"\nRandom access by storage format, {n:,} images, warm page cache:\n\n"
                 "| storage | ms per random batch of 64 |\n|---|---:|\n"
                 + "".join(f"| {f['format']} | {f['ms_per_batch']:.2f} |\n" for f in doc["formats"]))
    return text + END


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", choices=STEPS)
    ap.add_argument("--work", type=Path)
    ap.add_argument("--tree")
    ap.add_argument("--base", default="mri", choices=sorted(BASES))
    ap.add_argument("--scales", default="1,10,100,1000")
    ap.add_argument("--reference-tree")
    ap.add_argument("--reference-scales", default="1,10,100")
    ap.add_argument("--train-steps", type=int, default=40)
    ap.add_argument("--root", type=Path, default=REPO / "bench" / "out" / "scale")
    ap.add_argument("--formats", type=int, default=0, help="also time random batches from N images in three formats")
    ap.add_argument("--only-formats", action="store_true")
    ap.add_argument("--write", type=Path)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.work, a.base, a.train_steps, a.tree)))
        return
    fmt = formats(a.formats, a.root / "formats") if a.formats else []
    if a.only_formats:
        print(json.dumps(fmt, indent=1))
        return
    rows = []
    if a.reference_tree:
        rows += measure("reference", a.reference_tree, [int(s) for s in a.reference_scales.split(",")], a.base,
                        a.root, a.train_steps)
    rows += measure("sharded", None, [int(s) for s in a.scales.split(",")], a.base, a.root, a.train_steps)
    out = REPO / "bench" / "out" / "bench_scale.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"machine": machine(), "base": a.base, "rows": rows, "formats": fmt,
           "command": "python bench/bench_scale.py " + " ".join(sys.argv[1:])}
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(table(rows))
    if a.write:
        write_section(a.write, section(doc), "scale", SECTION)


if __name__ == "__main__":
    main()
