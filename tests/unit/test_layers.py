"""The import contract README's "Layout and imports" states, checked on the source.

Layers, lowest first: the core (``medsynth/`` but its faces) -> ``training/`` and ``monitoring/``
(independent of each other) -> ``components/`` -> the faces (CLI, study, app, pipelines). A module
imports only from its own layer or below, never upward, and no two modules import each other
through any chain. Imports inside functions count (they are imports all the same); imports under
``if TYPE_CHECKING:`` count for the layers but not for cycles (they never run). Every import of a
``medsynth`` name must name a module or a top-level name that exists, so a lazy import left behind
by a move fails here, not at run time.
"""

from __future__ import annotations

import ast
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# (module prefix, layer, rank): the longest matching prefix decides; a higher rank may import a lower one.
LAYERS = (
    ("medsynth", "core", 0),
    ("medsynth.training", "training", 1),
    ("medsynth.monitoring", "monitoring", 1),
    ("medsynth.components", "components", 2),
    ("medsynth.cli", "face", 3),
    ("medsynth.study", "face", 3),
    ("medsynth.app", "face", 3),
    ("medsynth.pipelines", "face", 3),
    ("medsynth.__main__", "face", 3),
)


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    names: tuple[str, ...]
    line: int
    type_only: bool


def package_roots(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, Path]:
    """Import package -> folder, from setuptools' ``package-dir`` (what gets installed where)."""
    cfg = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-dir"]
    return {pkg: pyproject.parent / folder for pkg, folder in cfg.items()}


def modules(roots: dict[str, Path]) -> dict[str, Path]:
    """Every module name -> its file (``__init__.py`` for packages)."""
    out: dict[str, Path] = {}
    for pkg, folder in roots.items():
        for f in sorted(folder.rglob("*.py")):
            parts = [p for p in f.relative_to(folder).with_suffix("").parts if p != "__init__"]
            out[".".join([pkg, *parts])] = f
    return out


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                lines.update(range(sub.lineno, (sub.end_lineno or sub.lineno) + 1))
    return lines


def edges(mods: dict[str, Path], top: str = "medsynth") -> list[Edge]:
    """Every import of a ``top`` module, anywhere in a module (functions included)."""
    out = []
    for name, f in mods.items():
        tree = ast.parse(f.read_text(), str(f))
        typed = _type_checking_lines(tree)
        is_pkg = f.name == "__init__.py"
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == top:
                        out.append(Edge(name, a.name, (), node.lineno, node.lineno in typed))
            elif isinstance(node, ast.ImportFrom):
                mod = node.module or ""
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    mod = ".".join([*base, *([mod] if mod else [])])
                if mod.split(".")[0] == top:
                    out.append(Edge(name, mod, tuple(a.name for a in node.names), node.lineno, node.lineno in typed))
    return out


def layer_of(module: str) -> tuple[str, int]:
    best = max((p for p in LAYERS if module == p[0] or module.startswith(p[0] + ".")), key=lambda p: len(p[0]))
    return best[1], best[2]


def _target(edge: Edge, mods: dict[str, Path]) -> list[str]:
    """The modules an import names: its submodules when it imports only those, else the module too."""
    subs = [f"{edge.dst}.{n}" for n in edge.names if f"{edge.dst}.{n}" in mods]
    return subs if edge.names and len(subs) == len(edge.names) else [edge.dst, *subs]


def _top_level_names(f: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(f.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.If, ast.Try)):
            for sub in ast.walk(node):
                if isinstance(sub, (ast.Import, ast.ImportFrom)):
                    names.update((a.asname or a.name).split(".")[0] for a in sub.names)
                elif isinstance(sub, (ast.FunctionDef, ast.ClassDef)):
                    names.add(sub.name)
                elif isinstance(sub, ast.Assign):
                    names.update(n.id for t in sub.targets for n in ast.walk(t) if isinstance(n, ast.Name))
    return names


