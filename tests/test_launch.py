"""launch: the command again under torchrun (the ranks themselves: tests/test_distributed*.py)."""

import pytest

from ronas_optuna.launch import last_line, without_nproc


@pytest.mark.parametrize(
    "argv",
    [
        ["search", "d", "--nproc", "2", "--trials", "3"],
        ["search", "d", "--nproc=2", "--trials", "3"],
        ["search", "d", "--trials", "3"],
    ],
)
def test_each_rank_runs_the_command_without_nproc(argv):
    assert without_nproc(argv) == ["search", "d", "--trials", "3"]


def test_the_last_line_of_a_rank_log_is_its_last_words(tmp_path):
    log = tmp_path / "rank1.err"
    assert last_line(log) == ""  # no file: nothing said
    log.write_text("warning: x\nRuntimeError: CUDA out of memory\n\n  \n")
    assert last_line(log) == "RuntimeError: CUDA out of memory"
    log.write_text("x" * 500)
    assert last_line(log) == "x" * 200
    log.write_bytes(b"\xff\xfe bad bytes\n")
    assert last_line(log).endswith("bad bytes")
