import pytest
import torch

from ronas_optuna.team import RankFailure, peer_lost, together, weights_digest


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.int64])
def test_the_weights_digest_reads_every_dtype_and_sees_one_changed_value(dtype):
    a = [torch.arange(12, dtype=torch.float32).reshape(3, 4).to(dtype), torch.ones(5).to(dtype)]
    b = [x.clone() for x in a]
    assert weights_digest(a) == weights_digest(b) and len(weights_digest(a)) == 16
    b[1][2] = 7
    assert weights_digest(a) != weights_digest(b)
    assert weights_digest(a) != weights_digest(a[::-1])  # the order counts


def test_a_transposed_view_has_the_digest_of_its_values_not_of_its_memory():
    x = torch.arange(6.0).reshape(2, 3)
    assert weights_digest([x.t()]) == weights_digest([x.t().contiguous()])


def test_without_a_team_together_is_the_call_alone():
    assert together(None, lambda: 3, failed=lambda e: True) == 3
    with pytest.raises(ValueError):
        together(None, lambda: int("x"), failed=lambda e: True)


def test_a_lost_peer_is_told_from_other_runtime_errors():
    assert peer_lost(RuntimeError("[gloo] Connection closed by peer [127.0.0.1]:1234"))
    assert not peer_lost(RuntimeError("CUDA out of memory"))
    assert not peer_lost(RankFailure("rank 1: OutOfMemoryError"))
