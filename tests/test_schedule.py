import itertools

import pytest

from ronas_optuna.schedule import cosine_factor, lr_factor


@pytest.mark.parametrize("total", [2, 10, 401])
def test_cosine_starts_at_one_ends_at_the_floor_and_falls_monotonically(total):
    f = [cosine_factor(s, total) for s in range(total)]
    assert f[0] == 1.0 and f[-1] == pytest.approx(0.02)
    assert all(a > b for a, b in itertools.pairwise(f))
    assert cosine_factor(total + 50, total) == pytest.approx(0.02)  # past the plan: stays at the floor
    assert cosine_factor(-3, total) == 1.0


def test_constant_and_unknown_length_keep_the_rate_and_bad_names_are_refused():
    assert lr_factor("constant", 7, 10) == 1.0
    assert lr_factor("cosine", 7, None) == 1.0
    assert lr_factor("cosine", 5, 11) == pytest.approx(cosine_factor(5, 11))
    with pytest.raises(ValueError, match="lr schedule must be one of constant, cosine"):
        lr_factor("linear", 0, 10)


def test_anneal_keeps_the_rate_through_the_search_and_decays_over_the_fine_tuning():
    total, finetune = 100, 20
    search = [lr_factor("anneal", s, total, finetune_steps=finetune) for s in range(80)]
    tail = [lr_factor("anneal", s, total, finetune_steps=finetune) for s in range(80, 100)]
    assert search == [1.0] * 80
    assert tail[0] == 1.0 and tail[-1] == pytest.approx(0.02)
    assert tail == [pytest.approx(cosine_factor(i, finetune)) for i in range(20)]
