"""``medsynth generate``: write a synthetic dataset from a trained generator.

The output is an ``.npz`` (``images`` uint8 [N,H,W], ``labels``, ``classes``, ``synthetic``) or a
folder of PNG (or DICOM Secondary Capture) files, every file marked SYNTHETIC in its name, its
metadata and, by default, a visible band in its pixels; beside it ``<out>.manifest.json`` (npz) or
``<folder>/manifest.json`` records the model, version, seed, classes, precision and time.

The model is ``--model-uri`` (``models:/<name>@champion``, ``models:/<name>/3``, ``runs:/...``), a
``generator.pt`` path, or ``zoo:<dataset>`` (a shipped champion, checked against its sha256); by
default the registered champion of the configured dataset (``ingest.dataset``), else that dataset's
shipped champion.
"""

from __future__ import annotations

import argparse

MAX_N = 10_000  # images per call (bounds memory: 10k x 64 x 64 uint8 is 41 MB)


def register(sub: argparse._SubParsersAction) -> None:
    from medsynth.cli import add_common

    p = sub.add_parser("generate", help="write N synthetic images (npz, PNG or DICOM) from a trained generator",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p)
    p.add_argument("--n", type=int, required=True, help=f"number of images (1..{MAX_N})")
    p.add_argument("--model-uri", default=None,
                   help="models:/<name>@<alias>, models:/<name>/<version>, runs:/..., a generator.pt path or "
                   "zoo:<dataset> (default: the configured dataset's champion, else its shipped champion)")
    p.add_argument("--class", dest="class_name", default=None,
                   help="generate only this class (conditional models; default: every class in turn)")
    p.add_argument("--seed", type=int, default=0, help="seed of the latent vectors (same seed, same images)")
    p.add_argument("--truncation", type=float, default=1.0, help="latent scale in (0, 1] (lower: less varied)")
    p.add_argument("--format", choices=["npz", "png", "dicom"], default=None,
                   help="output format (default: npz when --out ends in .npz, else png)")
    p.add_argument("--no-band", action="store_true", help="PNG: leave out the visible SYNTHETIC band")
    p.add_argument("--out", required=True, help="an .npz file or a folder (created; must be empty)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import time

    from medsynth.cli import Context
    from medsynth.components.generate import GenerateRequest, generate_dataset

    ctx = Context(args)
    t0 = time.perf_counter()
    req = GenerateRequest(n=args.n, seed=args.seed, class_name=args.class_name, truncation=args.truncation,
                          fmt=args.format, band=not args.no_band, model_uri=args.model_uri)
    res = generate_dataset(ctx.project, ctx.params, ctx.overrides, req, args.out)
    print(f"wrote {res.n} SYNTHETIC images ({res.resolution} px, {res.classes_desc}) from {res.model} "
          f"into {res.out} ({res.fmt}, {res.precision}) in {time.perf_counter() - t0:.1f}s; manifest {res.manifest}")
    return 0
