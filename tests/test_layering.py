"""The packages point one way: ``npu`` at the bottom; ``compiler``, ``runtime`` and ``hdl`` on it; the command line
(``npu_toolkit``) on top.  Every import in every module counts, including those inside functions."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("npu", "compiler", "runtime", "hdl", "npu_toolkit")
#: What each package may import of the project (besides itself).
ALLOWED = {
    "npu": set(),
    "compiler": {"npu"},
    "runtime": {"npu", "hdl"},
    "hdl": {"npu"},
    "npu_toolkit": {"npu", "compiler", "runtime", "hdl"},
}


def _imports(path: Path) -> set[str]:
    """The project packages a module imports (absolute imports; relative ones stay inside the package)."""
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {n.split(".")[0] for n in names if n.split(".")[0] in PACKAGES}
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_point_down(package):
    wrong = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for target in _imports(path) - {package} - ALLOWED[package]:
            wrong.append(f"{path.relative_to(ROOT)} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_every_package_is_checked():
    top = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    assert top == set(PACKAGES)
