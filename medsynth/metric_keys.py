"""The metrics.json schema: every key an evaluation writes, defined once (no imports, core).

``medsynth evaluate`` (components/evaluate.py, its stages in components/eval_scores.py) writes these
flat keys to metrics.json; the same numbers are the evaluate run's MLflow metrics and, prefixed
``metric.``, the registered version's tags. The gate, promote, the evaluation report, the study
report, the CLI and the app read them back through the names below, never as string literals.

A new metric: add its constant here (and a row to the table), write it from the stage result's
``entries()`` in components/eval_scores.py, read it through the constant. A key that does not apply
is absent (never NaN), so a reader treats "absent" as "not measured".

Families of keys are built by the helpers, not spelled out:

- :func:`floor` ``<key>_floor``: the same score of a real-train sample of the compared set's size
  against the real test split (what "as good as real" scores);
- :func:`lo` / :func:`hi` ``<key>_lo`` / ``<key>_hi``: interval ends (FID-domain: bootstrap 5th/95th
  percentiles; C2ST: 95 % interval);
- :func:`per_class` ``<metric>_class_<class>`` (conditional sets; ``class_key`` makes
  ``CT/HeadCT`` -> ``ct_headct``), :func:`cond_accuracy_of` ``cond_accuracy_<class>`` (the judge);
- :func:`prdc`, :func:`privacy`, :func:`utility`: ``prdc_<name>``, ``privacy_<name>``,
  ``utility_<acc|auc|n_train>_<training set>``.

=====================================================  =============================================
key                                                    meaning
=====================================================  =============================================
what was scored
conditional (bool)                                     the set carries one requested label per image
n_generated, n_real_test, n_real_train, n_floor        image counts (compared, real test, real train,
                                                       real-train floor sample)
real_reference (bool)                                  the "generator" returned real images
model_uri (str), source (generator|images|reference)   what was scored (promote checks it)
distribution (compared set vs the real test split, domain extractor features; lower FID/KID is better)
fid_domain, kid_domain_mean, kid_domain_std            FID-domain / KID-domain of the compared set
kid_subset_size[_floor]                                KID subset size used (bounded by the set sizes)
fid_domain_floor, kid_domain_floor_mean|_std           the same of the real-train floor sample
fid_domain_ratio_to_floor                              fid_domain / fid_domain_floor
fid_domain[_floor|_ratio_to_floor]_lo|_hi              paired bootstrap 5th/95th percentiles
                                                       (evaluate.bootstrap draws; absent when 0)
prdc_precision|recall|density|coverage[_floor]         Naeem et al. 2020, k = evaluate.prdc_k
detectability (C2ST, absent when evaluate.c2st is off)
c2st_auc, c2st_auc_lo, c2st_auc_hi                     ROC AUC (0.5 = indistinguishable), 95 % interval
c2st_auc_floor[_lo|_hi]                                real train vs real test control, same count
c2st_n_real, c2st_n_synth, c2st_n_floor, c2st_seconds  images used per side; wall time of all C2STs
c2st_auc_<16|32>px[_lo|_hi|_floor][_class_<c>]         the same with both sets brought down to 16 / 32 px
                                                       (antialiased): anatomy, layout and modes rather
                                                       than pixel texture (the gate judges at 16 px)
coarse view (both sets down to 16 px and back up, then the domain extractor)
fid_domain_16px[_floor|_ratio_to_floor][_lo|_hi],      FID-domain, PRDC at that scale; per class too
prdc_recall|coverage_16px[_floor], ..._class_<c>       (mode dropping: recall; missing modes: coverage)
pixel similarity and diversity
nn_ssim_mean, nn_psnr_mean[_floor]                     to the nearest real test image
diversity_ms_ssim_generated|_real,                     between random pairs; lower = more diverse
diversity_ssim_generated|_real
conditional sets (the judge and per class)
cond_majority_share                                    what a judge ignoring the image scores
cond_judge (str), cond_in_domain_share,                the judge, share it places in the dataset's
cond_rejected_share                                    classes, share out of domain at full res (reported)
cond_accuracy, cond_accuracy_<class>                   images the judge sees as the requested class
                                                       (through the 32 px coarse view, JUDGE_PX)
fid_domain[_floor]_class_<c>, prdc_coverage[_floor]_class_<c>,
diversity_ms_ssim_generated|real_class_<c>,            per class beside the real floor at that count
c2st_auc[_lo|_hi]_class_<c>                            (the worst class decides in the gate)
privacy (nearest training image of each compared image vs the training set's own NN distances)
privacy_near_copy_share, privacy_n_near_copies         near-copies (closer than near_copy_ratio x the
privacy_near_copy_threshold                            training set's median own NN distance)
privacy_synth_nn_median|_min, privacy_train_nn_median, NN distances (RMS on [0, 1]); ratio < 1:
privacy_train_nn_p5, privacy_nn_median_ratio           closer to training than training to itself
privacy_share_below_train_p5                           below the training 5th percentile (~0.05 = fine)
utility (>= 2 classes; classifiers tested on the real test split)
utility_acc|auc|n_train_real, _real_plus_synth,        trained on (a) real, (b) real + synthetic,
_synth_only, _real_dup                                 (c) synthetic only, (d) real duplicated to (b)
utility_pseudo_labels                                  1: synthetic labels came from classifier (a)
utility_cas_ratio                                      classification accuracy score (Ravuri & Vinyals
                                                       2019): ACC of (c) / ACC of (a)
utility_reference (dict|null)                          published MedMNIST v2 numbers for this class set
fid_standard[_floor]                                   ImageNet-Inception FID, only with local weights
status
unstable (bool), unstable_reasons (list[str])          fewer compared images than min_samples (fixable)
small_reference (bool), small_reference_reasons        the real test/train split is below min_samples
per_class_unstable (list[str]), notes (list[str])      classes with too few images; what to know
gate_floors_passed (bool),                             the gate's absolute floors (promote.gate) on
gate_floors {name: {value, limit, passed, detail}}     these numbers (components/gate.py)
gate_policy_sha256, gate_grade, gate_grade_reason      the policy they were judged under; the grade
                                                       (refused | usable | near-real) and why
timing_s {stage: wall s}, seconds                      wall time per stage and in all
protocol {backbone, extractor_sha256, data_hash,       how it was measured (extractor, data, C2ST and
model_uri, source, source_sha256, c2st, gate_policy,   bootstrap settings, gate policy, config, ...)
config, ...}
=====================================================  =============================================
"""

