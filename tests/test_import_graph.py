import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _graph_module():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "benchmarks" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["import_graph"] = module
    spec.loader.exec_module(module)
    return module


def test_the_package_has_no_import_circle():
    g = _graph_module()
    graph = g.imports(ROOT / "ronas_optuna")
    assert g.circles(graph) == []


def test_a_circle_is_found_wherever_its_edges_sit(tmp_path):
    g = _graph_module()
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import x\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import y\n")
    (pkg / "c.py").write_text("def f():\n    from .a import z\n")
    (pkg / "d.py").write_text("from . import a\n")
    graph = g.imports(pkg)
    assert g.circles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]
    assert g.floors(graph)["pkg.d"] == 3
