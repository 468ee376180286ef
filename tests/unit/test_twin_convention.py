"""One rule for plain-Python twins of kernels: test-only references live in `*_twins.py` modules (named
`<kernel>_py`) that production never imports; Python that production runs itself is named for what it
is (`..._slow_path`), never a twin."""
import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "anomaly_detector"


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, ast.parse(path.read_text())


def test_twins_are_defined_only_in_twins_modules():
    misplaced = [f"{path.relative_to(PACKAGE)}: {node.name}" for path, tree in _modules()
                 if not path.name.endswith("_twins.py")
                 for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.endswith("_py")]
    assert misplaced == []


def test_production_never_imports_a_twins_module():
    offenders = []
    for path, tree in _modules():
        if path.name.endswith("_twins.py"):
            continue
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [a.name for a in node.names]
            if any(n.split(".")[-1].endswith("_twins") for n in names):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert offenders == []
