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
    p.add_argument("--modality", default=None,
                   help="modality of --input by DICOM code: XR (any X-ray), CR, DX, CT, MR, US, MG, PT; "
                        "required unless --input is DICOM whose files say it")
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

        inp = Path(args.input)
        classes = input_classes(inp, args.format, args.classes)
        src = build(SourceConfig, {"path": str(inp.resolve()), "format": args.format,
                                   "modality": input_modality(inp, args.format, args.modality),
                                   "classes": classes}, "--input")
        res = ingest_sources([src], Path.cwd(), out, dataset=input_dataset_name(inp),
                             shard_size=ctx.stage(IngestConfig, "ingest").shard_size)
    else:
        res = run(ctx.stage(IngestConfig, "ingest"), ctx.project, out, track=not args.no_track)
    resumed = f", {res.resumed_shards} kept from the interrupted run" if res.resumed_shards else ""
    print(f"ingested {res.n_images} images ({res.n_quarantined} quarantined) into {res.out_dir} "
          f"({res.n_shards} shards{resumed}) in {res.seconds:.1f}s; data hash {res.data_hash[:12]}")
    return 0


def input_modality(inp, fmt: str, given: str | None) -> str:
    """``--modality``, else the Modality the DICOM files of ``inp`` declare (all the same).

    Raises:
        ConfigError: not given and the input does not say (not DICOM, or DICOM without one), or
            its DICOM files declare several.
    """
    from medsynth.errors import ConfigError
    from medsynth.readers import Modality, SourceFormat, detect_format

    valid = ", ".join(m.value for m in Modality)
    if given:
        return given.upper()
    kind = detect_format(inp) if fmt == "auto" else fmt
    found = _dicom_modalities(inp) if kind == SourceFormat.DICOM else set()
    if len(found) == 1:
        return found.pop()
    if len(found) > 1:
        raise ConfigError(f"--modality: the DICOM files of --input declare several ({', '.join(sorted(found))}); "
                          "ingest one modality at a time, or pass --modality")
    why = "its DICOM files declare none of them" if kind == SourceFormat.DICOM else f"{kind} files do not say"
    raise ConfigError(f"--modality is required for --input ({why}): one of {valid}")


def _dicom_modalities(inp, limit: int = 200) -> set[str]:
    """The project modality codes the (first ``limit``) DICOM headers under ``inp`` declare."""
    import warnings

    import pydicom

    from medsynth.readers.dicom import MODALITY_MAP
    from medsynth.readers.image_folder import source_files

    out = set()
    for f in source_files(inp)[:limit]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["Modality"])
        except Exception:  # noqa: BLE001 - unreadable files are the reader's to quarantine
            continue
        code = MODALITY_MAP.get(str(ds.get("Modality", "")).upper())
        if code:
            out.add(code)
    return out


def input_dataset_name(inp) -> str:
    """The dataset name of an ``--input`` (``input-<name>``), for the report and the model name.

    Never a bundled dataset's name (``ct`` ...), and never an identifier: a name that matches an
    identifier rule is replaced by a hash.
    """
    import re

    from medsynth.deid import identifier_rule, pseudonym

    stem = inp.resolve().name.removesuffix(".gz").rsplit(".", 1)[0] if inp.is_file() else inp.resolve().name
    slug = re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")[:40]
    if not slug or identifier_rule(stem) is not None:
        slug = pseudonym(stem, "dataset", 10)
    return f"input-{slug}"


FOLDER_HINT = ("pass --classes NAME[,NAME...]: a single name labels every image, several names are matched "
               "to folders named after them")


def input_classes(inp, fmt: str, declared: str | None) -> list[str]:
    """The class names of an ``--input``: ``--classes``, else (image folders only) the class folders.

    Folder names become class names in every artifact, so each must pass the identifier rules
    (:func:`medsynth.deid.check_name`). DICOM and NIfTI folders are named after patients, studies
    and series far more often than after classes: their folder names are never taken as classes.

    Raises:
        InputError: the input does not exist, or a class folder's name looks like an identifier.
    """
    import sys

    from medsynth.deid import check_name
    from medsynth.errors import InputError
    from medsynth.readers import SourceFormat, detect_format

    if not inp.exists():
        raise InputError(f"{inp}: no such file or folder (--input takes a path; check its spelling)")
    names = [c.strip() for c in (declared or "").split(",") if c.strip()]
    if names:
        return names
    kind = detect_format(inp) if fmt == "auto" else fmt
    if kind == SourceFormat.IMAGE_FOLDER:
        folders = _folder_classes(inp)
        for name in folders:
            check_name(name, "a class folder's name under --input (folder names become class names)", FOLDER_HINT)
        if folders:
            return folders
    elif inp.is_dir() and any(d.is_dir() and not d.name.startswith(".") for d in inp.iterdir()):
        print("medsynth ingest: note: folder names under a DICOM/NIfTI --input are not used as class names "
              "(they often hold patient names or record numbers); every image is class 'unlabelled' -- "
              + FOLDER_HINT, file=sys.stderr)
    return ["unlabelled"]


def _folder_classes(root) -> list[str]:
    """Class names of an image folder laid out as ``[split/]class/*.png`` (sorted), else []."""
    from medsynth.readers.image_folder import SPLIT_NAMES

    if not root.is_dir():
        return []
    names = set()
    for d in root.iterdir():
        if not d.is_dir() or d.name.startswith("."):
            continue
        if d.name.lower() in SPLIT_NAMES:
            names.update(x.name for x in d.iterdir() if x.is_dir() and not x.name.startswith("."))
        else:
            names.add(d.name)
    return sorted(names)
