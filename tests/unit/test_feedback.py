"""The feedback store: ratings per model version in SQLite (any SQLAlchemy URL in production)."""

from __future__ import annotations

import datetime as dt

import pytest

from medsynth.errors import InputError
from medsynth.monitoring.feedback import MAX_COMMENT, FeedbackStore, Rating, default_url


@pytest.fixture
def store(tmp_path):
    s = FeedbackStore(default_url(tmp_path / "state"))
    yield s
    s.close()


def test_default_store_is_a_sqlite_file_under_the_state_folder(tmp_path, store):
    store.add("cxr-dcgan", 3, "realistic", image_ref="seed=1:0")
    assert (tmp_path / "state" / "feedback.db").is_file()


def test_summary_counts_unrealistic_share_per_version(store):
    for _ in range(3):
        store.add("m", 1, Rating.UNREALISTIC)
    store.add("m", 1, Rating.REALISTIC)
    store.add("m", 2, Rating.REALISTIC)
    store.add("other", 1, Rating.UNREALISTIC)
    v1 = store.summary("m", 1)
    assert (v1.n_total, v1.n_unrealistic, v1.unrealistic_share) == (4, 3, 0.75)
    assert store.summary("m", 2).unrealistic_share == 0.0
    assert store.summary("m").n_total == 5
    assert store.summary("nobody").n_total == 0 and store.summary("nobody").unrealistic_share == 0.0


def test_summary_since_ignores_older_ratings(store):
    old = dt.datetime(2020, 1, 1)
    store.add("m", 1, "unrealistic", when=old)
    store.add("m", 1, "realistic")
    recent = store.summary("m", 1, since=dt.datetime(2021, 1, 1))
    assert (recent.n_total, recent.n_unrealistic) == (1, 0)


def test_rows_hold_only_what_the_person_gave(store):
    store.add("m", 1, "unrealistic", image_ref="seed=7:3", comment="x" * (MAX_COMMENT + 50))
    row = store.recent("m")[0]
    assert set(row) == {"id", "created_at", "model", "version", "image_ref", "rating", "comment"}
    assert len(row["comment"]) == MAX_COMMENT  # bounded


def test_bad_input_is_rejected_clearly(store, tmp_path):
    with pytest.raises(InputError, match="expected one of realistic, unrealistic"):
        store.add("m", 1, "meh")
    with pytest.raises(InputError, match="model name is empty"):
        store.add(" ", 1, "realistic")
    with pytest.raises(InputError, match="cannot be"):
        FeedbackStore("nosuchdialect://x/y")


def test_ratings_persist_across_connections(tmp_path):
    url = default_url(tmp_path)
    a = FeedbackStore(url)
    a.add("m", "5", "unrealistic")
    a.close()
    b = FeedbackStore(url)
    assert b.summary("m", "5").n_unrealistic == 1
    b.close()
