"""The validate step's reports: class balance and the human-readable markdown report."""

from __future__ import annotations

from typing import Any


def class_balance(per_split: dict[str, dict[str, int]], classes: list[str], max_ratio: float) -> dict[str, Any]:
    """Counts per split and class (from ``{split: {class: n}}``), largest/smallest class ratio, warnings."""
    out: dict[str, Any] = {"counts": {}, "imbalance": {}, "warnings": []}
    for split in sorted(per_split):
        name = split or "unassigned"
        counts = {c: int(per_split[split].get(c, 0)) for c in classes}
        out["counts"][name] = counts
        present = [n for n in counts.values() if n > 0]
        ratio = max(present) / min(present) if present else 0.0
        out["imbalance"][name] = round(ratio, 4)
        missing = [c for c, n in counts.items() if n == 0]
        if missing:
            out["warnings"].append(f"split {name}: no images of {', '.join(missing)}")
        if ratio > max_ratio:
            out["warnings"].append(f"split {name}: class imbalance {ratio:.1f} > {max_ratio}")
    return out


def report_md(summary: dict[str, Any], expectations: list[dict[str, Any]], failed: list[dict[str, Any]]) -> str:
    """The human-readable report (markdown)."""
    lines = [
        "# Validation report",
        "",
        f"- input: `{summary['input']}` (data hash `{summary['input_hash'][:12]}`)",
        f"- records checked: {summary['n_checked']}, failed: {summary['n_failed']} "
        f"({summary['failure_share']:.2%}; limit {summary['max_failure_share']:.2%})",
        f"- outcome: **{'PASSED' if summary['passed'] else 'REJECTED'}**",
        "",
        "## Expectations",
        "",
        "| expectation | level | reason | success | unexpected |",
        "| --- | --- | --- | --- | --- |",
    ]
    for e in expectations:
        lines.append(f"| `{e['name']}` | {e['level']} | {e['reason']} | {'yes' if e['success'] else 'NO'} | {e['unexpected_count']} |")
    lines += ["", "## Quarantine reasons", ""]
    lines += [f"- {k}: {v}" for k, v in summary["reasons"].items()] or ["- none"]
    cb = summary["class_balance"]
    classes = summary["classes"]
    lines += ["", "## Class balance", "", "| split | " + " | ".join(classes) + " | max/min |",
              "| --- |" + " --- |" * (len(classes) + 1)]
    for split, counts in cb["counts"].items():
        lines.append(f"| {split} | " + " | ".join(str(counts[c]) for c in classes) + f" | {cb['imbalance'][split]:.2f} |")
    lines += ["", *(f"- warning: {w}" for w in cb["warnings"])]
    if failed:
        lines += ["", "## First quarantined records", "", "| id | source | reasons |", "| --- | --- | --- |"]
        for f in failed[:50]:
            lines.append(f"| `{f['id']}` | {f['source_file']} | {'; '.join(f['details'].values())} |")
    return "\n".join(lines) + "\n"
