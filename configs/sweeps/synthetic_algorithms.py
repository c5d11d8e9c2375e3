"""FedProx against the field on the paper's Synthetic(1,1): the arms of mnist_algorithms.py at 0%
and 90% stragglers, 5 seeds, 200 rounds; training loss is the measure (as in the paper's
Figure 1 for the synthetic data).

    python -m fedprox_jax.sweep --config=configs/synthetic.py:1_1 \
        --config.eval.dissimilarity=False \
        --sweep=configs/sweeps/synthetic_algorithms.py --workdir=/tmp/synthetic_algorithms
    python scripts/plot.py /tmp/synthetic_algorithms --metrics=train/loss

Each method's value below was chosen by the tuning sweep (4 values of one of its own
hyperparameters, seeds 100 and 101, both straggler settings; the lowest mean training loss over
rounds 191-200):

    python -m fedprox_jax.sweep --config=configs/synthetic.py:1_1 --config.seed=100 \
        --config.eval.dissimilarity=False \
        --sweep=configs/sweeps/synthetic_algorithms.py:tune --workdir=/tmp/synthetic_tune
    python scripts/pick_tuned.py /tmp/synthetic_tune --metric=train/loss
"""
import ml_collections

from configs.sweeps import comparison

GRIDS = {
    'fedavg_drop': [0.0003, 0.001, 0.003, 0.01],  # client.learning_rate
    'fedprox': [0.1, 0.3, 1.0, 3.0],  # algorithm.mu
    'fednova': [0.001, 0.003, 0.01, 0.03],  # client.learning_rate
    'scaffold': [0.0003, 0.001, 0.003, 0.01],  # client.learning_rate
    'fedavgm': [0.03, 0.1, 0.3, 1.0],  # server.learning_rate (momentum 0.9)
    'fedadam': [0.01, 0.03, 0.1, 0.3],  # server.learning_rate
    'fedyogi': [0.01, 0.03, 0.1, 0.3],  # server.learning_rate
    'fedadagrad': [0.03, 0.1, 0.3, 1.0],  # server.learning_rate
}
CHOSEN = {arm: grid[1] for arm, grid in GRIDS.items()}  # Placeholder until tuned.


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  if variant not in (None, 'tune'):
    raise ValueError(f'unknown variant {variant!r}: none (the comparison) or tune')
  return comparison.sweep(GRIDS if variant == 'tune' else CHOSEN, tune=variant == 'tune')
