"""Progress bars for long work (tqdm on stderr; quiet when MEDSYNTH_QUIET=1 or not on rank 0)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(it: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """Wrap ``it`` in a progress bar unless progress is turned off."""
    from tqdm.auto import tqdm

    disable = os.environ.get("MEDSYNTH_QUIET") == "1" or int(os.environ.get("RANK", "0")) != 0
    yield from tqdm(it, desc=desc, total=total, unit=unit, disable=disable, leave=False, dynamic_ncols=True)