from __future__ import annotations

# -- what was scored --
CONDITIONAL = "conditional"
N_GENERATED = "n_generated"
N_REAL_TEST = "n_real_test"
N_REAL_TRAIN = "n_real_train"
N_FLOOR = "n_floor"
REAL_REFERENCE = "real_reference"
MODEL_URI = "model_uri"  # also a protocol entry and a registry protocol tag
SOURCE = "source"  # also a protocol entry

# -- distribution (FID-domain, KID-domain, PRDC) --
FID_DOMAIN = "fid_domain"
FID_DOMAIN_FLOOR = "fid_domain_floor"
FID_DOMAIN_RATIO_TO_FLOOR = "fid_domain_ratio_to_floor"
KID_DOMAIN_MEAN = "kid_domain_mean"
KID_DOMAIN_STD = "kid_domain_std"
KID_DOMAIN_FLOOR_MEAN = "kid_domain_floor_mean"
KID_DOMAIN_FLOOR_STD = "kid_domain_floor_std"
KID_SUBSET_SIZE = "kid_subset_size"
PRDC_PRECISION = "prdc_precision"
PRDC_RECALL = "prdc_recall"
PRDC_DENSITY = "prdc_density"
PRDC_COVERAGE = "prdc_coverage"
PRDC_PRECISION_FLOOR = "prdc_precision_floor"
PRDC_RECALL_FLOOR = "prdc_recall_floor"
PRDC_DENSITY_FLOOR = "prdc_density_floor"
PRDC_COVERAGE_FLOOR = "prdc_coverage_floor"

