"""Atomic writes and content hashes: artifacts are written to a temporary name, then renamed."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    On error the temporary file is removed and ``path`` keeps its old content.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes 0600 files; give the usual umask-based mode
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` whole."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        yield tmp
        replace_dir(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Put the finished folder ``src`` (on the same file system) at ``dest``, replacing what was there
    with two renames: a reader sees the old folder or the new one, never a mix."""
    src, dest = Path(src), Path(dest)
    os.chmod(src, 0o777 & ~_umask())  # mkdtemp makes 0700 folders
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(dest, old)
    os.replace(src, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def files_stamp(path: str | os.PathLike) -> str:
    """A cheap fingerprint of a file or folder: every file's relative name, size and mtime (no reading)."""
    root = Path(path)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(root).as_posix() if f != root else f.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def staging_dir(dest: str | os.PathLike) -> Path:
    """The resumable staging folder of ``dest`` (kept when a step is killed, reused by the next run)."""
    dest = Path(dest)
    return dest.with_name(f".{dest.name}.partial")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def put_block(doc: str | os.PathLike, block: str, start: str, end: str, section: str,
              default_title: str = "") -> None:
    """Put ``block`` between the markers ``start`` / ``end`` into the Markdown file ``doc``.

    Replaces what was between the markers; else inserts the marked block under the heading
    ``section``; else appends the heading and the block (a new file starts with ``default_title``).
    The file is written atomically.
    """
    doc = Path(doc)
    block = block.strip()
    if block.startswith(section):  # a rendered section may carry its own heading
        block = block[len(section):].strip()
    if not block.startswith(start):
        block = f"{start}\n{block}\n{end}"
    body = doc.read_text() if doc.exists() else default_title
    if start in body and end in body:
        i, j = body.index(start), body.index(end) + len(end)
        body = body[:i] + block + body[j:]
    elif section in body:
        i = body.index(section) + len(section)
        body = body[:i] + "\n\n" + block + body[i:]
    else:
        body = body.rstrip("\n") + f"\n\n{section}\n\n{block}\n"
    write_text(doc, body)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_tree(path: str | os.PathLike) -> str:
    """One hash over every file in a folder (relative names + contents), in sorted order."""
    root = Path(path)
    if root.is_file():
        return sha256_file(root)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = f.relative_to(root).as_posix()
        if any(part.startswith(".") for part in f.relative_to(root).parts):
            continue
        h.update(rel.encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


# Parquet through Arrow's own file I/O, never through a Python file object.
#
# ``pandas.read_parquet(path)`` opens ``path`` with Python's ``open`` and hands pyarrow that file
# object; every chunk read from it is then an ``arrow::py::PyBuffer`` wrapping a Python ``bytes``.
# Arrow's I/O and CPU thread pools can drop the last reference to such a buffer a moment *after*
# ``read_parquet`` has returned. When that happens while the interpreter is finalizing (the command
# has already printed its success line), ``~PyBuffer`` calls ``PyGILState_Ensure`` on the worker
# thread, CPython ends that thread with ``pthread_exit``, the forced unwind hits a ``noexcept``
# destructor and libstdc++ calls ``std::terminate``: "terminate called without an active
# exception", SIGABRT, exit 134 after a successful step. A path opened by Arrow itself yields
# native buffers whose release needs no GIL, so the race has nothing to trip over.


def read_parquet(path: str | os.PathLike, columns: list[str] | None = None) -> Any:
    """A parquet file as a pandas DataFrame, read by Arrow's native file I/O (see above)."""
    import pyarrow.parquet as pq

    return pq.read_table(os.fspath(path), columns=columns).to_pandas()


def write_parquet(df: Any, path: str | os.PathLike) -> None:
    """Write a pandas DataFrame (without its index) to ``path`` with Arrow's native file I/O."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), os.fspath(path))