def violations(roots: dict[str, Path]) -> list[str]:
    """Upward or sideways imports, cycles, and imports of names that do not exist, one line each."""
    mods = modules(roots)
    found: list[str] = []
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for e in edges(mods):
        if e.dst not in mods:
            found.append(f"{e.src}:{e.line} imports {e.dst}, which is not a module")
            continue
        missing = [n for n in e.names if n != "*" and f"{e.dst}.{n}" not in mods
                   and n not in _top_level_names(mods[e.dst])]
        if missing:
            found.append(f"{e.src}:{e.line} imports {', '.join(missing)} from {e.dst}, which defines no such name")
        for dst in _target(e, mods):
            if dst == e.src:
                continue
            (ls, rs), (ld, rd) = layer_of(e.src), layer_of(dst)
            if rd > rs or (rd == rs and ls != ld):
                found.append(f"{e.src}:{e.line} ({ls}) imports {dst} ({ld}): "
                             + ("upward" if rd > rs else "between independent layers"))
            if not e.type_only:
                graph[e.src].add(dst)
    found += [f"import cycle: {' -> '.join(c)}" for c in cycles(graph)]
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each as a closed path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp) + [sorted(comp)[0]])

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_package_keeps_the_import_contract():
    found = violations(package_roots())
    assert not found, "\n".join(found)


def test_the_contract_sees_every_package_folder():
    roots = package_roots()
    assert set(roots) == {"medsynth", "medsynth.components", "medsynth.training", "medsynth.monitoring",
                          "medsynth.pipelines", "medsynth.app"}
    mods = modules(roots)
    assert {"medsynth.config", "medsynth.readers.base", "medsynth.training.trainer", "medsynth.cli.train",
            "medsynth.components.gate", "medsynth.app.streamlit_app"} <= set(mods)
    assert layer_of("medsynth.readers.base") == ("core", 0)
    assert layer_of("medsynth.cli.train") == ("face", 3)
    assert layer_of("medsynth.training.loading") == ("training", 1)


def _fake_project(tmp_path: Path, files: dict[str, str]) -> dict[str, Path]:
    folders = {"medsynth": "medsynth", "medsynth.training": "training", "medsynth.monitoring": "monitoring",
               "medsynth.components": "components"}
    for folder in folders.values():
        (tmp_path / folder).mkdir(exist_ok=True)
        (tmp_path / folder / "__init__.py").write_text("")
    for rel, text in files.items():
        (tmp_path / rel).write_text(text)
    return {pkg: tmp_path / folder for pkg, folder in folders.items()}


def test_the_contract_fails_on_an_upward_import_a_sideways_one_and_a_cycle(tmp_path):
    roots = _fake_project(tmp_path, {
        "medsynth/core_a.py": "def f():\n    from medsynth.training.net import Net\n    return Net\n",
        "training/net.py": "class Net:\n    pass\n",
        "monitoring/drift.py": "from medsynth.training import net\n",
        "components/a.py": "from medsynth.components.b import g\n\ndef f():\n    return 1\n",
        "components/b.py": "def g():\n    from medsynth.components.a import f\n    return f\n",
    })
    found = violations(roots)
    assert any("medsynth.core_a:2 (core) imports medsynth.training.net (training): upward" in v for v in found), found
    assert any("medsynth.monitoring.drift:1" in v and "between independent layers" in v for v in found), found
    assert any(v.startswith("import cycle: medsynth.components.a -> medsynth.components.b") for v in found), found
    assert len(found) == 3


def test_the_contract_passes_downward_and_type_only_imports_and_catches_stale_names(tmp_path):
    roots = _fake_project(tmp_path, {
        "medsynth/imaging.py": "def to_unit(x):\n    return x\n",
        "training/net.py": "from medsynth.imaging import to_unit\n",
        "components/a.py": ("from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"
                            "    from medsynth.components.b import g\n\nfrom medsynth.training import net\n"),
        "components/b.py": "from medsynth.components.a import net\n\ndef g():\n    return net\n",
    })
    assert violations(roots) == []
    (tmp_path / "components/c.py").write_text("def h():\n    from medsynth.imaging import to_uint8\n"
                                              "    from medsynth.extractor import load\n")
    found = violations(roots)
    assert found == ["medsynth.components.c:2 imports to_uint8 from medsynth.imaging, which defines no such name",
                     "medsynth.components.c:3 imports medsynth.extractor, which is not a module"]


