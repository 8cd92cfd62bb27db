"""medsynth web app: generate synthetic medical images on demand, check them live, export, rate.

Run with ``medsynth app`` (or ``streamlit run app/streamlit_app.py``). It reads the MLflow registry
that ``medsynth promote`` writes (embedded SQLite by default, ``MLFLOW_TRACKING_URI`` for a server),
serves the ``champion`` of the chosen model by default, and never shows a traceback: every failure
is one message that says what to do.

Page flow:
1. Sidebar: model, version (champion first), precision.
2. Model card: gate result, metrics, the card itself.
3. Controls: modality/class, count, seed, truncation, optional interpolation between two seeds.
4. After Generate: images, live evaluation, export (PNG + DICOM + JSON zip), feedback.
"""

from __future__ import annotations

import os
import time

import numpy as np
import streamlit as st

from medsynth.app import export, generate, live_eval, model_store, settings
from medsynth.errors import MedsynthError
from medsynth.tracking import first_line, redact, tracking_uri

BANNER = ("Every image on this page is **SYNTHETIC**, made by a generative model. "
          "Not a real patient, not for diagnosis or any clinical decision.")


# ---- cached resources (keyed by everything that changes them) -------------------------------------

def _env_key() -> tuple[str, str, str]:
    return (os.environ.get("MEDSYNTH_HOME", ""), os.environ.get("MEDSYNTH_PARAMS", ""),
            os.environ.get("MLFLOW_TRACKING_URI", ""))


@st.cache_resource(max_entries=4, show_spinner="Loading the generator...")
def _generator(env: tuple[str, str, str], uri: str, bf16: bool):
    ctx = settings.load_context()
    return model_store.load_generator(ctx.project, uri, bf16=bf16)


@st.cache_resource(max_entries=4, show_spinner="Preparing the real reference (once per model)...")
def _reference(env: tuple[str, str, str], uri: str, dataset: str, data_hash: str, resolution: int):
    ctx = settings.load_context()
    source, note = settings.reference_source(ctx, dataset, data_hash, resolution)
    scorer = settings.load_scorer(ctx)
    ref = live_eval.build_reference(source, scorer, size=ctx.cfg.reference_size, floor_pool=ctx.cfg.floor_pool,
                                    near_copy_ratio=ctx.cfg.near_copy_ratio, seed=ctx.project.seed)
    ref.notes.insert(0, f"reference: {note}")
    return ref


@st.cache_data(ttl=30, show_spinner=False)
def _models(env: tuple[str, str, str]) -> list[str]:
    return model_store.list_models(settings.load_context().project)


@st.cache_data(ttl=30, show_spinner=False)
def _versions(env: tuple[str, str, str], name: str) -> list[model_store.ModelVersion]:
    # registry reads are cached briefly: every widget change reruns the page
    return model_store.list_versions(settings.load_context().project, name)


# ---- page sections ---------------------------------------------------------------------------------

def sidebar(ctx: settings.AppContext) -> tuple[model_store.ModelVersion, bool] | None:
    st.sidebar.header("Model")
    st.sidebar.caption(f"Registry: `{redact(tracking_uri(ctx.project))}`")
    if st.sidebar.button("Refresh model list", key="refresh"):
        _models.clear()
        _versions.clear()
    try:
        names = _models(_env_key())
    except model_store.NoModelError as exc:
        st.warning(str(exc))
        return None
    name = st.sidebar.selectbox("Registered model", names, key="model_name")
    versions = _versions(_env_key(), name)
    default = model_store.default_version(versions)
    by_version = {v.version: v for v in versions}
    picked = st.sidebar.selectbox("Version", list(by_version), index=versions.index(default),
                                  key=f"version_{name}", format_func=lambda v: by_version[v].label)
    mv = by_version[picked]
    st.session_state["_modality"] = settings.dataset_modality(ctx, mv.dataset, mv.classes)
    bf16 = st.sidebar.checkbox("bfloat16 inference (faster on CPUs with AVX-512 BF16)", value=ctx.cfg.resolved_precision() == "bf16",
                               key="bf16")
    live = st.sidebar.checkbox("Live evaluation after Generate", value=ctx.cfg.live_eval, key="live_eval")
    st.session_state["_live"] = live
    return mv, bf16


