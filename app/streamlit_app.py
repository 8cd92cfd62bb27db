"""medsynth web app: generate synthetic medical images on demand, see how good the model is, compare with real.

Run with ``medsynth app`` (or ``streamlit run app/streamlit_app.py``). It reads the MLflow registry
that ``medsynth promote`` writes (embedded SQLite by default, ``MLFLOW_TRACKING_URI`` for a server),
serves the ``champion`` of the chosen model by default, and never shows a traceback: every failure
is one message that says what to do.

One screen, top to bottom (fits 1400 x 900 up to the Generate button):
1. Model and version (each version's standing in words: "champion · approved by X on DATE").
2. The model's quality in one plain verdict ("realistic" / "needs work", from the gate's floors) and
   three key figures read against what real images score; every measurement in an expander,
   grouped and explained; the model card as a document.
3. Class, number of images, seed -> Generate; options: compare with real images, nearest training
   image, live check of the batch, variety and morphing.
4. The images, right below; then the live check (with progress), downloads, feedback, and an About
   panel with the technical details (registry, precision).
"""

from __future__ import annotations

import os
import time

import numpy as np
import streamlit as st

from medsynth import __version__, export, registry
from medsynth.app import card, generation, live_eval, model_store, quality, settings
from medsynth.errors import MedsynthError
from medsynth.imaging import uint8_frames
from medsynth.tracking import first_line, redact, tracking_uri
from medsynth.training.loading import load_generator

BANNER = ("Every image captioned **SYNTHETIC** is made by a generative model: not a real patient, not for "
          "diagnosis or any clinical decision. Real images appear only where captioned **REAL**.")
COMPACT = """<style>
[data-testid="stMainBlockContainer"], .block-container {padding-top: 1.2rem; padding-bottom: 2rem;}
h3 {padding-top: 0.2rem;}
</style>"""


# ---- cached resources (keyed by everything that changes them) -------------------------------------

def _env_key() -> tuple[str, str, str]:
    return (os.environ.get("MEDSYNTH_HOME", ""), os.environ.get("MEDSYNTH_PARAMS", ""),
            os.environ.get("MLFLOW_TRACKING_URI", ""))


@st.cache_resource(max_entries=4, show_spinner="Loading the generator...")
def _generator(env: tuple[str, str, str], uri: str, bf16: bool):
    ctx = settings.load_context()
    return load_generator(uri, ctx.project, bf16=bf16)


@st.cache_resource(max_entries=4, show_spinner=False)
def _reference(env: tuple[str, str, str], uri: str, dataset: str, data_hash: str, resolution: int):
    ctx = settings.load_context()
    source, note = settings.reference_source(ctx, dataset, data_hash, resolution)
    scorer = settings.load_scorer(ctx)
    ref = live_eval.build_reference(source, scorer, size=ctx.cfg.reference_size, floor_pool=ctx.cfg.floor_pool,
                                    near_copy_ratio=ctx.cfg.near_copy_ratio, seed=ctx.project.seed)
    ref.notes.insert(0, f"reference: {note}")
    return ref


@st.cache_resource(max_entries=4, show_spinner="Loading real images...")
def _real_pool(env: tuple[str, str, str], dataset: str, data_hash: str, resolution: int):
    """Real images of the model's dataset (held-out split first) for "Compare with real"."""
    ctx = settings.load_context()
    source, _ = settings.reference_source(ctx, dataset, data_hash, resolution)
    split = "test" if source.count("test") >= 1 else "train"
    x, y = source.split(split)
    return x, np.asarray(y).reshape(-1), list(source.classes), split


@st.cache_data(ttl=30, show_spinner=False)
def _models(env: tuple[str, str, str]) -> list[str]:
    return model_store.list_models(settings.load_context().project)


@st.cache_data(ttl=30, show_spinner=False)
def _versions(env: tuple[str, str, str], name: str) -> list[model_store.ModelVersion]:
    # registry reads are cached briefly: every widget change reruns the page
    return model_store.list_versions(settings.load_context().project, name)


@st.cache_data(ttl=300, show_spinner=False)
def _run_experiment(env: tuple[str, str, str], run_id: str) -> str | None:
    from mlflow.tracking import MlflowClient

    model_store.connect(settings.load_context().project)
    try:
        return str(MlflowClient().get_run(run_id).info.experiment_id)
    except Exception:  # noqa: BLE001 - a card without a link is better than no card
        return None


