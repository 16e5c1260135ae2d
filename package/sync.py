"""Write the OptunaHub package's own copy of the sampler from the library.

OptunaHub loads a package folder as it is (``optunahub.load_module``), with nothing installed but
its ``requirements.txt``, and ``ronas_optuna`` is not on a package index. So the package carries the
four modules the sampler needs, copied here into ``samplers/ronas/_ronas/``: ``attrs``, ``controller``,
``sampler`` and ``space`` (they import nothing else of the library). The copies are laid out by the
registry's lint settings (``package/pyproject.toml``: single-line imports, 99 columns), so the
registry's pre-commit passes on them.

Run it after changing any of those modules::

    python package/sync.py

``tests/test_optunahub_package.py`` fails while a copy differs from its library module in anything but
the import layout and formatting.
"""

from __future__ import annotations

from pathlib import Path
import subprocess
import sys


ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "ronas_optuna"
COPY = Path(__file__).resolve().parent / "samplers" / "ronas" / "_ronas"
#: The library modules the sampler needs, and nothing else of the library.
MODULES = ("attrs", "controller", "sampler", "space")
HEADER = "# Copied from ronas_optuna/{name}.py by package/sync.py: edit that file, then run the script.\n"
INIT = '''"""The ronas_optuna modules RONASSampler needs, copied by ``package/sync.py``; do not edit."""
'''


def write(dest: Path = COPY) -> list[Path]:
    """Write the copies into ``dest`` and lay them out by the registry's settings."""
    dest.mkdir(parents=True, exist_ok=True)
    written = [dest / "__init__.py"]
    written[0].write_text(INIT)
    for name in MODULES:
        path = dest / f"{name}.py"
        path.write_text(HEADER.format(name=name) + (LIBRARY / f"{name}.py").read_text())
        written.append(path)
    config = ["--config", str(Path(__file__).resolve().parent / "pyproject.toml")]
    files = [str(p) for p in written]
    ruff = [sys.executable, "-m", "ruff"]
    subprocess.run([*ruff, "check", "--fix-only", "--quiet", *config, *files], check=True)
    subprocess.run([*ruff, "format", "--quiet", *config, *files], check=True)
    return written


if __name__ == "__main__":
    for p in write():
        print(p.relative_to(ROOT))
