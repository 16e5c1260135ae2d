"""The package's public surface: what a user script needs, the errors it catches, nothing internal."""

import subprocess
import sys

import pytest

import ronas_optuna


def test_every_public_name_resolves_and_is_listed_once():
    assert len(set(ronas_optuna.__all__)) == len(ronas_optuna.__all__)  # ruff keeps it sorted (RUF022)
    assert set(ronas_optuna.__all__) == set(ronas_optuna._EXPORTS) | {"__version__"}
    for name in ronas_optuna.__all__:
        assert getattr(ronas_optuna, name) is not None, name
    assert dir(ronas_optuna) == sorted(ronas_optuna.__all__)


def test_a_script_can_catch_every_user_error_from_the_top_level():
    from ronas_optuna import errors

    for name in (
        "CheckpointError",
        "DataError",
        "RunFolderBusy",
        "SettingsError",
        "StorageError",
        "WriteError",
    ):
        assert issubclass(getattr(ronas_optuna, name), ronas_optuna.UserError)
        assert getattr(ronas_optuna, name) is getattr(errors, name)


@pytest.mark.parametrize("name", sorted(ronas_optuna._MOVED))
def test_an_internal_name_exported_before_still_resolves_with_a_warning_that_says_where(name):
    with pytest.warns(
        FutureWarning, match=f"ronas_optuna.{name} is internal.*ronas_optuna.{ronas_optuna._MOVED[name]}"
    ):
        value = getattr(ronas_optuna, name)
    assert value.__name__ == name
    assert name not in ronas_optuna.__all__


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        ronas_optuna.Nope  # noqa: B018


def test_importing_the_package_loads_neither_torch_nor_optuna():
    code = "import sys, ronas_optuna; print('torch' in sys.modules, 'optuna' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