def model_card(mv: model_store.ModelVersion) -> None:
    st.subheader(f"{mv.name} {mv.label}")
    cols = st.columns(3)
    mod = _modality()
    cols[0].markdown(f"**Dataset:** {mv.dataset or 'unknown'}  \n**Modality:** {mod or 'unknown'}")
    cols[1].markdown(f"**Classes:** {', '.join(generate.human_class_name(c, mod) for c in mv.classes) or 'unconditional'}")
    cols[2].markdown(f"**Registered:** {mv.created}  \n**Review:** {mv.review}")
    if mv.gate_passed is None:
        st.info("Gate: this version was never gated.")
    elif mv.gate_passed:
        st.success(f"Promotion gate: {mv.gate_summary}")
    else:
        st.error(f"Promotion gate: {mv.gate_summary}")
    if mv.metrics:
        keys = sorted(mv.metrics)
        st.table({"metric": keys, "value": [_fmt(mv.metrics[k]) for k in keys]})
    with st.expander("Model card", expanded=False):
        st.markdown(mv.card or "_No model card recorded for this version._")


def controls(ctx: settings.AppContext, mv: model_store.ModelVersion, gen) -> generate.Request | None:
    cfg = ctx.cfg
    classes = list(gen.classes)
    st.subheader("Generate")
    c1, c2, c3 = st.columns(3)
    class_index = generate.MIX
    if classes:
        groups = generate.modality_groups(classes, _modality() or "images")
        group = c1.selectbox("Modality / dataset", list(groups), key="modality") if len(groups) > 1 else next(iter(groups))
        if len(groups) == 1:
            c1.markdown(f"**Modality / dataset:** {group}")
        options = [generate.MIX, *groups[group]] if len(groups) == 1 else groups[group]
        class_index = c1.selectbox(
            "Class", options, key=f"class_{mv.name}_{group}",
            format_func=lambda i: "every class in turn" if i == generate.MIX else generate.human_class_name(
                classes[i], _modality()),
        )
    else:
        c1.markdown(f"**Modality / dataset:** {_modality() or 'unknown'} (unconditional model)")
    count = c2.number_input(f"Count (1-{cfg.max_count})", value=cfg.default_count, step=1, key="count")
    seed = c2.number_input(f"Seed (0-{settings.MAX_SEED}; same seed, same images)", value=0, step=1, key="seed")
    trunc = c3.slider("Truncation (latent scale; lower = more typical, less varied)", cfg.min_truncation, 1.0,
                      1.0, 0.05, key="truncation")
    interp = False
    seed_b, steps = 1, 8
    if generate.supports_interpolation(gen):
        interp = c3.checkbox("Interpolate between two seeds", key="interpolate")
        if interp:
            seed_b = c3.number_input("Second seed", value=1, step=1, key="seed_b")
            steps = c3.number_input(f"Steps (2-{cfg.max_interpolation_steps})", value=8, step=1, key="steps")
    if not st.button("Generate", type="primary", key="generate"):
        return None
    return generate.Request(count=int(count), seed=int(seed), class_index=int(class_index), truncation=float(trunc),
                            interpolate=bool(interp), seed_b=int(seed_b), steps=int(steps))


