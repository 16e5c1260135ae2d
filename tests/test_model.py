"""ronas_optuna.model: the saved final network loads without the search."""

import subprocess
import sys


def test_loading_a_model_imports_neither_optuna_nor_the_search():
    code = (
        "import sys\n"
        "from ronas_optuna import FinalModel\n"
        "FinalModel.load\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('optuna', 'ronas_optuna')))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(eval(r.stdout))
    assert not {m for m in loaded if m == "optuna" or m.startswith("optuna.")}
    for search in ("objective", "sampler", "trainer", "final", "controller", "supernet"):
        assert f"ronas_optuna.{search}" not in loaded
    assert "ronas_optuna.model" in loaded and "ronas_optuna.network" in loaded
