"""The package's shape (issue 21): no import circle between hf_mmkd's modules, no module over 700 lines, no
function over 80 lines in the training package, and `hf-mmkd --help` without torch or transformers."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# hf_mmkd's modules: the package folder, and modeling/ (installed as hf_mmkd.modeling, see pyproject.toml)
SOURCES = {"hf_mmkd": ROOT / "hf_mmkd", "hf_mmkd.modeling": ROOT / "modeling"}
MAX_MODULE_LINES = 700
MAX_FUNCTION_LINES = 80


def modules() -> dict[str, Path]:
    """`{dotted module name: file}` of every hf_mmkd module (a package by its __init__.py)."""
    found = {}
    for prefix, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([prefix, *parts])] = path
    return found


def import_graph(found: dict[str, Path]) -> dict[str, set[str]]:
    """`{module: the hf_mmkd modules it imports}` (module level and inside functions alike; relative imports
    resolved). `from pkg import name` counts as importing `pkg.name` when that is a module, else `pkg`."""
    graph = {}
    for name, path in found.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # from .x import y: x in this package (level 1) or above it
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in found else base for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in found:  # `import hf_mmkd.data.spec.x` -> the module it names
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None (depth-first search, white/grey/black)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "grey"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "grey":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "black"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_find_cycle_finds_a_circle_and_only_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None  # a diamond is no circle


def test_import_graph_resolves_relative_and_from_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "hf_mmkd"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("from .spec import X\n")
    (pkg / "data" / "spec.py").write_text("def f():\n    from hf_mmkd.data import demo\n")
    (pkg / "data" / "demo.py").write_text("from hf_mmkd.data.spec import X\nimport json\n")
    monkeypatch.setitem(SOURCES, "hf_mmkd", pkg)
    monkeypatch.delitem(SOURCES, "hf_mmkd.modeling")
    graph = import_graph(modules())
    assert graph["hf_mmkd.data"] == {"hf_mmkd.data.spec"}
    assert graph["hf_mmkd.data.spec"] == {"hf_mmkd.data.demo"}
    assert graph["hf_mmkd.data.demo"] == {"hf_mmkd.data.spec"}
    cycle = find_cycle(graph)
    assert cycle[0] == cycle[-1] and sorted(cycle[:-1]) == ["hf_mmkd.data.demo", "hf_mmkd.data.spec"]


def test_no_import_circle():
    graph = import_graph(modules())
    assert {"hf_mmkd.trainer", "hf_mmkd.training.state"} <= graph["hf_mmkd.training.stages"]  # the graph is real
    assert find_cycle(graph) is None


def test_no_module_over_700_lines():
    sizes = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in modules().items()}
    assert {n: s for n, s in sizes.items() if s > MAX_MODULE_LINES} == {}


def test_no_function_over_80_lines_in_the_training_package():
    long = {}
    for path in sorted((ROOT / "hf_mmkd" / "training").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                if node.end_lineno - start + 1 > MAX_FUNCTION_LINES:
                    long[f"{path.name}:{node.name}"] = node.end_lineno - start + 1
    assert long == {}


@pytest.mark.parametrize("argv", [["--help"], ["evaluate"], ["predict", "x"], ["publish", "x", "--repo-id", "a--b"],
                                  ["publish", "x", "--repo-id", "me/x"]])  # the help, and argument errors
def test_cli_help_imports_neither_torch_nor_transformers(argv):
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "hf_mmkd.cli", *argv], capture_output=True,
                            text=True, timeout=120, cwd=ROOT)
    assert result.returncode == (0 if argv == ["--help"] else 2 if argv == ["evaluate"] else 1), result.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "hf_mmkd.io" in imported  # the measurement saw the command's own imports (cli runs as __main__)
    assert {"torch", "transformers", "gradio", "sklearn"} & imported == set()
