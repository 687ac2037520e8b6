"""Scaling studies: budgets to configurations and sweeps (``recipe``, ``plan``), decay branches
of one run (``branches``), and fits read back from MLflow.

Kept light: nothing is imported here, so ``xdlm scaling plan`` does not load Ray or MLflow.
"""