def run_generation(ctx: settings.AppContext, mv: model_store.ModelVersion, gen, req: generate.Request,
                   bf16: bool) -> None:
    generate.check_request(req, ctx.cfg.max_count, settings.MAX_SEED, ctx.cfg.max_interpolation_steps,
                           ctx.cfg.min_truncation, len(gen.classes))
    t0 = time.perf_counter()
    with st.spinner("Generating..."):
        images, labels = generate.generate(gen, req)
    gen_s = time.perf_counter() - t0
    lab = [] if labels is None else [int(v) for v in labels]
    record = export.GenerationRecord(
        model_name=mv.name, model_version=mv.version, seed=req.seed, labels=lab,
        label_names=export.label_names(lab, gen.classes) if lab else ["unconditional"] * len(images),
        truncation=req.truncation, count=len(images), resolution=int(gen.resolution), modality=_modality(),
        dataset=mv.dataset, mode="interpolate" if req.interpolate else "sample",
        seed_b=req.seed_b if req.interpolate else None, precision="bf16" if bf16 else "fp32",
    )
    st.session_state["batch"] = {"images": images, "labels": labels, "record": record, "gen_seconds": gen_s,
                                 "eval": None, "eval_error": None, "classes": list(gen.classes), "zip": None,
                                 "feedback": None, "uri": mv.uri, "dataset": mv.dataset, "data_hash": mv.data_hash}


def compute_eval(ctx: settings.AppContext, batch: dict) -> None:
    """Live evaluation of the current batch, once (after the images are on screen)."""
    from medsynth.components.promote import PromoteConfig
    from medsynth.config import load_stage

    rec: export.GenerationRecord = batch["record"]
    try:
        with st.spinner("Live evaluation..."):
            ref = _reference(_env_key(), batch["uri"], batch["dataset"], batch["data_hash"], rec.resolution)
            policy = load_stage(PromoteConfig, "promote", ctx.params).gate  # the gate's floors
            batch["eval"] = live_eval.evaluate_batch(batch["images"], batch["labels"], batch["classes"], ref,
                                                     bootstrap=ctx.cfg.bootstrap, seed=rec.seed, policy=policy)
            batch["ref"] = ref
    except MedsynthError as exc:
        batch["eval_error"] = str(exc)


def show_batch(ctx: settings.AppContext) -> None:
    batch = st.session_state.get("batch")
    if not batch:
        st.info("Choose the settings above and press **Generate**.")
        return
    rec: export.GenerationRecord = batch["record"]
    u8 = export.to_uint8(batch["images"])
    names = [generate.human_class_name(n, rec.modality) if n != "unconditional" else n for n in rec.label_names]
    st.success(f"{rec.count} SYNTHETIC images from {rec.model_name} v{rec.model_version} (seed {rec.seed}"
               f"{f' -> {rec.seed_b}, interpolated' if rec.mode == 'interpolate' else ''}, truncation "
               f"{rec.truncation:g}, {rec.precision}) in {batch['gen_seconds'] * 1000:.0f} ms")
    tabs = st.tabs(["Images", "Live evaluation", "Export", "Feedback"])
    with tabs[0]:
        st.image([generate.enlarge(x, ctx.cfg.display_px) for x in u8],
                 caption=[f"SYNTHETIC #{i} · {n}" for i, n in enumerate(names)], width=ctx.cfg.display_px)
    with tabs[1]:
        show_eval(ctx, batch, u8, names)
    with tabs[2]:
        show_export(batch)
    with tabs[3]:
        show_feedback(ctx, batch)


