import pytest

from ronas_optuna.bench.variant import controller_variant
from ronas_optuna.controller import ControllerConfig


def test_default_and_fields_of_every_kind():
    assert controller_variant("default") == ControllerConfig()
    hot = ControllerConfig(temperature=5.0)
    assert controller_variant("default", hot) == hot and controller_variant("lr=0.5", hot).temperature == 5.0
    cfg = controller_variant("lr=0.02,batch_size=5,normalize_advantage=false,risk_quantile=0.2")
    assert cfg == ControllerConfig(lr=0.02, batch_size=5, normalize_advantage=False, risk_quantile=0.2)
    assert isinstance(cfg.batch_size, int)


@pytest.mark.parametrize(
    "text,message",
    [
        ("learning_rate=0.1", "unknown ControllerConfig field 'learning_rate'"),
        ("normalize_advantage=no", "normalize_advantage takes true or false"),
        ("batch_size=two", "batch_size takes a number"),
    ],
)
def test_bad_variants_are_one_line_errors(text, message):
    with pytest.raises(ValueError, match=message):
        controller_variant(text)