# -- detectability (C2ST) --
C2ST_AUC = "c2st_auc"
C2ST_AUC_FLOOR = "c2st_auc_floor"
C2ST_N_REAL = "c2st_n_real"
C2ST_N_SYNTH = "c2st_n_synth"
C2ST_N_FLOOR = "c2st_n_floor"
C2ST_SECONDS = "c2st_seconds"
C2ST_AUC_32PX = "c2st_auc_32px"  # at_px(C2ST_AUC, 32)
C2ST_AUC_16PX = "c2st_auc_16px"  # at_px(C2ST_AUC, 16): the gate's detectability scale
# -- the coarse view (16 px): FID-domain and PRDC of what survives downsampling --
FID_DOMAIN_16PX = "fid_domain_16px"
PRDC_RECALL_16PX = "prdc_recall_16px"
PRDC_COVERAGE_16PX = "prdc_coverage_16px"

# -- pixel similarity and diversity --
NN_SSIM_MEAN = "nn_ssim_mean"
NN_PSNR_MEAN = "nn_psnr_mean"
NN_SSIM_MEAN_FLOOR = "nn_ssim_mean_floor"
NN_PSNR_MEAN_FLOOR = "nn_psnr_mean_floor"
DIVERSITY_MS_SSIM_GENERATED = "diversity_ms_ssim_generated"
DIVERSITY_MS_SSIM_REAL = "diversity_ms_ssim_real"
DIVERSITY_SSIM_GENERATED = "diversity_ssim_generated"
DIVERSITY_SSIM_REAL = "diversity_ssim_real"

# -- conditional sets: the judge --
COND_ACCURACY = "cond_accuracy"
COND_MAJORITY_SHARE = "cond_majority_share"
COND_IN_DOMAIN_SHARE = "cond_in_domain_share"
COND_REJECTED_SHARE = "cond_rejected_share"
COND_JUDGE = "cond_judge"

# -- privacy: privacy_<name of medsynth.metrics.Privacy.summary()> --
PRIVACY_NEAR_COPY_SHARE = "privacy_near_copy_share"
PRIVACY_N_NEAR_COPIES = "privacy_n_near_copies"
PRIVACY_NEAR_COPY_THRESHOLD = "privacy_near_copy_threshold"
PRIVACY_SYNTH_NN_MEDIAN = "privacy_synth_nn_median"
PRIVACY_TRAIN_NN_MEDIAN = "privacy_train_nn_median"
PRIVACY_NN_MEDIAN_RATIO = "privacy_nn_median_ratio"
PRIVACY_SHARE_BELOW_TRAIN_P5 = "privacy_share_below_train_p5"

# -- utility: utility_<acc|auc|n_train>_<training set> --
UTILITY_TRAINING_SETS = ("real", "real_plus_synth", "synth_only", "real_dup")  # (a), (b), (c), (d)
UTILITY_ACC_REAL = "utility_acc_real"
UTILITY_ACC_REAL_PLUS_SYNTH = "utility_acc_real_plus_synth"
UTILITY_ACC_SYNTH_ONLY = "utility_acc_synth_only"
UTILITY_ACC_REAL_DUP = "utility_acc_real_dup"
UTILITY_AUC_REAL = "utility_auc_real"
UTILITY_AUC_REAL_PLUS_SYNTH = "utility_auc_real_plus_synth"
UTILITY_AUC_SYNTH_ONLY = "utility_auc_synth_only"
UTILITY_AUC_REAL_DUP = "utility_auc_real_dup"
UTILITY_PSEUDO_LABELS = "utility_pseudo_labels"
UTILITY_CAS_RATIO = "utility_cas_ratio"  # ACC trained on synthetic only / ACC trained on real
UTILITY_REFERENCE = "utility_reference"

# -- ImageNet-Inception FID (local weights only) --
FID_STANDARD = "fid_standard"
FID_STANDARD_FLOOR = "fid_standard_floor"

