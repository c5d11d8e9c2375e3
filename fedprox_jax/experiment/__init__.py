"""Experiments: a single run (train_and_evaluate) and a sweep of runs (run_sweep), with their
workdirs, checkpoints, records and validation."""
from fedprox_jax.experiment.grid import prepared_base
from fedprox_jax.experiment.settings import configure_process
from fedprox_jax.experiment.single_run import train_and_evaluate
from fedprox_jax.experiment.sweep_runner import run_sweep

__all__ = ['configure_process', 'prepared_base', 'run_sweep', 'train_and_evaluate']
