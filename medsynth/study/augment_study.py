"""The augmentation question: does adding synthetic images to the real training set help a classifier?

A classifier (``training/classifier.SmallCNN``, the utility test's) is trained per *arm* and seed on
the real training split, with or without synthetic images from one generator, and scored on the
real test split. Every arm that adds synthetic images has a control that adds the same number of
*duplicated real* images instead (more steps alone can help; the synthetic images must beat that):

==================  ================================================================  ==============
arm                 training set                                                      control
==================  ================================================================  ==============
real                the real training split                                           -
synth_<s>           real + s x N synthetic, labels drawn with the real class shares    dup_<s>
dup_<s>             real + s x N real images drawn again (with replacement)            -
balance_synth       the minority class(es) topped up to the majority with synthetic    balance_dup
balance_dup         ... topped up with duplicated real images of that class            -
pretrain_synth      pre-trained on N synthetic images, then fine-tuned on real         pretrain_real
pretrain_real       pre-trained on the real split, then fine-tuned on it (2x epochs)   -
==================  ================================================================  ==============

Seeds change the classifier's initialisation and batch order, the synthetic images (generator
seed) and the duplicate draws. For each arm with a control the per-seed *paired* difference
(arm - control, same seed) is reported with a 95% t-interval: "separable over seeds" means the
interval excludes 0. The synthetic images are quantised to 8 bits first, as ``medsynth generate``
writes them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medsynth.errors import ConfigError

SECTION = "## The augmentation question: real + synthetic vs duplicated real (64 px)"
START, END = "<!-- augment:start -->", "<!-- augment:end -->"


@dataclass(frozen=True)
class AugmentSettings:
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    shares: tuple[float, ...] = (0.5, 1.0)  # synthetic images added, as a share of the real count
    epochs: int = 6  # per fit (pre-training and fine-tuning: each this many)
    batch_size: int = 128
    lr: float = 3e-3
    width: int = 16
    feature_dim: int = 64

    def check(self) -> None:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"augment: seeds must be distinct and at least one, got {self.seeds}")
        if any(not 0 < s <= 4 for s in self.shares):
            raise ConfigError(f"augment: shares must be in (0, 4], got {self.shares}")
        if not 1 <= self.epochs <= 100:
            raise ConfigError(f"augment: epochs must be in 1..100, got {self.epochs}")

    def arms(self) -> dict[str, str | None]:
        """arm -> its control (None: no control)."""
        out: dict[str, str | None] = {"real": None}
        for s in self.shares:
            out[f"synth_{s:g}"] = f"dup_{s:g}"
            out[f"dup_{s:g}"] = None
        out.update({"balance_synth": "balance_dup", "balance_dup": None,
                    "pretrain_synth": "pretrain_real", "pretrain_real": None})
        return out


@dataclass
class AugmentResult:
    generator: str
    dataset: str
    classes: list[str]
    n_train: int
    n_test: int
    class_counts: list[int]
    settings: AugmentSettings
    scores: dict[str, dict[int, tuple[float, float]]] = field(default_factory=dict)  # arm -> seed -> (acc, auc)
    n_images: dict[str, str] = field(default_factory=dict)  # arm -> training images per fit ("4690 + 4690")
    seconds: float = 0.0
    generator_sha256: str = ""  # of the generator file, when known (zoo entries, files)

    def differences(self, arm: str, control: str, metric: int) -> np.ndarray:
        """arm - control per seed (``metric`` 0 = ACC, 1 = AUC), in the settings' seed order."""
        return np.array([self.scores[arm][s][metric] - self.scores[control][s][metric] for s in self.settings.seeds])

    def paired(self, arm: str, control: str, metric: int) -> tuple[float, float, float]:
        """(mean, lo, hi) of the per-seed difference arm - control (95% t-interval)."""
        from scipy import stats

        d = self.differences(arm, control, metric)
        if len(d) < 2:
            return float(d.mean()), float("nan"), float("nan")
        half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
        return float(d.mean()), float(d.mean() - half), float(d.mean() + half)

    def p_value(self, arm: str, control: str, metric: int) -> float:
        """Two-sided paired t-test of arm - control over the seeds (nan with fewer than 2 seeds)."""
        from scipy import stats

        d = self.differences(arm, control, metric)
        if len(d) < 2:
            return float("nan")
        if d.std(ddof=1) == 0:
            return 0.0 if d.mean() else 1.0
        return float(stats.ttest_1samp(d, 0.0).pvalue)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AugmentResult:
        """Back from ``to_dict`` (the ``augment.json`` artifact of the MLflow run)."""
        st = d["settings"]
        settings = AugmentSettings(**{**st, "seeds": tuple(st["seeds"]), "shares": tuple(st["shares"])})
        scores = {a: {int(k): (float(v[0]), float(v[1])) for k, v in per.items()} for a, per in d["scores"].items()}
        return cls(**{**d, "settings": settings, "scores": scores})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["scores"] = {a: {str(s): v for s, v in per.items()} for a, per in self.scores.items()}
        return d


