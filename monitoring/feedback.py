"""The feedback store: people's "realistic" / "unrealistic" ratings of generated images.

A small SQL table (SQLAlchemy Core): SQLite at ``<state>/feedback.db`` by default, any SQLAlchemy
URL (``postgresql://...``) for a shared server database. The app writes a rating per generated
image; the monitor reads the share of "unrealistic" ratings per model version.

Privacy: a row holds only what the person chose or typed -- the rating and an optional comment --
plus which model version and image (seed, index) was rated and when. No user name, address,
session or browser data is stored.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medsynth.errors import InputError

MAX_COMMENT = 1000  # characters; longer comments are cut (bounded user input)
MAX_FIELD = 200


class Rating(enum.StrEnum):
    REALISTIC = "realistic"
    UNREALISTIC = "unrealistic"


@dataclass(frozen=True)
class FeedbackSummary:
    """Counts of ratings for one model (version), optionally since a time."""

    model: str
    version: str | None
    n_total: int
    n_unrealistic: int

    @property
    def unrealistic_share(self) -> float:
        return self.n_unrealistic / self.n_total if self.n_total else 0.0


def default_url(state_dir: str | Path) -> str:
    return f"sqlite:///{Path(state_dir).resolve() / 'feedback.db'}"


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class FeedbackStore:
    """Read and write ratings. ``url``: a SQLAlchemy database URL."""

    def __init__(self, url: str):
        import sqlalchemy as sa

        self.url = url
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.engine = sa.create_engine(url, future=True, pool_pre_ping=True)
        except Exception as exc:  # noqa: BLE001 - bad URL, missing driver, ...
            raise InputError(f"feedback database {_redact(url)}: cannot be opened ({_first(exc)})") from None
        meta = sa.MetaData()
        self.table = sa.Table(
            "ratings", meta,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("created_at", sa.DateTime, nullable=False, index=True),
            sa.Column("model", sa.String(MAX_FIELD), nullable=False, index=True),
            sa.Column("version", sa.String(64), nullable=False, index=True),
            sa.Column("image_ref", sa.String(MAX_FIELD), nullable=False, default=""),
            sa.Column("rating", sa.String(16), nullable=False),
            sa.Column("comment", sa.Text, nullable=False, default=""),
        )
        try:
            meta.create_all(self.engine)
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"feedback database {_redact(url)}: cannot be used ({_first(exc)})") from None

    def add(self, model: str, version: str | int, rating: Rating | str, image_ref: str = "",
            comment: str = "", when: dt.datetime | None = None) -> int:
        """Store one rating; returns its row id.

        Raises:
            InputError: the rating is not ``realistic``/``unrealistic`` or the model is empty.
        """
        try:
            r = Rating(rating)
        except ValueError:
            raise InputError(f"rating {rating!r}: expected one of {', '.join(x.value for x in Rating)}") from None
        if not str(model).strip():
            raise InputError("rating: the model name is empty")
        row = {
            "created_at": when or _utcnow(),
            "model": str(model)[:MAX_FIELD],
            "version": str(version)[:64],
            "image_ref": str(image_ref)[:MAX_FIELD],
            "rating": r.value,
            "comment": str(comment or "")[:MAX_COMMENT],
        }
        with self.engine.begin() as conn:
            res = conn.execute(self.table.insert().values(**row))
            return int(res.inserted_primary_key[0])

    def summary(self, model: str, version: str | int | None = None,
                since: dt.datetime | None = None) -> FeedbackSummary:
        """Rating counts for ``model`` (one version, or all) since ``since`` (or ever)."""
        import sqlalchemy as sa

        t = self.table
        cond = [t.c.model == model]
        if version is not None:
            cond.append(t.c.version == str(version))
        if since is not None:
            cond.append(t.c.created_at >= since)
        q = sa.select(t.c.rating, sa.func.count()).where(*cond).group_by(t.c.rating)
        with self.engine.connect() as conn:
            counts = {r: int(n) for r, n in conn.execute(q)}
        return FeedbackSummary(model, None if version is None else str(version),
                               sum(counts.values()), counts.get(Rating.UNREALISTIC.value, 0))

    def recent(self, model: str, limit: int = 20) -> list[dict[str, Any]]:
        """The latest ratings of ``model`` (newest first)."""
        import sqlalchemy as sa

        t = self.table
        q = sa.select(t).where(t.c.model == model).order_by(t.c.id.desc()).limit(max(1, min(limit, 1000)))
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def close(self) -> None:
        self.engine.dispose()


def _redact(url: str) -> str:
    from medsynth.tracking import redact

    return redact(url)


def _first(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
