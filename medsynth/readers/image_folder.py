"""Folders of PNG/JPEG (also BMP/TIFF) organised by class: ``root/[split/]<class>/*.png``.

The class is the image's nearest folder whose name matches a declared class (``src.classes``,
compared exactly, then case-insensitively, then as the last part of a prefixed name such as
``CT/HeadCT``). With no classes declared, the folder name itself is the class (ingest then checks
it against the dataset's classes). A source with a single class needs no class folders. An optional
folder ``train``/``val``/``test`` (also ``valid``, ``validation``) above the class folders sets the
split. Images are converted to grayscale (8-bit stays uint8, 16-bit stays uint16, float stays
float32); a file that cannot be decoded goes to quarantine with its reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from medsynth.dataset import ImageRecord
from medsynth.deid import scrub_path, scrub_text
from medsynth.errors import InputError
from medsynth.readers.base import IMAGE_EXTS, Format, Reject, SourceConfig, rel

SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "test": "test", "testing": "test"}
MAX_SIDE = 8192  # bound on an image's height/width (user-controlled size)


def source_files(path: Path) -> list[Path]:
    """Every non-hidden file under ``path`` (or ``path`` itself), in a stable order."""
    if path.is_file():
        return [path]
    return sorted(
        p for p in path.rglob("*")
        if p.is_file() and not any(part.startswith((".", "__")) for part in p.relative_to(path).parts)
    )


def match_class(name: str, classes: list[str]) -> str | None:
    """The declared class a folder name stands for, or None."""
    for test in (lambda c: c == name, lambda c: c.lower() == name.lower(),
                 lambda c: c.rsplit("/", 1)[-1].lower() == name.lower()):
        hits = [c for c in classes if test(c)]
        if len(hits) == 1:
            return hits[0]
    return None


def split_and_class(dirs: list[str], src: SourceConfig, where: str) -> tuple[str, str]:
    """(split, class name) of a file from the folders between the source root and the file.

    Raises:
        InputError: several classes are declared and no folder names one of them, or a class
            folder names no declared class.
    """
    split = next((SPLIT_NAMES[d.lower()] for d in dirs if d.lower() in SPLIT_NAMES), "")
    class_dirs = [d for d in dirs if d.lower() not in SPLIT_NAMES]
    if not src.classes:
        if not class_dirs:
            raise InputError(f"{where}: no class folder above it and the source declares no classes")
        return split, class_dirs[-1]
    for d in reversed(class_dirs):
        hit = match_class(d, src.classes)
        if hit is not None:
            return split, hit
    if len(src.classes) == 1:
        return split, src.classes[0]
    raise InputError(
        f"{where}: no folder on its path names a declared class ({', '.join(src.classes)}); "
        "organise files as <class>/<file> or declare the classes"
    )


def error_text(exc: BaseException, f: Path, source: str) -> str:
    """An exception's first line fit to store: the file's real path replaced by its manifest path,
    any token that matches an identifier rule hashed."""
    msg = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    msg = msg.replace(str(f.resolve()), source).replace(str(f), source).replace(f.name, source.rsplit("/", 1)[-1])
    return scrub_text(msg)[:200]


def load_gray(path: Path) -> np.ndarray:
    """Decode one image file to a 2D grayscale array; raises ValueError/OSError when it cannot."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        if im.width > MAX_SIDE or im.height > MAX_SIDE:
            raise ValueError(f"{im.width}x{im.height} px is larger than {MAX_SIDE} px per side")
        im.load()  # full decode now: truncated/corrupt data fails here, not later
        im = ImageOps.exif_transpose(im)  # JPEGs from cameras/phones store rotation in EXIF
        if im.mode in ("I;16", "I;16B", "I;16L"):
            return np.asarray(im, dtype=np.uint16)
        if im.mode == "I":
            a = np.asarray(im)
            return a.astype(np.uint16) if a.min() >= 0 and a.max() <= 65535 else a.astype(np.float32)
        if im.mode == "F":
            return np.asarray(im, dtype=np.float32)
        # RGB/RGBA/P/LA/CMYK/1 -> 8-bit luma (ITU-R 601-2), the usual gray of an exported image
        return np.asarray(im.convert("L"), dtype=np.uint8)


def read_image_folder(src: SourceConfig, path: Path, reject: Reject, rel_root: Path) -> Iterator[ImageRecord]:
    """Yield one record per image file under ``path``.

    Raises:
        InputError: the folder holds no image files, or its class folders do not match the classes.
    """
    from PIL import Image

    files = source_files(path)
    images = [f for f in files if f.suffix.lower() in IMAGE_EXTS]
    if not images:
        raise InputError(f"{path}: no PNG/JPEG images found")
    root = path if path.is_dir() else path.parent
    key = rel(path, rel_root)  # the source folder as the manifest names it: ids stay unique across sources
    for f in files:
        source = rel(f, rel_root)
        if f.suffix.lower() not in IMAGE_EXTS:
            reject(source, f"{source}: not an image file (expected {', '.join(sorted(IMAGE_EXTS))})")
            continue
        inner = scrub_path(f.relative_to(root).as_posix())
        split, class_name = split_and_class(list(f.relative_to(root).parts[:-1]), src, source)
        try:
            img = load_gray(f)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:  # PIL's errors for bad files
            reject(source, f"{source}: cannot decode image ({error_text(exc, f, source)})")
            continue
        if min(img.shape) < 1:
            reject(source, f"{source}: empty image {img.shape}")
            continue
        yield ImageRecord(
            image=img,
            id=f"{key}:{inner}",
            source_file=source,
            source_format="image",
            modality=src.modality.value,
            class_name=class_name,
            split=split,
        )


FORMAT = Format(name="image_folder", read=read_image_folder, claims=lambda p: p.suffix.lower() in IMAGE_EXTS,
                rank=1, whole_file=False, expects="a folder of PNG/JPEG/BMP/TIFF images")