def _draw_labels(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.choice(y, size=n, replace=True).astype(np.int64)


def training_sets(arm: str, x: np.ndarray, y: np.ndarray, synth: Callable[[np.ndarray], np.ndarray],
                  rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """The fit(s) of one arm: one (x, y) set, or two (pre-training, fine-tuning) for ``pretrain_*``.

    ``synth(labels)`` returns synthetic images for those labels.
    """
    n = len(y)
    if arm == "real":
        return [(x, y)]
    kind, _, tail = arm.partition("_")
    if kind in ("synth", "dup"):
        m = int(round(float(tail) * n))
        if kind == "synth":
            ys = _draw_labels(y, m, rng)
            return [(np.concatenate([x, synth(ys)]), np.concatenate([y, ys]))]
        idx = rng.choice(n, size=m, replace=True)
        return [(np.concatenate([x, x[idx]]), np.concatenate([y, y[idx]]))]
    if kind == "balance":
        counts = np.bincount(y)
        extra_y = np.concatenate([np.full(counts.max() - c, k, np.int64) for k, c in enumerate(counts)])
        if tail == "synth":
            extra_x = synth(extra_y) if len(extra_y) else x[:0]
        else:
            extra_x = np.concatenate([x[rng.choice(np.where(y == k)[0], size=counts.max() - c, replace=True)]
                                      for k, c in enumerate(counts)])
        return [(np.concatenate([x, extra_x]), np.concatenate([y, extra_y]))]
    if arm == "pretrain_synth":
        ys = _draw_labels(y, n, rng)
        return [(synth(ys), ys), (x, y)]
    if arm == "pretrain_real":
        return [(x, y), (x, y)]
    raise ConfigError(f"augment: unknown arm {arm!r}")


def generator_sha256(ref: str) -> str:
    """sha256 of the generator behind ``zoo:<dataset>``, a generator.pt or its folder ("" for
    ``runs:/`` and ``models:/`` URIs: their run carries it)."""
    from medsynth.fileio import sha256_file
    from medsynth.generator import GENERATOR_FILE

    if ref.startswith("zoo:"):
        from medsynth.training import zoo_manifest

        entry = zoo_manifest.entries().get(ref.split(":", 1)[1])
        return entry.sha256 if entry else ""
    file = Path(ref)
    file = file / GENERATOR_FILE if file.is_dir() else file
    return sha256_file(file) if file.is_file() else ""


def check_generator(gen: Any) -> None:
    """The question needs labelled synthetic images: a conditional generator over >= 2 classes."""
    if len(gen.classes) < 2 or not gen.spec.num_classes:
        raise ConfigError("augment: the generator is unconditional or has one class; the question needs labelled "
                          "synthetic images (a cgan over the dataset's classes, e.g. zoo:pneumonia)")


class _Synth:
    """Labelled synthetic images of one seed; each call draws new ones (seed, call and chunk decide
    them), 8-bit as `medsynth generate` writes them."""

    def __init__(self, gen: Any, seed: int) -> None:
        self.gen, self.seed, self.calls = gen, seed, 0

    def __call__(self, labels: np.ndarray) -> np.ndarray:
        from medsynth.imaging import to_uint8, to_unit

        self.calls += 1
        out = [self.gen.generate(min(2000, len(labels) - i), seed=10_000 * self.seed + 100 * self.calls + i // 2000,
                                 labels=labels[i : i + 2000]) for i in range(0, len(labels), 2000)]
        return to_unit(to_uint8(np.concatenate(out)))


def _sd(a: np.ndarray) -> float:
    return float(a.std(ddof=1)) if len(a) > 1 else 0.0


def run(gen: Any, data: Any, settings: AugmentSettings = AugmentSettings(), generator_ref: str = "",
        dataset: str = "", log: Callable[[str], None] = print) -> AugmentResult:
    """Every arm x seed; ``gen`` a conditional ImageGenerator over ``data``'s classes."""
    from medsynth.metrics import accuracy_auc
    from medsynth.training.classifier import TrainSettings, predict_proba, train_classifier

    settings.check()
    check_generator(gen)
    if [c.lower() for c in gen.classes] != [c.lower() for c in data.classes]:
        raise ConfigError(f"augment: generator classes {gen.classes} differ from the data's {data.classes}")
    if gen.resolution != data.resolution:
        raise ConfigError(f"augment: generator makes {gen.resolution} px, the data is {data.resolution} px")
    x, y = data.split("train")
    xt, yt = data.split("test")
    res = AugmentResult(generator=generator_ref, dataset=dataset or str(data.meta.get("dataset", "?")), classes=list(data.classes),
                        n_train=len(y), n_test=len(yt), class_counts=np.bincount(y).tolist(), settings=settings)
    t0 = time.perf_counter()
    arms = settings.arms()
    for seed in settings.seeds:
        synth = _Synth(gen, seed)
        for k, arm in enumerate(arms):
            rng = np.random.default_rng([seed, k])
            fits = training_sets(arm, x, y, synth, rng)
            ts = TrainSettings(epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr,
                               feature_dim=settings.feature_dim, width=settings.width, seed=seed)
            model = None
            for fx, fy in fits:
                model, _ = train_classifier(fx, fy, data.num_classes, ts, init=model)
            acc, auc = accuracy_auc(predict_proba(model, xt), yt)
            res.scores.setdefault(arm, {})[seed] = (float(acc), float(auc))
            res.n_images[arm] = " + ".join(str(len(f[1])) for f in fits)
            log(f"augment seed {seed} {arm:15s} ACC {acc:.3f} AUC {auc:.3f} "
                f"({sum(len(f[1]) for f in fits)} images fitted, {time.perf_counter() - t0:.0f}s)")
    res.seconds = time.perf_counter() - t0
    return res


def _holm(p: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error over all comparisons)."""
    order = np.argsort(np.nan_to_num(p, nan=1.0))
    adj, running = [1.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * (1.0 if np.isnan(p[i]) else p[i])))
        adj[i] = running
    return adj


def render(res: AugmentResult, command: str, machine: str) -> str:
    """The marked Markdown block for docs/RESULTS.md."""
    s = res.settings
    arms = s.arms()
    counts = ", ".join(f"{c} {n}" for c, n in zip(res.classes, res.class_counts, strict=True))
    lines = [START, "",
             f"Generator `{res.generator}`" + (f" (sha256 {res.generator_sha256[:12]})" if res.generator_sha256 else "")
             + f" on {res.dataset} ({counts} real training images; {res.n_test} real test "
             f"images). Classifier: SmallCNN (width {s.width}, {s.feature_dim}-d features), {s.epochs} epochs per "
             f"fit, batch {s.batch_size}, AdamW {s.lr:g} one-cycle, flips and 1-pixel shifts; {len(s.seeds)} seeds "
             f"({', '.join(map(str, s.seeds))}). Synthetic images are 8-bit, as `medsynth generate` writes them.",
             "", f"Command: `{command}` ({res.seconds / 60:.0f} min on {machine}).", "",
             "| Arm | Training images (per fit) | ACC (mean ± sd) | AUC (mean ± sd) | vs control: ΔACC [95% CI] | ΔAUC [95% CI] |",
             "|---|---|---|---|---|---|"]
    tests = [(arm, control, m) for arm, control in arms.items() if control for m in (0, 1)]
    p_values = [res.p_value(*t) for t in tests]
    holm = _holm(p_values)
    verdicts = []
    for arm, control in arms.items():
        acc = np.array([res.scores[arm][k][0] for k in s.seeds])
        auc = np.array([res.scores[arm][k][1] for k in s.seeds])
        row = [arm, res.n_images.get(arm, ""), f"{acc.mean():.3f} ± {_sd(acc):.3f}", f"{auc.mean():.3f} ± {_sd(auc):.3f}"]
        if control:
            cells = []
            for metric, name in ((0, "ACC"), (1, "AUC")):
                m, lo, hi = res.paired(arm, control, metric)
                cells.append(f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}] vs {control}")
                verdict = ("better (separable)" if lo > 0 else "worse (separable)" if hi < 0 else "not separable")
                i = tests.index((arm, control, metric))
                p_adj = holm[i]
                after = ("also after Holm's correction" if p_adj < 0.05 else "not after Holm's correction")
                verdicts.append(f"- {arm} vs {control}, {name}: {m:+.3f} [{lo:+.3f}, {hi:+.3f}]: {verdict}"
                                + (f" (p = {p_values[i]:.3f}; {after}, "
                                   f"adjusted p = {p_adj:.3f})" if lo > 0 or hi < 0 else ""))
            row += cells
        else:
            row += ["", ""]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Paired per seed (arm - control, same seed), 95% t-interval; separable = the interval excludes 0. "
              f"With {len(tests)} comparisons about {0.05 * len(tests):.1f} would look separable by chance alone, so "
              "each separable one also carries its paired t-test p and Holm's step-down adjustment over all "
              f"{len(tests)}:", "", *verdicts, "", END]
    return "\n".join(lines)


def rewrite(project: Any, doc: Any, command: str) -> AugmentResult:
    """Render the newest ``augment`` run's results again into ``doc`` (no training)."""
    import json

    import mlflow

    from medsynth.errors import InputError
    from medsynth.fileio import put_block
    from medsynth.tracking import latest_run_id, setup_mlflow

    setup_mlflow(project, "study")
    run_id = latest_run_id({"medsynth.step": "augment"})
    if run_id is None:
        raise InputError("augment --report-only: no augment run in MLflow yet (run `medsynth study --augment`)")
    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="augment.json")
    res = AugmentResult.from_dict(json.loads(Path(path).read_text()))
    machine = mlflow.get_run(run_id).data.tags.get("medsynth.machine", "a machine not recorded")
    put_block(doc, render(res, command, machine), START, END, SECTION, default_title="# Results\n")
    return res


def run_tracked(project: Any, gen: Any, data: Any, settings: AugmentSettings, generator_ref: str, dataset: str,
                doc: Any, command: str, log: Callable[[str], None] = print,
                generator_sha256: str = "") -> AugmentResult:
    """``run`` as an MLflow run (experiment ``study``, step ``augment``), its block written into ``doc``."""
    import json
    import tempfile

    import mlflow

    from medsynth.fileio import put_block
    from medsynth.tracking import step_run
    from medsynth.training.resources import device_name

    bench_machine = device_name("cpu")
    with step_run(project, "augment", config={"augment": asdict(settings), "generator": generator_ref,
                                              "generator_sha256": generator_sha256},
                  data_hash=data.data_hash, experiment="study",
                  tags={"medsynth.generator": generator_ref, "medsynth.machine": bench_machine}):
        res = run(gen, data, settings, generator_ref, dataset, log)
        res.generator_sha256 = generator_sha256
        for arm in settings.arms():
            for i, name in enumerate(("acc", "auc")):
                vals = [res.scores[arm][k][i] for k in settings.seeds]
                mlflow.log_metric(f"{arm}_{name}_mean", float(np.mean(vals)))
        block = render(res, command, bench_machine)
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "augment.json").write_text(json.dumps(res.to_dict(), indent=2))
            (Path(tmp) / "augment.md").write_text(block)
            mlflow.log_artifacts(tmp)
    put_block(doc, block, START, END, SECTION, default_title="# Results\n")
    return res

