"""The ronas_optuna modules RONASSampler needs, copied by ``package/sync.py``; do not edit."""