@st.cache_data(ttl=300, show_spinner=False)
def _eval_run_for(env: tuple[str, str, str], model_uri: str) -> str | None:
    from medsynth.tracking import latest_run_id

    model_store.connect(settings.load_context().project)
    return latest_run_id({"medsynth.step": "evaluate", "medsynth.model_uri": model_uri})


# ---- 1. model and version --------------------------------------------------------------------------

def pick_model(ctx: settings.AppContext) -> model_store.ModelVersion | None:
    try:
        names = _models(_env_key())
    except model_store.NoModelError as exc:
        st.warning(str(exc))
        return None
    c = st.columns([2, 3, 4], vertical_alignment="bottom")
    name = c[0].selectbox("Model", names, key="model_name", help="Every registered model, shipped ones included.")
    versions = _versions(_env_key(), name)
    default = model_store.default_version(versions)
    by_version = {v.version: v for v in versions}
    picked = c[1].selectbox("Version", list(by_version), index=versions.index(default), key=f"version_{name}",
                            format_func=lambda v: by_version[v].label,
                            help="The champion is the version in service; others can be inspected.")
    mv = by_version[picked]
    st.session_state["_modality"] = settings.dataset_modality(ctx, mv.dataset, mv.classes)
    classes = ", ".join(generation.human_class_name(x, _modality()) for x in mv.classes) or "one kind (no classes)"
    c[2].markdown(f"**{_modality() or mv.dataset or 'images'}** · {classes}  \n:gray[{mv.status}]")
    return mv


# ---- 2. how good is it -----------------------------------------------------------------------------

def model_quality(ctx: settings.AppContext, mv: model_store.ModelVersion) -> None:
    v = quality.verdict(mv.metrics, mv.gate_checks)
    figs = quality.key_figures(mv.metrics)
    cols = st.columns([4, *([2] * len(figs))] if figs else [1])
    with cols[0]:
        box = {True: st.success, False: st.error, None: st.info}[v.ok]
        box(f"**Quality: {v.word}.** {v.sentence}")
    for col, f in zip(cols[1:], figs, strict=True):
        col.metric(f.label, f.value, help=f.help)
        col.caption(f.beside)
    groups = quality.metric_rows(mv.metrics, mv.gate_checks)
    warns = quality.warnings(groups)
    e1, e2 = st.columns(2)
    with e1.expander(f"All measurements ({len(warns)} warning sign{'s' if len(warns) != 1 else ''})"
                     if mv.metrics else "All measurements (none recorded)"):
        show_measurements(groups)
    with e2.expander("Model card"):
        show_card(ctx, mv, v)


def show_measurements(groups: dict[str, list[quality.Row]]) -> None:
    if not groups:
        st.markdown("_No measurements recorded for this version._")
        return
    st.caption("Measured by `medsynth evaluate` on thousands of images against the real test images. "
               "⚠️ marks a warning sign: a failed quality floor, or a value far from what real images score.")
    for group, rows in groups.items():
        st.markdown(f"**{group.capitalize()}**")
        if group == "run details":
            st.caption("Counts and settings of the evaluation run.")
        lines = ["| measurement | value | real images (or control) | better | what it means |",
                 "| --- | --- | --- | --- | --- |"]
        for r in rows:
            value = f":red[**{r.value}**]" if r.warning else r.value
            label = f"⚠️ {r.label}" if r.warning else r.label
            meaning = r.meaning + (f" — :red[{r.warning}]" if r.warning else "")
            lines.append(f"| {label} | {value} | {r.real} | {r.better} | {_cell(meaning)} |")
        st.markdown("\n".join(lines))


