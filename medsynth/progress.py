"""Progress bars for long work (tqdm on stderr; quiet when MEDSYNTH_QUIET=1 or not on rank 0)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")


def _quiet() -> bool:
    return os.environ.get("MEDSYNTH_QUIET") == "1" or int(os.environ.get("RANK", "0")) != 0


def progress(it: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """Wrap ``it`` in a progress bar unless progress is turned off."""
    from tqdm.auto import tqdm

    yield from tqdm(it, desc=desc, total=total, unit=unit, disable=_quiet(), leave=False, dynamic_ncols=True)


@contextmanager
def counter(total: int, desc: str, unit: str = "it") -> Iterator[Any]:
    """A progress bar advanced by hand (``bar.update(k)``) for work that is not a loop over items,
    closed on exit; quiet under the same rules as :func:`progress`."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, disable=_quiet(), leave=False, dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()
