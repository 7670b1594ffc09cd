"""The package's shape (../shared/DESIGN.md): imports flow one way, nothing imports the CLI, and the code is ruff
clean. Import edges are read from the source with ``ast`` (function-level imports included)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO

SRC = REPO / "src" / "derain"

# Lower layers never import higher ones: types, errors, io <- nn <- archs <- weights <- inference, evaluate, train
# <- __init__ <- web <- cli (which alone starts the pages); metrics <- losses <- train; data never sees archs
# or weights; device (names, torchrun's process) sits beside io, below inference and train, which both use it.
LAYER = {
    "errors": 0, "types": 1, "io": 2, "metrics": 2, "downstream": 2, "device": 2, "data": 3, "nn": 3, "losses": 3,
    "archs": 4, "weights": 5, "inference": 6, "evaluate": 7, "train": 7, "__init__": 8, "web": 9, "cli": 10,
    "__main__": 11,
}
NEVER = {"data": {"archs", "weights"}}
LEAVES = {"cli", "__main__"}  # nothing imports these (but ``python -m derain``, which runs the CLI)
ONLY_FROM = {"web": {"cli"}}  # the web pages are started by the CLI only (and import the web extra lazily)


def _unit(path_parts: tuple[str, ...]) -> str:
    """The top-level unit a module belongs to: ``derain.archs.sian`` -> ``archs``, ``derain`` -> ``__init__``."""
    return path_parts[0] if path_parts else "__init__"


def _edges() -> list[tuple[str, str, str]]:
    """(importing file, importing unit, imported unit) for every import of derain inside the package."""
    edges = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).with_suffix("").parts  # ("archs", "sian"), ("__init__",), ("cli",)
        unit = rel[0]
        package = rel[:-1]
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets: list[tuple[str, ...]] = []
            if isinstance(node, ast.Import):
                targets = [tuple(a.name.split(".")[1:]) for a in node.names if a.name.split(".")[0] == "derain"]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative import: resolve against the package
                    base = package[: len(package) - node.level + 1]
                    targets = [base + tuple((node.module or "").split(".")) if node.module else base]
                elif node.module and node.module.split(".")[0] == "derain":
                    parts = tuple(node.module.split(".")[1:])
                    targets = [parts] if parts else [(a.name,) for a in node.names]
            for target in targets:
                imported = _unit(tuple(p for p in target if p))
                if imported in LAYER and imported != unit:
                    edges.append((str(path.relative_to(REPO)), unit, imported))
    return edges


def test_every_unit_has_a_layer() -> None:
    units = {p.name if p.is_dir() else p.stem for p in SRC.iterdir() if p.suffix == ".py" or
             (p.is_dir() and (p / "__init__.py").exists())}
    assert units <= set(LAYER), f"give these a layer in tests/test_layout.py: {sorted(units - set(LAYER))}"


def test_imports_flow_one_way() -> None:
    edges = _edges()
    assert edges, "the import scan found nothing: the test itself is broken"
    upward = [f"{f}: {u} -> {i}" for f, u, i in edges if LAYER[i] >= LAYER[u]]
    forbidden = [f"{f}: {u} -> {i}" for f, u, i in edges
                 if i in NEVER.get(u, set()) or (i in LEAVES and u != "__main__")
                 or (i in ONLY_FROM and u not in ONLY_FROM[i])]
    assert not upward, "imports against the layering: " + "; ".join(upward)
    assert not forbidden, "forbidden imports: " + "; ".join(forbidden)


def test_no_private_names_from_training_outside_it() -> None:
    """The benchmarks and scripts that time or check a training step use derain.train's public names
    (``derain.train.datasets.build_datasets``, ``derain.train.loop.optimizer_step``), never its private ones."""
    found = []
    for folder in (SRC, REPO / "benchmarks", REPO / "scripts"):
        for path in sorted(folder.rglob("*.py")):
            if path.is_relative_to(SRC / "train"):
                continue
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("derain.train"):
                    found += [f"{path.relative_to(REPO)}: {node.module}.{a.name}" for a in node.names
                              if a.name.startswith("_")]
    assert not found, "; ".join(found)


def test_every_benchmark_and_script_has_its_line_in_the_index() -> None:
    """benchmarks/README.md and scripts/README.md: one line per file (what it measures or makes, how long, which
    docs table it feeds)."""
    missing = [f"{folder}/{path.name}" for folder in ("benchmarks", "scripts")
               for path in sorted((REPO / folder).glob("*.py"))
               if f"| `{path.name}` |" not in (REPO / folder / "README.md").read_text()]
    assert not missing, "add a line to the folder's README.md for: " + ", ".join(missing)


def test_ruff_is_clean() -> None:
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    proc = subprocess.run([ruff, "check", "--quiet", "src", "tests", "benchmarks"], cwd=REPO, capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-1000:]


def test_python_dash_m_derain_is_the_cli() -> None:
    proc = subprocess.run([sys.executable, "-m", "derain", "--help"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "eval" in proc.stdout and "convert" in proc.stdout


def test_tests_mirror_the_package() -> None:
    """Tests of ``src/derain/<unit>/`` live in ``tests/<unit>/``; only tests of top-level modules and of the whole
    (CLI, layout, reproductions, benchmarks) sit in ``tests/``. No test module imports from another test module:
    shared helpers live in ``conftest.py`` (or a helper module that is not a test module)."""
    tests = REPO / "tests"
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    folders = {p.name for p in tests.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))}
    assert folders <= packages, f"test folders without a package of the same name: {sorted(folders - packages)}"
    for folder in folders:
        assert (tests / folder / "__init__.py").exists(), f"tests/{folder}/__init__.py is missing"
    crossing = []
    for path in sorted(tests.rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            module = node.module if isinstance(node, ast.ImportFrom) and node.module else ""
            if module.split(".")[0] == "tests" and module.rsplit(".", 1)[-1].startswith("test_"):
                crossing.append(f"{path.relative_to(REPO)} imports {module}")
    assert not crossing, "; ".join(crossing)
