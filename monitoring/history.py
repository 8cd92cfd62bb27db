"""The monitor's append-only history: one JSON line per event (check, decision, trigger, error).

JSON lines because the file only ever grows, is readable with ``tail``, diffs cleanly and
survives a crash mid-write (a torn last line is skipped on read, never "repaired" by rewriting).
Nothing in the code base rewrites or truncates it; a failing monitor appends an ``error`` event.

Event kinds and their main fields:

- ``check``: batch_hash, batch, n_images, n_valid, n_quarantined, drifted, share_drifted,
  drifted_columns, report paths, model (the champion checked against), run_id.
- ``output_check``: the champion's generated batch against its own evaluation-time reference.
- ``decision``: trigger (bool), reasons, dry_run, batches (hashes it would consume), action.
- ``trigger``: the decision acted on: batches consumed (they never trigger again), launch result.
- ``error``: what failed and why (the history and the registry stay as they were).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medsynth.errors import InputError

KINDS = ("check", "output_check", "decision", "trigger", "approval", "error")


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"


@dataclass(frozen=True)
class History:
    """An append-only JSON-lines file of monitoring events."""

    path: Path

    def append(self, kind: str, /, **fields: Any) -> dict[str, Any]:
        """Append one event (with a UTC timestamp) and flush it to disk; returns the event."""
        fields.pop("kind", None)
        fields.pop("time", None)
        if kind not in KINDS:
            raise ValueError(f"unknown history event kind {kind!r}; valid: {', '.join(KINDS)}")
        event = {"time": now_iso(), "kind": kind, **fields}
        line = json.dumps(event, sort_keys=True, default=str)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # O_APPEND: concurrent writers never overwrite each other's lines.
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            # After a crash mid-line, start on a fresh line so the torn one stays alone.
            torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
            os.write(fd, (("\n" if torn else "") + line + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return event

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """All events in order (optionally of one kind); torn or foreign lines are skipped."""
        return list(self._iter(kind))

    def _iter(self, kind: str | None) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        if self.path.is_dir():
            raise InputError(f"{self.path}: is a folder, expected the monitoring history file")
        with open(self.path, encoding="utf-8", errors="replace") as f:
            for raw in f:
                raw = raw.strip()
                if not raw:
                    continue
                try:
                    ev = json.loads(raw)
                except json.JSONDecodeError:
                    continue  # a torn line from a crash: skip it, keep the rest
                if isinstance(ev, dict) and (kind is None or ev.get("kind") == kind):
                    yield ev

    def consumed_batches(self) -> set[str]:
        """Hashes of batches that already started a retraining (they never trigger again)."""
        out: set[str] = set()
        for ev in self._iter("trigger"):
            out.update(ev.get("batches") or [])
        return out

    def approved_batches(self) -> set[str]:
        """Hashes of batches a person approved for retraining (``medsynth monitor approve``)."""
        return {str(ev.get("batch_hash")) for ev in self._iter("approval") if ev.get("batch_hash")}

    def last_trigger_time(self) -> str | None:
        times = [ev["time"] for ev in self._iter("trigger")]
        return times[-1] if times else None


def history_table(events: list[dict[str, Any]], limit: int = 30) -> str:
    """A plain-text table of the latest checks and decisions (for ``medsynth monitor history``)."""
    rows = [("time", "kind", "batch", "images", "drift", "share", "detail")]
    for ev in events[-limit:]:
        kind = ev.get("kind", "?")
        if kind in ("check", "output_check"):
            rows.append((ev["time"][:19], kind, str(ev.get("batch_hash", ""))[:12], str(ev.get("n_valid", "")),
                         "yes" if ev.get("drifted") else "no", f"{ev.get('share_drifted', 0):.2f}",
                         (f"domain {ev['domain']}; " if ev.get("domain") else "")
                         + ", ".join(ev.get("drifted_columns") or [])[:40]))
        elif kind == "approval":
            rows.append((ev["time"][:19], kind, str(ev.get("batch_hash", ""))[:12], "", "", "",
                         f"by {ev.get('by', '?')}: {ev.get('reason', '')}"[:70]))
        elif kind in ("decision", "trigger"):
            fired = bool(ev.get("trigger", kind == "trigger"))
            waiting = ev.get("action") == "await_approval"
            flag = ("TRIGGER" if fired else "AWAIT" if waiting else "none") + (" (dry)" if ev.get("dry_run") else "")
            why = ev.get("reasons") if fired else ev.get("notes")
            rows.append((ev["time"][:19], kind, "", "", flag, "", ("; ".join(why or []))[:70]))
        else:
            rows.append((ev["time"][:19], kind, "", "", "", "", str(ev.get("error", ""))[:70]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot_history(events: list[dict[str, Any]], path: str | Path) -> Path | None:
    """Save a PNG of the drifted-column share per check over time; None when there are no checks."""
    checks = [e for e in events if e.get("kind") == "check"]
    outs = [e for e in events if e.get("kind") == "output_check"]
    if not checks and not outs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medsynth.fileio import atomic_path

    fig, ax = plt.subplots(figsize=(8, 3.5), dpi=100)
    for series, label, marker in ((checks, "real batches", "o"), (outs, "champion outputs", "s")):
        if not series:
            continue
        xs = list(range(len(series)))
        ys = [float(e.get("share_drifted", 0.0)) for e in series]
        ax.plot(xs, ys, marker=marker, label=label)
        for x, e in zip(xs, series, strict=True):
            if e.get("drifted"):
                ax.annotate("drift", (x, float(e.get("share_drifted", 0.0))), textcoords="offset points",
                            xytext=(0, 6), ha="center", fontsize=7, color="crimson")
    thr = next((e.get("drift_share_threshold") for e in checks + outs if e.get("drift_share_threshold")), None)
    if thr is not None:
        ax.axhline(float(thr), color="grey", linestyle="--", linewidth=1, label="drift share threshold")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("check (in order)")
    ax.set_ylabel("share of drifted columns")
    ax.set_ylim(0, 1.05)
    ax.set_title("medsynth drift monitor")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