# -- status, the gate's floors, timing, protocol --
UNSTABLE = "unstable"
UNSTABLE_REASONS = "unstable_reasons"
SMALL_REFERENCE = "small_reference"
SMALL_REFERENCE_REASONS = "small_reference_reasons"
PER_CLASS_UNSTABLE = "per_class_unstable"
NOTES = "notes"
GATE_FLOORS_PASSED = "gate_floors_passed"
GATE_FLOORS = "gate_floors"
GATE_POLICY_SHA256 = "gate_policy_sha256"
GATE_GRADE = "gate_grade"
GATE_GRADE_REASON = "gate_grade_reason"
TIMING_S = "timing_s"
SECONDS = "seconds"
PROTOCOL = "protocol"
# protocol entries that readers outside the evaluation report use (the gate's comparability check,
# promote's integrity check, the registry's eval.* tags merge them into the flat metrics)
BACKBONE = "backbone"
EXTRACTOR_SHA256 = "extractor_sha256"
DATA_HASH = "data_hash"
SOURCE_SHA256 = "source_sha256"

CLASS_INFIX = "_class_"


COARSE_PX = (32, 16)  # the coarse scales C2ST is reported at (beside full resolution)
GATE_PX = 16  # the coarse scale of the coarse view's FID-domain and PRDC
JUDGE_PX = 32  # the view the class judge (conditional accuracy) looks through: classes survive, grain does not


def at_px(key: str, px: int) -> str:
    """``<key>_<px>px``: the same score with both sets brought down to ``px`` (``c2st_auc`` -> ``c2st_auc_16px``)."""
    return f"{key}_{px}px"


def floor(key: str) -> str:
    """``<key>_floor``: the same score of the real-train floor sample (``fid_domain`` -> ``fid_domain_floor``)."""
    return f"{key}_floor"


def lo(key: str) -> str:
    """``<key>_lo``: the lower end of the key's interval."""
    return f"{key}_lo"


def hi(key: str) -> str:
    """``<key>_hi``: the upper end of the key's interval."""
    return f"{key}_hi"


def ratio_to_floor(key: str) -> str:
    """``<key>_ratio_to_floor`` (``fid_domain`` -> ``fid_domain_ratio_to_floor``)."""
    return f"{key}_ratio_to_floor"


def class_key(name: str) -> str:
    """A class name as part of a metrics key (``CT/HeadCT`` -> ``ct_headct``; idempotent)."""
    return "".join(ch if ch.isalnum() else "_" for ch in name).strip("_").lower()


def class_prefix(metric: str) -> str:
    """``<metric>_class_``: what every per-class key of ``metric`` starts with."""
    return f"{metric}{CLASS_INFIX}"


def per_class(metric: str, class_name: str) -> str:
    """``<metric>_class_<class>`` (``per_class("c2st_auc", "CT/HeadCT")`` -> ``c2st_auc_class_ct_headct``)."""
    return class_prefix(metric) + class_key(class_name)


def split_class(key: str) -> tuple[str, str]:
    """``prdc_coverage_class_headct`` -> (``prdc_coverage``, ``headct``); a whole-set key -> (key, "")."""
    base, _, cls = key.partition(CLASS_INFIX)
    return base, cls


def label_prefix(metric: str) -> str:
    """``<metric>_``: the judge's per-label keys ``cond_accuracy_<class>`` (no ``_class_`` infix)."""
    return f"{metric}_"


def cond_accuracy_of(class_name: str) -> str:
    """``cond_accuracy_<class>``: the judge's accuracy on images generated for that class."""
    return label_prefix(COND_ACCURACY) + class_key(class_name)


def prdc(name: str) -> str:
    """``prdc_<precision|recall|density|coverage>`` (medsynth.metrics.prdc's names)."""
    return f"prdc_{name}"


def privacy(name: str) -> str:
    """``privacy_<name>`` for each entry of medsynth.metrics.Privacy.summary()."""
    return f"privacy_{name}"


def utility(measure: str, training: str) -> str:
    """``utility_<acc|auc|n_train>_<real|real_plus_synth|synth_only|real_dup>``."""
    return f"utility_{measure}_{training}"