def show_eval(ctx: settings.AppContext, batch: dict, u8: np.ndarray, names: list[str]) -> None:
    if batch.get("eval_error"):
        st.error(f"Live evaluation unavailable: {batch['eval_error']}")
        return
    if batch.get("eval") is None and st.session_state.get("_live", True):
        compute_eval(ctx, batch)
        if batch.get("eval_error"):
            st.error(f"Live evaluation unavailable: {batch['eval_error']}")
            return
    ev: live_eval.BatchEval | None = batch.get("eval")
    if ev is None:
        st.info("Live evaluation is off (sidebar).")
        return
    ref: live_eval.Reference = batch["ref"]
    (st.success if ev.passed else st.warning if ev.passed is None else st.error)(live_eval.verdict_sentence(ev))
    c = st.columns(3)
    c[0].metric("FID-domain (this batch)", "n/a" if ev.fid is None else f"{ev.fid:.2f}",
                help="Fréchet distance in the project's domain-classifier feature space (not ImageNet Inception).")
    c[1].metric("Real floor at same n", "n/a" if ev.real_floor_mean is None else
                f"{ev.real_floor_mean:.2f} ± {ev.real_floor_std:.2f}")
    nc = int(ev.near_copy.sum()) if ev.near_copy is not None else 0
    c[2].metric("Near-copies of training images", f"{nc} / {ev.n}")
    st.caption(live_eval.fid_sentence(ev) + f" Computed in {ev.seconds:.2f} s (seed {batch['record'].seed}).")
    if ev.confidence_by_class:
        st.markdown("**Classifier confidence for the requested class** (mean probability)")
        st.table({"class": [generate.human_class_name(k, batch["record"].modality) for k in ev.confidence_by_class],
                  "confidence": [f"{v:.2f}" for v in ev.confidence_by_class.values()]})
    for note in ev.notes:
        st.caption(note)
    if ev.nn_index is not None:
        st.markdown(f"**Nearest real training image** (privacy look; RMS distance on [0, 1], near-copy below "
                    f"{ref.near_copy_threshold:.3f} = {ctx.cfg.near_copy_ratio:g} x median real-to-real "
                    f"{ref.train_nn_median:.3f})")
        real = export.to_uint8(ref.train[ev.nn_index])
        px = max(ctx.cfg.display_px // 2, 64)
        pairs = [generate.side_by_side(generate.enlarge(s, px), generate.enlarge(r, px)) for s, r in zip(u8, real, strict=True)]
        caps = []
        for i, d in enumerate(ev.nn_distance):
            conf = "" if ev.confidence is None else f" · conf {ev.confidence[i]:.2f}"
            flag = " · NEAR-COPY" if ev.near_copy[i] else ""
            caps.append(f"#{i} synthetic | nearest real, d={d:.3f}{conf}{flag}")
        st.image(pairs, caption=caps, width=2 * px + 4)


def show_export(batch: dict) -> None:
    rec: export.GenerationRecord = batch["record"]
    if batch["zip"] is None:
        batch["zip"] = export.build_zip(batch["images"], rec)
    st.markdown("PNG files (``SYNTHETIC_`` names, tEXt metadata), DICOM Secondary Capture files (DERIVED\\SECONDARY, "
                "burned-in and overlay SYNTHETIC marker, no patient identity, new UIDs) and `generation.json`.")
    st.download_button("Download zip (PNG + DICOM + JSON)", batch["zip"],
                       file_name=f"SYNTHETIC_{rec.model_name}_v{rec.model_version}_seed{rec.seed}.zip",
                       mime="application/zip", key="download_zip")
    st.download_button("Download generation parameters (JSON)", rec.to_json(), file_name="generation.json",
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


def _modality() -> str:
    return str(st.session_state.get("_modality", ""))


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def page() -> None:
    ctx = settings.load_context()
    picked = sidebar(ctx)
    if picked is None:
        return
    mv, bf16 = picked
    model_card(mv)
    gen = _generator(_env_key(), mv.uri, bf16)
    req = controls(ctx, mv, gen)
    if req is not None:
        try:
            run_generation(ctx, mv, gen, req, bf16)
        except MedsynthError as exc:  # a bad count/seed: say so and keep the previous batch on screen
            st.error(str(exc))
    show_batch(ctx)


def main() -> None:
    st.set_page_config(page_title="medsynth: synthetic medical images", layout="wide")
    st.title("medsynth: synthetic medical images")
    st.markdown(BANNER)
    try:
        page()
    except MedsynthError as exc:
        st.error(str(exc))
    except Exception as exc:  # noqa: BLE001 - the page shows a message, never a traceback
        st.error(f"Unexpected error ({type(exc).__name__}): {first_line(exc)}. "
                 "Run with MEDSYNTH_DEBUG=1 and check the server log for details.")
        if os.environ.get("MEDSYNTH_DEBUG"):
            raise


main()
