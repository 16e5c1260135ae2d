"""``ronas demo``, the README's main job, end to end (its warm-up and fine-tuning shortened)."""

import nibabel as nib
import optuna
import pytest
from click.testing import CliRunner

from ronas_optuna import SearchSettings
from ronas_optuna.cli import main


@pytest.mark.slow
def test_the_demo_searches_exports_predicts_and_says_when_the_warmup_took_the_budget(tmp_path, monkeypatch):
    demo_settings = SearchSettings.from_options  # 300 warm-up and 150 fine-tuning steps: minutes here

    def shorter(**options):
        return demo_settings(**{**options, "warmup_steps": 20, "finetune_steps": 10})

    monkeypatch.setattr(SearchSettings, "from_options", staticmethod(shorter))
    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path / 'demo.db'}"
    args = ["demo", "--seconds", "1", "--trials", "2", "--storage", storage, "--workdir", "work"]
    r = CliRunner().invoke(main, [*args, "--device", "cpu"])
    assert r.exit_code == 0, r.output[-2000:]
    assert "note: the warm-up took" in r.output and "--seconds" in r.output  # 20 steps take over 0.5 s
    assert "final model (shared weights after in-supernet fine-tuning" in r.output
    study = optuna.load_study(study_name="demo", storage=storage)
    assert study.trials[-1].user_attrs.get("phase") == "finetune" and len(study.trials) >= 2
    (pred,) = (tmp_path / "work" / "predictions").glob("*.nii.gz")
    image = nib.load(tmp_path / "work" / "data" / "imagesTr" / pred.name)
    assert nib.load(pred).shape == image.shape[:3]  # in the input's geometry
    assert f"ronas dashboard --storage {storage}" in r.output
