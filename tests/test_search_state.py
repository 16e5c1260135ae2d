"""The search's counters and best weights, and the checkpoint generations that carry them."""

import pytest
import torch

from ronas_optuna import CheckpointError, SearchSpace, Supernet
from ronas_optuna.files import previous_path
from ronas_optuna.search_state import SearchCheckpoint, SearchState, best_after
from ronas_optuna.trainer import PathTrainer

SPACE = SearchSpace.default(depth=2, base_width=4, max_width=8)


def _parts(seed):
    torch.manual_seed(seed)
    net = Supernet(SPACE, 1, 3)
    return net, PathTrainer(net.parameters(), [], batch_size=1, lr=1e-2)


def test_the_state_travels_as_checkpoint_extra():
    state = SearchState(trials_trained=4, warmup_done=7, best_snapshot={"trial": 2, "value": 0.5})
    assert SearchState.from_extra(state.to_extra()) == state
    assert SearchState.from_extra({}) == SearchState()  # a checkpoint of an early version


def test_the_best_snapshot_changes_only_for_a_better_value():
    net, _ = _parts(0)
    arch = SPACE.sample(__import__("numpy").random.default_rng(0))
    first = best_after(None, trial=0, value=0.4, arch=arch, supernet=net)
    assert first is not None and (first["trial"], first["value"], first["arch"]) == (0, 0.4, arch.code)
    assert first["state"].keys() == net.derive(arch).state_dict().keys()
    assert best_after(first, trial=1, value=0.4, arch=arch, supernet=net) is first  # a tie keeps it
    assert best_after(first, trial=2, value=0.6, arch=arch, supernet=net)["trial"] == 2


def test_a_checkpoint_round_trip_and_the_previous_generation_when_the_newest_is_broken(tmp_path):
    net, trainer = _parts(0)
    store = SearchCheckpoint(tmp_path / "s.pt")
    assert not store.exists()
    store.save(net, trainer, SearchState(trials_trained=1), background=False)
    with torch.no_grad():
        next(net.parameters()).add_(1.0)
    store.save(net, trainer, SearchState(trials_trained=2), background=True)
    store.save(net, trainer, SearchState(trials_trained=2), background=False)  # waits for the write
    other, other_trainer = _parts(1)
    assert SearchCheckpoint(tmp_path / "s.pt").load(other, other_trainer).trials_trained == 2
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), other.state_dict().values()))
    (tmp_path / "s.pt").write_bytes(b"torn")
    assert SearchCheckpoint(tmp_path / "s.pt").load(other, other_trainer).trials_trained == 2  # the previous
    previous_path(tmp_path / "s.pt").write_bytes(b"torn too")
    with pytest.raises(CheckpointError, match="--fresh-supernet"):
        SearchCheckpoint(tmp_path / "s.pt").load(other, other_trainer)
