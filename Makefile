# medsynth: the two commands are `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.medsynth-installed

.PHONY: demo test test-fast lint system-deps venv clean bench loop-demo study augment zoo readme-gate

venv: $(STAMP)

# Re-installs only when pyproject.toml changes; otherwise this is a no-op.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# Debian packages the tests use (PostgreSQL for the MLflow server test, Chromium for the browser
# test); installed once, skipped when present.
system-deps:
	@bash infra/scripts/system-deps.sh

demo: $(STAMP)
	$(BIN)/medsynth demo

test: $(STAMP) system-deps
	MEDSYNTH_QUIET=1 $(BIN)/python -m pytest -q --durations=15

test-fast: $(STAMP)
	MEDSYNTH_QUIET=1 $(BIN)/python -m pytest -q -m "not slow and not server and not browser"

# The continuous loop on real chest X-rays: champion -> drifted batch -> trigger -> retraining ->
# gate -> re-check (about 10 minutes on 2 CPU cores with these small training settings).
loop-demo: $(STAMP)
	$(BIN)/medsynth monitor loop --set ingest.dataset=cxr --set train.profile=smoke \
		--set features.per_class_train=200 --set features.epochs=2 --set evaluate.n_generated=500

# The GAN study: DCGAN vs cGAN x {X-ray, CT, MRI, multi-modality} x seeds, each a tracked train ->
# evaluate run; docs/RESULTS.md is then written from MLflow. STUDY_PROFILE=quick (about 30 min on 2 CPU
# cores) | full (64 px, long training: for a GPU) | micro (one cell, a minute). Re-run to resume.
STUDY_PROFILE ?= quick
study: $(STAMP)
	$(BIN)/medsynth study --profile $(STUDY_PROFILE)

# The augmentation question at 64 px: real + synthetic (the shipped pneumonia generator) against
# duplicated-real controls, 5 seeds, paired intervals; its block in docs/RESULTS.md (~20-25 min, 2 cores).
augment: $(STAMP)
	$(BIN)/medsynth study --augment

# The shipped champions (training/zoo/): one trained generator per bundled dataset, each with its
# evaluation report, metrics and model card, recorded in training/zoo/MANIFEST.json (sha256, sizes).
# Resumable: re-running continues each training from its checkpoint under artifacts/zoo/.
ZOO_DATASETS ?= ct pneumonia mri cxr multi
zoo: $(STAMP)
	@for d in $(ZOO_DATASETS); do $(BIN)/medsynth zoo build $$d || exit 1; done

# Benchmarks (figures go to docs/BENCHMARKS.md; run on an otherwise idle machine).
bench: $(STAMP)
	$(BIN)/python bench/bench_prep.py --repeats 3 --write docs/BENCHMARKS.md
	$(BIN)/python bench/bench_train.py
	$(BIN)/python bench/bench_eval.py --write docs/BENCHMARKS.md
	$(BIN)/python bench/bench_monitor.py
	$(BIN)/python bench/bench_app.py --train-steps 30 --write docs/BENCHMARKS.md

# README's table of the gate's floors, rewritten from params.yaml (the only place the numbers live).
readme-gate: $(STAMP)
	$(BIN)/python -c "from medsynth.components.gate import write_policy_table; write_policy_table('README.md')"

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf artifacts .medsynth test-artifacts
