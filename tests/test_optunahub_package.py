"""The OptunaHub package in ``package/samplers/ronas``: it carries its own copy of the sampler, the
copy cannot drift from the library, it loads as the registry loads it and runs, and it installs and
runs on a machine without ``ronas_optuna``."""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "package" / "samplers" / "ronas"
COPY = PACKAGE / "_ronas"
MODULES = ("attrs", "controller", "sampler", "space")


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _single_imports(statements: list[ast.stmt]) -> list[ast.stmt]:
    """``statements`` with each import of several names split into one per name, and each run of
    imports sorted (the layout the registry's isort settings choose)."""
    out: list[ast.stmt] = []
    run: list[ast.stmt] = []
    for node in [*statements, None]:
        if isinstance(node, ast.ImportFrom):
            run += [ast.ImportFrom(node.module, [a], node.level) for a in node.names]
        elif isinstance(node, ast.Import):
            run += [ast.Import([a]) for a in node.names]
        else:
            out += sorted(run, key=ast.dump)
            run = []
            if node is not None:
                out.append(node)
    return out


def _code(path: Path) -> tuple[set[str], list[str]]:
    """A module's top-level imports, one name each, and the rest of its statements, with the
    imports inside them laid out alike: what the code is, its formatting and import layout aside."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                setattr(node, field, _single_imports(block))
    imports = {ast.dump(n) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))}
    body = [ast.dump(n) for n in tree.body if not isinstance(n, (ast.Import, ast.ImportFrom))]
    return imports, body


@pytest.mark.parametrize("name", MODULES)
def test_the_packages_copy_of_each_module_is_the_librarys(name):
    # after changing the module: python package/sync.py
    assert _code(COPY / f"{name}.py") == _code(ROOT / "ronas_optuna" / f"{name}.py")


def test_the_copied_modules_import_nothing_else_of_the_library():
    for name in MODULES:
        for node in ast.walk(ast.parse((COPY / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                assert node.module in MODULES, (name, node.module)


def test_the_sync_script_writes_the_copy_the_package_holds(tmp_path):
    sync = _load(ROOT / "package" / "sync.py", "ronas_hub_sync")
    for path in sync.write(tmp_path / "_ronas"):
        assert path.read_text() == (COPY / path.name).read_text(), path.name


def _hub_module():
    optunahub = pytest.importorskip("optunahub")
    return optunahub.load_local_module("samplers/ronas", registry_root=str(ROOT / "package"))


def test_the_package_proposes_what_the_library_proposes():
    from ronas_optuna import RONASSampler

    def objective(trial: optuna.Trial) -> float:
        return sum(trial.suggest_categorical(f"e{i}", [0, 1, 2]) for i in range(4))

    runs = []
    for sampler in (_hub_module().RONASSampler(seed=3), RONASSampler(seed=3)):
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.optimize(objective, n_trials=25)
        runs.append([t.params for t in study.trials])
    assert runs[0] == runs[1]


def test_the_example_runs_a_few_trials_and_learns():
    example = _load(PACKAGE / "example.py", "ronas_hub_example")
    study = example.main(module=_hub_module(), n_trials=60)
    assert len(study.trials) == 60 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert study.best_value >= 5.0  # of 6: the policy finds good cells (a random draw averages 2.8)


def test_the_readme_has_the_registry_front_matter():
    text = (PACKAGE / "README.md").read_text()
    front = text.split("---")[1]
    for key in ("author:", "title:", "description:", "tags:", "optuna_versions:", "license:"):
        assert key in front
    assert f"optuna_versions: [{optuna.__version__}]" in front  # the version the tests run
    requirements = (PACKAGE / "requirements.txt").read_text()
    assert (PACKAGE / "LICENSE").exists() and "ronas_optuna" not in requirements


@pytest.mark.slow
def test_the_package_installs_and_runs_in_a_fresh_venv_without_ronas_optuna(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    # the machine's CPU build of torch (an open range would fetch a CUDA build)
    pin = tmp_path / "constraints.txt"
    pin.write_text(f"torch=={__import__('torch').__version__.split('+')[0]}\n")
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "-c", str(pin), "-r", str(PACKAGE / "requirements.txt"), "optunahub"], check=True)
    script = (
        "import importlib.util, optunahub\n"
        "assert importlib.util.find_spec('ronas_optuna') is None\n"
        f"m = optunahub.load_local_module('samplers/ronas', registry_root={str(ROOT / 'package')!r})\n"
        f"spec = importlib.util.spec_from_file_location('ex', {str(PACKAGE / 'example.py')!r})\n"
        "ex = importlib.util.module_from_spec(spec); spec.loader.exec_module(ex)\n"
        "study = ex.main(module=m, n_trials=40)\n"
        "assert len(study.trials) == 40\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run([python, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "best value" in done.stdout


@pytest.mark.slow
def test_the_package_passes_the_registrys_checks(tmp_path):
    # the registry's pre-commit: ruff 0.3.5 (check and format), mypy 1.9 and mdformat, each in a
    # venv of its own as pre-commit has it, with the registry's settings (package/pyproject.toml)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "ruff==0.3.5", "mypy==1.9.0", "mdformat==0.7.16", "mdformat-frontmatter"], check=True
    )
    registry = ROOT / "package"
    files = [str(p.relative_to(registry)) for p in PACKAGE.rglob("*.py")]
    settings = ["--config", "pyproject.toml"]  # the registry's root settings (this repository's are above)
    for check in (
        ["ruff", "check", "--no-fix", *settings, *files],
        ["ruff", "format", "--check", *settings, *files],
        ["mypy", "samplers/ronas"],
        ["mdformat", "--check", str(PACKAGE / "README.md")],
    ):
        done = subprocess.run(
            [str(venv / "bin" / check[0]), *check[1:]], cwd=registry, capture_output=True, text=True
        )
        assert done.returncode == 0, (check, done.stdout[-2000:], done.stderr[-2000:])
