"""bench.speed: budgets carried from one machine to another in units of a calibration step."""

import itertools
import time

import optuna
import pytest
import torch

from ronas_optuna.bench import references, speed
from ronas_optuna.bench.search_run import _StudyClock

SLOW = speed.MachineSpeed("slow machine", 1, 2.0)
FAST = speed.MachineSpeed("fast machine", 1, 0.5)


class FakeClock:
    """A budget clock moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_speed_is_the_median_step_time_on_the_budget_clock():
    readings = iter([0.0, 3.0, 10.0, 11.0, 20.0, 22.0])  # three timed steps: 3, 1 and 2 seconds
    measured = speed.measure_speed("cpu", lambda: next(readings), steps=3, warmup=0)
    assert measured.s_per_unit == 2.0 and measured.threads == torch.get_num_threads()
    assert measured.cpu == speed.cpu_name() != ""
    assert next(readings, None) is None  # the clock is read around each timed step only


def test_the_calibration_leaves_the_callers_random_state_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    speed.measure_speed("cpu", time.process_time, steps=1, warmup=0)
    assert torch.equal(torch.rand(3), expected)


def test_a_machine_speed_converts_seconds_and_units_both_ways():
    assert SLOW.units(10.0) == 5.0 and SLOW.seconds(5.0) == 10.0
    assert FAST.seconds(SLOW.units(10.0)) == 2.5  # the same compute takes a quarter of the time there


def test_a_row_s_budget_is_its_units_or_for_a_row_kept_before_units_its_seconds_here():
    assert speed.budget_units({"budget_s": 80.0, "budget_units": 40.0}, FAST) == 40.0
    assert speed.budget_units({"budget_s": 80.0}, FAST) == 160.0
    assert speed.budget_units({"search_s": 70.0, "export_s": 10.0}, FAST) == 160.0


def test_the_unit_clock_counts_the_budget_clock_in_this_machine_s_units(monkeypatch):
    readings = itertools.count(0.0, 3.0)
    monkeypatch.setattr(speed, "_cached_speed", lambda *a: speed.MachineSpeed("m", 1, 1.5))
    monkeypatch.setattr("ronas_optuna.bench.fold.budget_clock", lambda device: lambda: next(readings))
    clock = speed.unit_clock("cpu")
    assert [clock(), clock(), clock()] == [0.0, 2.0, 4.0]


def _study(spent=None):
    study = optuna.create_study()
    if spent is not None:
        study.set_user_attr("benchmark:spent", spent)
    return study


def test_a_search_resumed_on_another_machine_adds_each_machine_s_units():
    clock = FakeClock()
    study = _study()
    first = _StudyClock.resume(study, clock, SLOW)
    clock.now += 100.0  # 100 s on the slow machine: 50 units
    first.record(study)
    second = _StudyClock.resume(study, clock, FAST)
    clock.now += 30.0  # 30 s on the fast one: 60 units
    assert second.budget_s() == pytest.approx(130.0) and second.units() == pytest.approx(110.0)
    since = clock()
    clock.now += 10.0  # a measurement, left out of the budget
    second.exclude(since)
    assert second.units() == pytest.approx(110.0)
    second.record(study)
    assert study.user_attrs["benchmark:spent"]["units"] == pytest.approx(110.0)


def test_a_search_recorded_before_units_reads_its_time_as_this_machine_s():
    clock = FakeClock()
    resumed = _StudyClock.resume(_study({"budget_s": 100.0, "search_s": 120.0}), clock, FAST)
    clock.now += 5.0
    assert resumed.units() == pytest.approx(210.0)


def test_dynunet_trains_for_the_search_s_units_on_this_machine_s_clock(synthetic_root, tmp_path, monkeypatch):
    """A search that spent 80 s on a machine of 2 s a unit (40 units) gives DynUNet 40 units here:
    20 s at 0.5 s a unit, on a clock that counts units; the row keeps both and the machine."""
    from ronas_optuna.bench.config import BenchmarkConfig
    from ronas_optuna.bench.fold import fold_splits, make_setup
    from ronas_optuna.data import MSDDataset
    from ronas_optuna.storage import open_storage

    cfg = BenchmarkConfig(
        data=str(synthetic_root), folds=2, handmade=True, device="cpu", handmade_recipe="adam"
    )
    ds = MSDDataset(synthetic_root, spacing=2.0, cache_dir=tmp_path / "cache")
    setup = make_setup(cfg, ds, 0, fold_splits(cfg, ds.case_ids)[0])
    asked = []

    def fake_train(net, cases, patch, seconds, *, clock, checkpoint=None, tag="", **kw):
        asked.append((seconds, clock, tag))
        return net, 7, []

    monkeypatch.setattr("ronas_optuna.bench.handmade.train_for_seconds", fake_train)
    monkeypatch.setattr(speed, "_cached_speed", lambda device, threads, clock: FAST)
    setup.checkpoints = tmp_path / "checkpoints"
    search_row = {"budget_s": 80.0, "budget_units": 40.0, "machine": SLOW.to_dict()}
    units = speed.budget_units(search_row, FAST)
    row = references.run_handmade(setup, open_storage(f"sqlite:///{tmp_path / 'r.db'}"), 0, units)
    ((seconds, clock, tag),) = asked
    ids = setup.train_ids + setup.val_ids
    assert seconds == 40.0 and tag == setup.resumable("x", "adam", "40.000u", *ids)["tag"]
    before = time.process_time()
    assert clock() == pytest.approx(before / 0.5, abs=0.1)
    assert row["budget_units"] == 40.0 and row["budget_s"] == 20.0
    assert row["machine"] == FAST.to_dict() and row["arch"].endswith("7 steps")


UNCALIBRATED = speed.MachineSpeed("no monai", 1, 1.0, calibrated=False)


def test_without_monai_the_speed_is_uncalibrated_and_said_once(monkeypatch, caplog):
    from ronas_optuna.errors import SettingsError

    def no_monai(*a):
        raise SettingsError("the hand-made reference needs MONAI: pip install -e '.[bench]'")

    monkeypatch.setattr("ronas_optuna.bench.handmade.dynunet", no_monai)
    with caplog.at_level("WARNING", logger="ronas_optuna.bench.speed"):
        measured = speed.calibrate("cpu", time.process_time)
    assert not measured.calibrated and measured.s_per_unit == 1.0 and measured.units(7.0) == 7.0
    assert len(caplog.records) == 1 and "needs MONAI" in caplog.records[0].getMessage()
    assert measured.row_fields(5.0) == {} and FAST.row_fields(5.0)["budget_units"] == 5.0


def test_an_uncalibrated_machine_reads_a_row_by_its_seconds_and_keeps_no_units():
    assert speed.budget_units({"budget_s": 80.0, "budget_units": 40.0}, UNCALIBRATED) == 80.0
    clock = FakeClock()
    study = _study({"budget_s": 100.0, "search_s": 120.0, "units": 50.0})
    resumed = _StudyClock.resume(study, clock, UNCALIBRATED)
    clock.now += 5.0
    assert resumed.units() == pytest.approx(105.0)  # its seconds
    resumed.record(study)
    assert "units" not in study.user_attrs["benchmark:spent"]
