"""``medsynth ingest``: read the configured dataset (or one ad-hoc source) into a canonical dataset."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from medsynth.cli import add_common

    p = sub.add_parser("ingest", help="read real images (npz, DICOM, NIfTI, PNG/JPEG folders) into a canonical dataset",
                       description=__doc__)
    add_common(p)
    p.add_argument("--out", default=None, help="output folder (default: <artifacts>/ingest)")
    p.add_argument("--input", default=None, help="ingest this file or folder instead of the configured dataset")
    p.add_argument("--format", default="auto", help="format of --input: auto, npz, image_folder, dicom, nifti")
    p.add_argument("--modality", default="CT", help="modality of --input: XR, CT or MR")
    p.add_argument("--classes", default=None, help="comma-separated class names of --input (npz label order)")
    p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from medsynth.cli import Context
    from medsynth.components.ingest import IngestConfig, ingest_sources, run
    from medsynth.config import build

    ctx = Context(args)
    out = ctx.path(args.out, "ingest")
    if args.input:
        from medsynth.readers import SourceConfig

        classes = [c for c in (args.classes or "").split(",") if c] or _folder_classes(Path(args.input)) or ["unlabelled"]
        src = build(SourceConfig, {"path": str(Path(args.input).resolve()), "format": args.format,
                                   "modality": args.modality, "classes": classes}, "--input")
        res = ingest_sources([src], Path.cwd(), out)
    else:
        res = run(ctx.stage(IngestConfig, "ingest"), ctx.project, out, track=not args.no_track)
    print(f"ingested {res.n_images} images ({res.n_quarantined} quarantined) into {res.out_dir} "
          f"in {res.seconds:.1f}s; data hash {res.data_hash[:12]}")
    return 0


def _folder_classes(root) -> list[str]:
    """Class names of an image folder laid out as ``[split/]class/*.png`` (sorted), else []."""
    if not root.is_dir():
        return []
    names = set()
    for d in root.iterdir():
        if not d.is_dir() or d.name.startswith("."):
            continue
        if d.name in ("train", "val", "test"):
            names.update(x.name for x in d.iterdir() if x.is_dir() and not x.name.startswith("."))
        else:
            names.add(d.name)
    return sorted(names)
