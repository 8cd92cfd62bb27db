"""The model card as a document a reviewer reads: fixed headings, runs linked, no metrics table.

The registry stores a markdown card per version (``components/promote.py``, the version's
description). Its lineage rows, intended use and training configuration are read from it; the
rest comes from the version's tags (status, gate checks, review). The metrics are not repeated:
the page shows them once, grouped and explained (``app/quality.py``).
"""

from __future__ import annotations

import json
import re
from typing import Any

from medsynth import registry as reg
from medsynth.app.model_store import ModelVersion

_ROW = re.compile(r"^\|\s*([^|]+?)\s*\|\s*([^|]*?)\s*\|\s*$")
_UNKNOWN = ("", "unknown", "none")
DEFAULT_USE = ("Research, education, software testing and data augmentation experiments on the modality and classes "
               "below. Not for clinical use, nor to stand in for real patient data in any evaluation of a medical "
               "device.")


def parse_stored(card: str) -> dict[str, Any]:
    """Lineage rows (``{item: value}``), the intended-use text and the training configuration of a stored card."""
    sections: dict[str, list[str]] = {}
    current = ""
    for line in card.splitlines():
        if line.startswith("## "):
            current = line[3:].strip().lower()
            sections[current] = []
        elif current:
            sections[current].append(line)
    lineage = {}
    for line in sections.get("data lineage", []):
        m = _ROW.match(line)
        if m and m.group(1) not in ("item", "---") and not set(m.group(1)) <= {"-", " "}:
            lineage[m.group(1).lower()] = m.group(2)
    use = " ".join(x.strip() for x in sections.get("intended use", []) if x.strip())
    config: dict[str, Any] = {}
    body = "\n".join(sections.get("training configuration", []))
    if (m := re.search(r"```json\n(.*?)```", body, re.S)) is not None:
        try:
            config = json.loads(m.group(1))
        except json.JSONDecodeError:
            config = {}
    return {"lineage": lineage, "intended_use": use, "config": config}


def known(value: str | None) -> str | None:
    return None if value is None or str(value).strip().lower() in _UNKNOWN else str(value).strip()


def run_link(run_id: str | None, experiment_id: str | None, ui_base: str) -> str:
    """Markdown for a run: a link into the MLflow UI when there is one, else the run id and how to open it."""
    if not run_id:
        return "not recorded"
    if ui_base and experiment_id is not None:
        return f"[{run_id[:12]}]({ui_base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id})"
    return f"`{run_id}` (open it with `mlflow ui`, see About)"


def document(mv: ModelVersion, stored: dict[str, Any], modality: str, classes: str, verdict_line: str,
             eval_run: str, train_run: str) -> str:
    """The card's markdown: title, status, then fixed ##### headings in a fixed order."""
    lin = stored.get("lineage", {})
    gate = mv.gate_checks
    checks = "\n".join(f"- {'✅ pass' if c.get('passed') else '❌ FAIL'} · {c.get('name')}: {c.get('detail')}"
                       for c in gate) or "- this version was never gated"
    t = mv.tags
    review = ("awaiting review" if t.get(reg.REVIEW_DECISION, reg.PENDING) == reg.PENDING else
              f"{t.get(reg.REVIEW_DECISION)} by {t.get(reg.REVIEW_BY, 'unknown')} on {t.get(reg.REVIEW_AT, '?')[:10]}"
              + (f": {t[reg.REVIEW_REASON]}" if t.get(reg.REVIEW_REASON) else ""))
    champ = (f"champion since {t[reg.CHAMPION_SINCE][:10]}, moved by {t.get(reg.CHAMPION_BY, 'unknown')}: "
             f"{t.get(reg.CHAMPION_REASON, '')}" if reg.CHAMPION in mv.aliases and t.get(reg.CHAMPION_SINCE) else "")
    data_hash = known(lin.get("data hash (preprocessed, dvc-tracked)")) or known(mv.data_hash) or "not recorded"
    commit = known(lin.get("git commit")) or known(t.get(reg.LINEAGE_GIT_COMMIT)) or "not recorded"
    return f"""#### {mv.name} · version {mv.version}
**Status:** {mv.status} · registered {mv.created}

**Outputs are synthetic images, not for diagnosis or any clinical decision.** Every exported image says so
in its file name, its metadata and a visible band.

##### Intended use
{stored.get('intended_use') or DEFAULT_USE}

##### Data
- dataset: {mv.dataset or 'not recorded'} ({modality or 'modality not recorded'})
- classes: {classes}
- data version (hash of the prepared data): `{data_hash[:16]}`

##### Training
- training run: {train_run}
- code version (git commit): `{commit[:12]}`
- the full configuration is below

##### Evaluation
- verdict: {verdict_line}
- evaluation run: {eval_run}
- every measurement, grouped and explained: **All measurements** (on this page)

##### Promotion gate
{checks}

##### Review
- {review}{f"{chr(10)}- {champ}" if champ else ""}
"""