def _cell(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")


def _ui_base(ctx: settings.AppContext) -> str:
    uri = tracking_uri(ctx.project)
    return ctx.cfg.mlflow_ui_url or (uri if uri.startswith(("http://", "https://")) else "")


def show_card(ctx: settings.AppContext, mv: model_store.ModelVersion, v: quality.Verdict) -> None:
    stored = card.parse_stored(mv.card)
    lin = stored["lineage"]
    eval_id = card.known(lin.get("evaluation run"))
    if eval_id is None and mv.tags.get(registry.EVAL_MODEL_URI):
        eval_id = _eval_run_for(_env_key(), mv.tags[registry.EVAL_MODEL_URI])
    train_id = card.known(lin.get("training run"))
    base = _ui_base(ctx)

    def link(run_id: str | None) -> str:
        return card.run_link(run_id, _run_experiment(_env_key(), run_id) if run_id and base else None, base)

    classes = ", ".join(generation.human_class_name(x, _modality()) for x in mv.classes) or "unconditional"
    st.markdown(card.document(mv, stored, _modality(), classes, f"{v.word} ({v.sentence})", link(eval_id),
                              link(train_id)))
    if stored["config"]:
        st.caption("Training configuration")
        st.json(stored["config"], expanded=False)


# ---- 3. the controls -------------------------------------------------------------------------------

def controls(ctx: settings.AppContext, mv: model_store.ModelVersion, gen) -> generation.Request | None:
    """Class, count, seed, Generate on one row; the options below. Returns a checked request on a click."""
    cfg = ctx.cfg
    classes = list(gen.classes)
    c = st.columns([4, 2, 2, 2], vertical_alignment="bottom")
    class_index = generation.MIX
    if classes:
        class_index = c[0].selectbox(
            "Class", [generation.MIX, *range(len(classes))], key=f"class_{mv.name}",
            format_func=lambda i: "every class in turn" if i == generation.MIX else generation.human_class_name(
                classes[i], _modality()))
    else:
        c[0].markdown(f"**Class:** one kind of {_modality() or 'image'} (this model has no classes)")
    count = c[1].number_input(f"Images (1–{cfg.max_count})", value=cfg.default_count, step=1, key="count")
    seed_text = c[2].text_input("Seed", value="0", key="seed",
                                help=f"Any whole number 0–{settings.MAX_SEED}. The same seed gives the same images.")
    clicked = c[3].button("Generate", type="primary", key="generate", width="stretch")
    o = st.columns([2, 3, 3, 4], vertical_alignment="center")
    o[0].toggle("Compare with real", key="compare_real", help="Real images of the same class beside the synthetic ones.")
    o[1].toggle("Nearest training image", key="nearest",
                help="For each synthetic image, the most similar real training image: is it a copy? (privacy look)")
    o[2].toggle("Check the batch against real", value=cfg.live_eval, key="live_eval",
                help="A quick measurement of these images against real ones, after they are shown.")
    interp, seed_b_text, steps = False, "1", 8
    with o[3].expander("More options: variety, morphing"):
        trunc = st.slider("Variety (lower = more typical, less varied images)", cfg.min_truncation, 1.0, 1.0, 0.05,
                          key="truncation")
        if generation.supports_interpolation(gen):
            interp = st.checkbox("Morph from this seed to a second seed", key="interpolate")
            if interp:
                seed_b_text = st.text_input("Second seed", value="1", key="seed_b")
                steps = st.number_input(f"Steps (2–{cfg.max_interpolation_steps})", value=8, step=1, key="steps")
    if not clicked:
        return None
    seed = generation.parse_whole(seed_text, "Seed", 0, settings.MAX_SEED)
    seed_b = generation.parse_whole(seed_b_text, "Second seed", 0, settings.MAX_SEED) if interp else 1
    return generation.Request(count=int(count), seed=seed, class_index=int(class_index), truncation=float(trunc),
                            interpolate=bool(interp), seed_b=seed_b, steps=int(steps))


def run_generation(ctx: settings.AppContext, mv: model_store.ModelVersion, gen, req: generation.Request,
                   precision: str) -> None:
    generation.check_request(req, ctx.cfg.max_count, settings.MAX_SEED, ctx.cfg.max_interpolation_steps,
                           ctx.cfg.min_truncation, len(gen.classes))
    t0 = time.perf_counter()
    with st.spinner("Generating..."):
        images, labels = generation.generate(gen, req)
    gen_s = time.perf_counter() - t0
    lab = [] if labels is None else [int(v) for v in labels]
    record = export.GenerationRecord(
        model_name=mv.name, model_version=mv.version, seed=req.seed, labels=lab,
        label_names=export.label_names(lab, gen.classes) if lab else ["unconditional"] * len(images),
        truncation=req.truncation, count=len(images), resolution=int(gen.resolution), modality=_modality(),
        dataset=mv.dataset, mode="interpolate" if req.interpolate else "sample",
        seed_b=req.seed_b if req.interpolate else None, precision=precision,
    )
    st.session_state["batch"] = {"images": images, "labels": labels, "record": record, "gen_seconds": gen_s,
                                 "eval": None, "eval_error": None, "classes": list(gen.classes), "zip": None,
                                 "zip_band": None, "feedback": None, "uri": mv.uri, "dataset": mv.dataset,
                                 "data_hash": mv.data_hash}


# ---- 4. the images and what follows them ------------------------------------------------------------

def show_batch(ctx: settings.AppContext) -> None:
    batch = st.session_state.get("batch")
    if not batch:
        st.info("Choose a class, how many images and a seed, then press **Generate**.")
        return
    rec: export.GenerationRecord = batch["record"]
    u8 = uint8_frames(batch["images"])
    names = [generation.human_class_name(n, rec.modality) if n != "unconditional" else n for n in rec.label_names]
    what = ", ".join(dict.fromkeys(names))
    morph = f" → seed {rec.seed_b}, morphed" if rec.mode == "interpolate" else ""
    variety = "" if rec.truncation == 1.0 else f", variety {rec.truncation:g}"
    st.success(f"{rec.count} SYNTHETIC images from {rec.model_name} v{rec.model_version} (seed {rec.seed}{morph}"
               f"{variety}) · {what} · {batch['gen_seconds'] * 1000:.0f} ms")
    px = ctx.cfg.display_px
    synth = [generation.enlarge(x, px) for x in u8]
    caps = [f"SYNTHETIC #{i} · {n}" for i, n in enumerate(names)]
    if st.session_state.get("compare_real"):
        left, right = st.columns(2)
        left.markdown("**SYNTHETIC** (generated)")
        left.image(synth, caption=caps, width=px)
        with right:
            show_real(ctx, batch, px)
    else:
        st.image(synth, caption=caps, width=px)
    if st.session_state.get("live_eval", True) or st.session_state.get("nearest"):
        show_eval(ctx, batch, u8, names)
    d, f = st.columns(2)
    with d.expander("Download: PNG, DICOM and the generation parameters"):
        show_export(ctx, batch)
    with f.expander("Rate these images"):
        show_feedback(ctx, batch)


def show_real(ctx: settings.AppContext, batch: dict, px: int) -> None:
    """Real images of the same class as each synthetic one, from the prepared data (held-out split first)."""
    rec: export.GenerationRecord = batch["record"]
    try:
        x, y, pool_classes, split = _real_pool(_env_key(), batch["dataset"], batch["data_hash"], rec.resolution)
    except MedsynthError as exc:
        st.warning(f"No real images to compare with: {exc}")
        return
    rng = np.random.default_rng(rec.seed)
    picks = []
    for name in rec.label_names:
        cls = pool_classes.index(name) if name in pool_classes else None
        idx = np.flatnonzero(y == cls) if cls is not None else np.arange(len(x))
        picks.append(int(rng.choice(idx)) if len(idx) else int(rng.integers(len(x))))
    real = uint8_frames(x[picks])
    names = [generation.human_class_name(pool_classes[int(y[i])], rec.modality) if len(pool_classes) else "real"
             for i in picks]
    st.markdown(f"**REAL** (same classes, from the prepared {split} images)")
    st.image([generation.enlarge(r, px) for r in real], caption=[f"REAL · {n}" for n in names], width=px)


def compute_eval(ctx: settings.AppContext, batch: dict) -> None:
    """Live evaluation of the current batch, once, with progress; the time shown includes the reference build."""
    from medsynth.components.promote import PromoteConfig
    from medsynth.config import load_stage

    rec: export.GenerationRecord = batch["record"]
    t0 = time.perf_counter()
    with st.status("Checking this batch against real images...", expanded=True) as box:
        bar = st.progress(0.05, text="1/2 · Preparing the real reference images (once per model; can take a "
                                     "minute the first time)...")
        try:
            ref = _reference(_env_key(), batch["uri"], batch["dataset"], batch["data_hash"], rec.resolution)
            ref_s = time.perf_counter() - t0
            bar.progress(0.5, text=f"2/2 · Scoring the {rec.count} images (reference ready after {ref_s:.1f} s)...")
            policy = load_stage(PromoteConfig, "promote", ctx.params).gate  # the gate's floors
            batch["eval"] = live_eval.evaluate_batch(batch["images"], batch["labels"], batch["classes"], ref,
                                                     bootstrap=ctx.cfg.bootstrap, seed=rec.seed, policy=policy)
            batch["ref"] = ref
        except MedsynthError as exc:
            batch["eval_error"] = str(exc)
            box.update(label="The batch could not be checked", state="error", expanded=False)
            return
        total = time.perf_counter() - t0
        batch["eval_timing"] = (total, ref_s)
        bar.progress(1.0, text="Done")
        box.update(label=f"Checked in {total:.1f} s (real reference {ref_s:.1f} s + this batch "
                         f"{total - ref_s:.1f} s)", state="complete", expanded=False)


def show_eval(ctx: settings.AppContext, batch: dict, u8: np.ndarray, names: list[str]) -> None:
    st.markdown("##### These images against real ones")
    if batch.get("eval") is None and not batch.get("eval_error"):
        compute_eval(ctx, batch)
    if batch.get("eval_error"):
        st.error(f"The batch could not be checked: {batch['eval_error']}")
        return
    ev: live_eval.BatchEval = batch["eval"]
    ref: live_eval.Reference = batch["ref"]
    total, ref_s = batch.get("eval_timing", (ev.seconds, 0.0))
    if st.session_state.get("live_eval", True):
        (st.success if ev.passed else st.warning if ev.passed is None else st.error)(live_eval.verdict_sentence(ev))
        c = st.columns(3)
        c[0].metric("FID-domain (this batch)", "n/a" if ev.fid is None else f"{ev.fid:.2f}",
                    help="Distance to real images in the project's medical-image feature space (lower is better; "
                         "not ImageNet FID).")
        c[1].metric(f"{ev.n} real images score", "n/a" if ev.real_floor_mean is None else
                    f"{ev.real_floor_mean:.2f} ± {ev.real_floor_std:.2f}",
                    help="The same distance for real held-out images of the same classes and number: the floor.")
        nc = int(ev.near_copy.sum()) if ev.near_copy is not None else 0
        c[2].metric("Near-copies of training images", f"{nc} / {ev.n}")
        st.caption(live_eval.fid_sentence(ev))
        if ev.confidence_by_class:
            st.markdown("**The judge's confidence that each image shows the class asked for** (mean probability)")
            st.table({"class": [generation.human_class_name(k, batch["record"].modality) for k in ev.confidence_by_class],
                      "confidence": [f"{v:.2f}" for v in ev.confidence_by_class.values()]})
        for note in ev.notes:
            st.caption(note)
    st.caption(f"Checked in {total:.2f} s, real reference included ({ref_s:.2f} s) (seed {batch['record'].seed}).")
    if st.session_state.get("nearest") and ev.nn_index is not None:
        st.markdown(f"**Nearest real training image** (privacy look: a near-copy is closer than "
                    f"{ref.near_copy_threshold:.3f}, i.e. {ctx.cfg.near_copy_ratio:g} × the typical distance between "
                    f"two training images, {ref.train_nn_median:.3f})")
        real = uint8_frames(ref.train[ev.nn_index])
        px = max(ctx.cfg.display_px // 2, 64)
        pairs = [generation.side_by_side(generation.enlarge(s, px), generation.enlarge(r, px))
                 for s, r in zip(u8, real, strict=True)]
        caps = []
        for i, d in enumerate(ev.nn_distance):
            flag = " · NEAR-COPY" if ev.near_copy[i] else ""
            caps.append(f"SYNTHETIC #{i} | REAL training image, distance {d:.3f}{flag}")
        st.image(pairs, caption=caps, width=2 * px + 4)


def show_export(ctx: settings.AppContext, batch: dict) -> None:
    rec: export.GenerationRecord = batch["record"]
    band = st.checkbox("Visible SYNTHETIC band on the PNG images", value=ctx.cfg.png_band, key="png_band",
                       help="Off: PNGs hold the raw generated pixels; their metadata still says synthetic.")
    if batch["zip"] is None or batch.get("zip_band") != band:
        batch["zip"], batch["zip_band"] = export.build_zip(batch["images"], rec, band=band), band
    st.markdown("PNG images (named ``SYNTHETIC_...``, marked in their metadata"
                f"{' and by a visible band' if band else ''}), DICOM files (marked synthetic in their tags and "
                "pixels, no patient identity) and `generation.json` (how to make the same images again).")
    st.download_button("Download zip (PNG + DICOM + JSON)", batch["zip"],
                       file_name=f"SYNTHETIC_{rec.model_name}_v{rec.model_version}_seed{rec.seed}.zip",
                       mime="application/zip", key="download_zip")
    st.download_button("Download the generation parameters (JSON)", rec.to_json(), file_name="generation.json",
                       mime="application/json", key="download_json")


def show_feedback(ctx: settings.AppContext, batch: dict) -> None:
    from medsynth.monitoring.feedback import MAX_COMMENT, FeedbackStore

    rec: export.GenerationRecord = batch["record"]
    st.caption("Stored: your rating, your comment, and which model and image it is about. Nothing about you.")
    target = st.selectbox("Rate", [-1, *range(rec.count)], key="fb_target",
                          format_func=lambda i: "the whole batch" if i < 0 else f"image #{i}")
    rating = st.radio("These images look", ["realistic", "unrealistic"], horizontal=True, key="fb_rating")
    comment = st.text_area("Comment (optional)", max_chars=MAX_COMMENT, key="fb_comment")
    if st.button("Send feedback", key="fb_send"):
        ref = (f"seed={rec.seed};n={rec.count};batch" if target < 0 else f"seed={rec.seed};index={target}")
        if rec.mode == "interpolate":
            ref += f";interp={rec.seed_b}"
        store = FeedbackStore(ctx.feedback_url())
        try:
            store.add(rec.model_name, rec.model_version, rating, image_ref=ref, comment=comment.strip())
        finally:
            store.close()
        batch["feedback"] = rating
    if batch.get("feedback"):
        st.success("Thank you! Your rating was stored and feeds the model's quality monitor.")


def about(ctx: settings.AppContext, precision: str | None) -> None:
    with st.expander("About this app (technical details)"):
        uri = redact(tracking_uri(ctx.project))
        configured = ctx.cfg.precision.value
        why = {"bf16": "bfloat16: this machine has fast bfloat16 (AMX or CUDA)",
               "fp32": "float32" + (": this CPU has no AMX, where bfloat16 would be slower" if configured == "auto"
                                    else "")}
        st.markdown(
            f"- medsynth {__version__}\n"
            f"- model registry (MLflow): `{uri}`\n"
            f"- generator precision: {precision or 'not loaded'} (app.precision: {configured}; "
            f"{why.get(precision or '', '')})\n"
            f"- quality measurements use the project's own feature extractor (`{ctx.features_dir()}`), so "
            "FID-domain is not comparable with published ImageNet FID\n"
            f"- browse runs and the registry: `mlflow ui --backend-store-uri {uri}`\n"
            "- bounds and defaults: the `app:` section of params.yaml")
        if st.button("Refresh the model list", key="refresh"):
            _models.clear()
            _versions.clear()


def _modality() -> str:
    return str(st.session_state.get("_modality", ""))


def page(ctx: settings.AppContext) -> str | None:
    """The page; returns the generator's precision once one is loaded (for the About panel)."""
    mv = pick_model(ctx)
    if mv is None:
        return None
    model_quality(ctx, mv)
    precision = ctx.cfg.resolved_precision("cpu").value
    gen = _generator(_env_key(), mv.uri, precision == "bf16")
    try:
        req = controls(ctx, mv, gen)
        if req is not None:
            run_generation(ctx, mv, gen, req, precision)
    except MedsynthError as exc:  # a bad count/seed: say so; nothing on screen contradicts the boxes
        st.session_state.pop("batch", None)
        st.error(f"Nothing generated. {exc}")
    show_batch(ctx)
    return precision


def main() -> None:
    st.set_page_config(page_title="medsynth: synthetic medical images", layout="wide",
                       initial_sidebar_state="collapsed")
    st.markdown(COMPACT, unsafe_allow_html=True)
    st.markdown("### medsynth · synthetic medical images")
    st.caption(BANNER)
    ctx = None
    precision = None
    try:
        ctx = settings.load_context()
        precision = page(ctx)
    except MedsynthError as exc:
        st.error(str(exc))
    except Exception as exc:  # noqa: BLE001 - the page shows a message, never a traceback
        st.error(f"Unexpected error ({type(exc).__name__}): {first_line(exc)}. "
                 "Run with MEDSYNTH_DEBUG=1 and check the server log for details.")
        if os.environ.get("MEDSYNTH_DEBUG"):
            raise
    if ctx is not None:
        try:
            about(ctx, precision)
        except Exception:  # noqa: BLE001 - the About panel never breaks the page
            pass


main()
