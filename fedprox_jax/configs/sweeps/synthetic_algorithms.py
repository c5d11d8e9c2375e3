"""FedProx against the field on the paper's Synthetic(1,1): the arms of mnist_algorithms.py at 0%
and 90% stragglers, 5 seeds, 200 rounds; training loss is the measure (as in the paper's
Figure 1 for the synthetic data).

    python -m fedprox_jax.sweep --config=configs/synthetic.py:1_1 \
        --config.eval.dissimilarity=False \
        --sweep=configs/sweeps/synthetic_algorithms.py --workdir=/tmp/synthetic_algorithms
    python -m fedprox_jax.plot /tmp/synthetic_algorithms --metrics=train/loss

Each method's value below was chosen by the tuning sweep (4 values of one of its own
hyperparameters, seeds 100 and 101, both straggler settings; the lowest mean training loss over
rounds 191-200):

    python -m fedprox_jax.sweep --config=configs/synthetic.py:1_1 --config.seed=100 \
        --config.eval.dissimilarity=False \
        --sweep=configs/sweeps/synthetic_algorithms.py:tune --workdir=/tmp/synthetic_tune
    python scripts/pick_tuned.py /tmp/synthetic_tune --metric=train/loss
"""
import ml_collections

from fedprox_jax.configs.sweeps import comparison

VARIANTS = comparison.VARIANTS

GRIDS = {
    'fedavg_drop': [0.0003, 0.001, 0.003, 0.01],  # client.learning_rate
    'fedprox': [0.1, 0.3, 1.0, 3.0],  # algorithm.mu
    'fednova': [0.001, 0.003, 0.01, 0.03],  # client.learning_rate
    'scaffold': [0.0003, 0.001, 0.003, 0.01],  # client.learning_rate
    'qffl': [0.003, 0.01, 0.03, 0.1],  # client.learning_rate (q = 1)
    'feddyn': [0.001, 0.01, 0.03, 0.1],  # algorithm.alpha
    'fedavgm': [0.03, 0.1, 0.3, 1.0],  # server.learning_rate (momentum 0.9)
    'fedadam': [0.01, 0.03, 0.1, 0.3],  # server.learning_rate
    'fedyogi': [0.01, 0.03, 0.1, 0.3],  # server.learning_rate
    'fedadagrad': [0.03, 0.1, 0.3, 1.0],  # server.learning_rate
}
# scripts/pick_tuned.py on the tuning sweep (mean training loss, rounds 191-200):
#   fedavg_drop 0.489 0.424 0.444 0.574 | fedprox 0.352 0.333 0.336 0.367 | fednova 0.296 0.266
#   0.250 0.349 | scaffold 0.334 0.290 0.280 1.097 | fedavgm 0.639 0.387 0.290 0.400 | fedadam
#   0.295 0.271 0.510 1.478 | fedyogi 0.308 0.266 0.341 0.823 | fedadagrad 0.519 0.298 0.261 0.308
#   | qffl 2.011 1.671 1.476 1.527 | feddyn 0.495 0.240 0.215 0.223
CHOSEN = {
    'fedavg_drop': 0.001,
    'fedprox': 0.3,
    'fednova': 0.01,
    'scaffold': 0.003,
    'qffl': 0.03,
    'feddyn': 0.03,
    'fedavgm': 0.3,
    'fedadam': 0.03,
    'fedyogi': 0.03,
    'fedadagrad': 0.3
}


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  return comparison.get_config(GRIDS, CHOSEN, variant)
