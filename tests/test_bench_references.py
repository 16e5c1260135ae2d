"""bench.references: DynUNet's recipe chosen on validation cases."""

from ronas_optuna.bench import references
from ronas_optuna.bench.config import BenchmarkConfig
from ronas_optuna.bench.fold import fold_splits, make_setup


def test_the_dynunet_recipe_is_chosen_on_validation_cases_only(synthetic_root, tmp_path, monkeypatch):
    from ronas_optuna.data import MSDDataset
    from ronas_optuna.evaluator import DiceResult
    from ronas_optuna.storage import open_storage

    cfg = BenchmarkConfig(data=str(synthetic_root), folds=2, handmade=True, device="cpu")
    ds = MSDDataset(synthetic_root, spacing=2.0, cache_dir=tmp_path / "cache")
    setup = make_setup(cfg, ds, 0, fold_splits(cfg, ds.case_ids)[0])
    trained_on, scored_on = [], []

    def fake_train(setup, seed, seconds, recipe, case_ids, monitor=None, name=None):
        trained_on.append((recipe, list(case_ids)))
        return recipe, 5, 0.1, []  # the "network" is its recipe's name

    class FakeEvaluator:
        def __init__(self, cases, num_classes, device):
            scored_on.extend(c.case_id for c in cases)

        def evaluate(self, net, patch, overlap):
            return DiceResult.from_per_case([[{"nnunet-sgd": 0.7, "adam": 0.6}[net]]])

    monkeypatch.setattr(references, "train_dynunet", fake_train)
    monkeypatch.setattr(references, "Evaluator", FakeEvaluator)
    storage = open_storage(f"sqlite:///{tmp_path / 'r.db'}")
    recipe, scores = references.handmade_recipe(setup, storage, 1.0)
    assert recipe == "nnunet-sgd" and scores == {"nnunet-sgd": 0.7, "adam": 0.6}
    assert {r for r, _ in trained_on} == {"nnunet-sgd", "adam"}
    assert all(ids == setup.train_ids for _, ids in trained_on)
    assert sorted(scored_on) == sorted(setup.val_ids) and not set(scored_on) & set(setup.test_ids)
    assert (
        references.handmade_recipe(setup, storage, 1.0) == (recipe, scores) and len(trained_on) == 2
    )  # kept
