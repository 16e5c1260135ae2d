"""``python -m ronas_optuna ...``: the ``ronas`` command line (also what ``torchrun -m`` starts)."""

from .cli import main

if __name__ == "__main__":
    main(prog_name="ronas")