# Network layers that resample feature maps are architecture, not image resizing (imaging.py's docstring).
NETWORK_MODULES = {"training/resnet.py", "training/judge_net.py"}
PIXEL_PATTERNS = ("127.5", "/ 255", "* 255", "div_(255", "F.interpolate(", "adaptive_avg_pool2d(", "antialias=")


def pixel_code_outside_imaging(roots: dict[str, Path]) -> list[str]:
    """Lines of code (not comments or docstrings) that convert pixel values or resize images outside imaging.py."""
    found = []
    for name, f in modules(roots).items():
        rel = f.relative_to(ROOT).as_posix() if f.is_relative_to(ROOT) else f.as_posix()
        if name == "medsynth.imaging" or rel in NETWORK_MODULES:
            continue
        tree = ast.parse(f.read_text())
        docs = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                docs.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
        for i, line in enumerate(f.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if i not in docs and any(p in code for p in PIXEL_PATTERNS):
                found.append(f"{rel}:{i}: {line.strip()}")
    return found


def test_pixel_conversion_and_image_resizing_live_in_imaging_only():
    found = pixel_code_outside_imaging(package_roots())
    assert not found, "convert and resize through medsynth/imaging.py:\n" + "\n".join(found)


def test_the_pixel_check_sees_a_copy(tmp_path):
    roots = _fake_project(tmp_path, {"components/a.py": '"""v / 127.5 - 1 in a docstring is fine."""\n'
                                                         "def f(x):\n    return (x + 1) * 127.5  # a copy\n"})
    assert pixel_code_outside_imaging(roots) == [f"{(tmp_path / 'components/a.py').as_posix()}:3: return (x + 1) * 127.5  # a copy"]


NEW_FORMAT = '''"""A test-only format: 8-bit grey frames written as text, one row per line (``*.greytxt``)."""

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from medsynth.dataset import ImageRecord
from medsynth.readers.base import Format, Reject, SourceConfig, rel


def read(src: SourceConfig, path: Path, reject: Reject, rel_root: Path) -> Iterator[ImageRecord]:
    for f in [path] if path.is_file() else sorted(path.rglob("*.greytxt")):
        image = np.loadtxt(f, dtype=np.uint8, ndmin=2)
        yield ImageRecord(image=image, id=f.stem, source_file=rel(f, rel_root), source_format="greytxt",
                          modality=str(src.modality), class_name=src.classes[0])


FORMAT = Format(name="greytxt", read=read, claims=lambda p: p.suffix == ".greytxt", rank=5, whole_file=True,
                expects=".greytxt")
'''


def test_a_new_ingest_format_is_one_file(tmp_path):
    """Adding ``medsynth/readers/<format>.py`` is all it takes: the format is valid in a source, auto-detected and read."""
    import subprocess
    import sys

    module = ROOT / "medsynth" / "readers" / "greytxt.py"
    assert not module.exists()
    (tmp_path / "in").mkdir()
    np_text = "\n".join(" ".join(str((r * 16 + c) % 256) for c in range(16)) for r in range(16))
    (tmp_path / "in" / "a.greytxt").write_text(np_text)
    script = (
        "from pathlib import Path\n"
        "from medsynth.config import build\n"
        "from medsynth.readers import SourceConfig, SourceFormat, detect_format, read_source\n"
        f"root = Path({str(tmp_path)!r})\n"
        "src = build(SourceConfig, {'path': 'in', 'format': 'greytxt', 'modality': 'CT', 'classes': ['x']}, 'src')\n"
        "recs = list(read_source(src, root / 'in', lambda *a: None, root))\n"
        "print(SourceFormat('greytxt').name, detect_format(root / 'in').value, len(recs), recs[0].image.shape, "
        "int(recs[0].image[1, 0]))\n"
    )
    try:
        module.write_text(NEW_FORMAT)
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    finally:
        module.unlink(missing_ok=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["GREYTXT", "greytxt", "1", "(16,", "16)", "16"]


def test_module_names_say_what_they_hold():
    """Outside the CLI (one module per command, named after it) no two package modules share a file name."""
    from collections import Counter

    names = Counter(f.name for m, f in modules(package_roots()).items()
                    if f.name != "__init__.py" and not m.startswith("medsynth.cli."))
    assert [n for n, k in names.items() if k > 1] == []
