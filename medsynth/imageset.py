"""Image sets people bring to ``medsynth evaluate --images PATH``: another generator's outputs,
a published model's samples, degraded real images.

Two formats:

* an ``.npz`` with ``images``: uint8 ``[N, H, W]`` (``[N, 1, H, W]`` is accepted too) and,
  optionally, ``labels``: ``[N]`` class indices of the prepared dataset (0..K-1) or class names;
* a folder of 8-bit PNG files, either flat or with one subfolder per class (named as the prepared
  dataset's classes; ``HeadCT`` matches ``CT/HeadCT``). Colour PNGs are read as luminance.

Images must be square at the prepared data's resolution: they are scored as they are, never
resized behind the user's back. Every problem is one :class:`InputError` naming the file and the
reason; hidden files (``.name``) are ignored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsynth.errors import InputError

MAX_IMAGES = 10_000  # the same bound as evaluate.n_generated: distances and C2ST stay affordable


@dataclass
class LoadedImages:
    """A user's image set: uint8 ``images [N, R, R]``, ``labels`` int64 ``[N]`` or None."""

    path: Path
    images: np.ndarray
    labels: np.ndarray | None
    sha256: str
    fmt: str  # "npz" | "png-folder"


def load_image_set(path: str | os.PathLike, resolution: int, classes: list[str]) -> LoadedImages:
    """Read and check an image set for scoring against prepared data of ``resolution`` px and ``classes``.

    Raises:
        InputError: missing path, unknown format, wrong dtype/shape, empty set, non-image files,
            labels that do not name the dataset's classes, or another resolution.
    """
    from medsynth.fileio import sha256_file, sha256_tree

    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: not found (give an .npz file or a folder of PNG images)")
    if p.is_dir():
        images, labels = _read_folder(p, classes)
        fmt, digest = "png-folder", sha256_tree(p)
    elif p.suffix.lower() == ".npz":
        images, labels = _read_npz(p, classes)
        fmt, digest = "npz", sha256_file(p)
    else:
        raise InputError(f"{p}: unknown format {p.suffix or '(no suffix)'!r}; give an .npz file or a folder of PNGs")
    if len(images) == 0:
        raise InputError(f"{p}: no images (the set is empty)")
    if len(images) > MAX_IMAGES:
        raise InputError(f"{p}: {len(images)} images; score at most {MAX_IMAGES} (take a random subset)")
    h, w = images.shape[1:]
    if (h, w) != (resolution, resolution):
        raise InputError(f"{p}: images are {h}x{w} px but the prepared data is {resolution}x{resolution} px "
                         f"(score them against data preprocessed at that resolution, or resize them)")
    return LoadedImages(p, np.ascontiguousarray(images), labels, digest, fmt)


def _read_npz(p: Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:  # noqa: BLE001 - zipfile/numpy raise several types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(f"{p}: not a readable .npz archive ({first})") from None
    if "images" not in arrays:
        raise InputError(f"{p}: no 'images' array (found: {', '.join(sorted(arrays)) or 'nothing'})")
    x = arrays["images"]
    if x.dtype != np.uint8:
        raise InputError(f"{p}: 'images' is {x.dtype}; expected uint8 grey levels 0..255")
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 3:
        raise InputError(f"{p}: 'images' has shape {tuple(x.shape)}; expected [N, H, W] (grayscale)")
    labels = None
    if "labels" in arrays:
        y = arrays["labels"]
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1 or len(y) != len(x):
            raise InputError(f"{p}: 'labels' has shape {tuple(y.shape)}; expected one label per image ([{len(x)}])")
        labels = _label_indices(p, y, classes)
    return x, labels


def _label_indices(p: Path, y: np.ndarray, classes: list[str]) -> np.ndarray:
    """Integer class indices from integer labels or class names."""
    from medsynth.readers.image_folder import match_class

    if y.dtype.kind in "iu":
        bad = (y < 0) | (y >= len(classes))
        if bad.any():
            raise InputError(f"{p}: label {int(y[bad][0])} is not a class index 0..{len(classes) - 1} "
                             f"({', '.join(classes)})")
        return y.astype(np.int64)
    if y.dtype.kind in "US":
        names = [v.decode() if isinstance(v, bytes) else str(v) for v in y]
        index = {}
        for name in sorted(set(names)):
            hit = match_class(name, classes)
            if hit is None:
                raise InputError(f"{p}: label {name!r} names no class of the prepared data ({', '.join(classes)})")
            index[name] = classes.index(hit)
        return np.array([index[n] for n in names], np.int64)
    raise InputError(f"{p}: 'labels' is {y.dtype}; expected integer class indices or class names")


def _read_folder(p: Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
    from medsynth.readers.image_folder import match_class

    entries = sorted(e for e in p.iterdir() if not e.name.startswith("."))
    dirs = [e for e in entries if e.is_dir()]
    files = [e for e in entries if e.is_file()]
    if dirs and files:
        raise InputError(f"{p}: mixes files ({files[0].name}) and class folders ({dirs[0].name}); "
                         "use one or the other")
    if not dirs:
        return _read_pngs(p, files), None
    images, labels = [], []
    for d in dirs:
        hit = match_class(d.name, classes)
        if hit is None:
            raise InputError(f"{d}: folder name names no class of the prepared data ({', '.join(classes)})")
        inner = sorted(e for e in d.iterdir() if not e.name.startswith("."))
        if sub := next((e for e in inner if e.is_dir()), None):
            raise InputError(f"{sub}: nested folder; expected <class>/<image>.png")
        x = _read_pngs(d, inner)
        images.append(x)
        labels.append(np.full(len(x), classes.index(hit), np.int64))
    x = np.concatenate(images) if images else np.zeros((0, 0, 0), np.uint8)
    return x, (np.concatenate(labels) if labels else None)


def _read_pngs(folder: Path, files: list[Path]) -> np.ndarray:
    from medsynth.readers.image_folder import load_gray

    out = []
    for f in files:
        if f.suffix.lower() != ".png":
            raise InputError(f"{f}: not a PNG image (only .png files are read; remove it or convert it)")
        try:
            a = load_gray(f)
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for a bad file
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise InputError(f"{f}: not a readable PNG ({first})") from None
        if a.dtype != np.uint8:
            raise InputError(f"{f}: {a.dtype} pixels (16-bit or float PNG); expected 8-bit grey levels")
        if out and a.shape != out[0].shape:
            raise InputError(f"{f}: {a.shape[0]}x{a.shape[1]} px while {files[0].name} is "
                             f"{out[0].shape[0]}x{out[0].shape[1]} px; all images must have one size")
        out.append(a)
    if not out:
        raise InputError(f"{folder}: no PNG images (the set is empty)")
    return np.stack(out)
