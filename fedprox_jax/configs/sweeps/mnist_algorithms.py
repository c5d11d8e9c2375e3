"""FedProx against the field on the default MNIST task: FedAvg (dropping stragglers), FedProx,
FedNova, SCAFFOLD, q-FFL, FedDyn, FedAvgM, FedAdam, FedYogi and FedAdagrad at 0% and 90%
stragglers, 5 seeds.

    python -m fedprox_jax.sweep --config=configs/mnist_fedprox.py \
        --sweep=configs/sweeps/mnist_algorithms.py --workdir=/tmp/algorithms
    python -m fedprox_jax.plot /tmp/algorithms

Each method's value below was chosen by the tuning sweep (4 values of one of its own
hyperparameters, seeds 100 and 101, both straggler settings; the best mean test accuracy over
rounds 91-100):

    python -m fedprox_jax.sweep --config=configs/mnist_fedprox.py --config.seed=100 \
        --sweep=configs/sweeps/mnist_algorithms.py:tune --workdir=/tmp/algorithms_tune
    python scripts/pick_tuned.py /tmp/algorithms_tune
"""
import ml_collections

from fedprox_jax.configs.sweeps import comparison

VARIANTS = comparison.VARIANTS

GRIDS = {
    'fedavg_drop': [0.001, 0.003, 0.01, 0.03],  # client.learning_rate
    'fedprox': [1.0, 2.0, 4.0, 8.0],  # algorithm.mu
    'fednova': [0.001, 0.003, 0.01, 0.03],  # client.learning_rate
    'scaffold': [0.001, 0.003, 0.01, 0.03],  # client.learning_rate
    'qffl': [0.01, 0.03, 0.1, 0.3],  # client.learning_rate (q = 1)
    'feddyn': [0.3, 1.0, 3.0, 10.0],  # algorithm.alpha
    'fedavgm': [0.01, 0.03, 0.1, 0.3],  # server.learning_rate (momentum 0.9)
    'fedadam': [0.0003, 0.001, 0.003, 0.01],  # server.learning_rate
    'fedyogi': [0.0003, 0.001, 0.003, 0.01],  # server.learning_rate
    'fedadagrad': [0.003, 0.01, 0.03, 0.1],  # server.learning_rate
}
# scripts/pick_tuned.py on the tuning sweep (mean test accuracy, rounds 91-100):
#   fedavg_drop 0.786 0.781 0.763 0.745 | fedprox 0.846 0.849 0.850 0.847 | fednova 0.873 0.873
#   0.853 0.821 | scaffold 0.872 0.876 0.869 0.858 | fedavgm 0.781 0.848 0.844 0.736 | fedadam
#   0.710 0.848 0.843 0.806 | fedyogi 0.698 0.846 0.845 0.823 | fedadagrad 0.742 0.858 0.849 0.816
#   | qffl 0.701 0.799 0.820 0.802 | feddyn 0.858 0.868 0.873 0.866 (its first grid, 0.001-0.1:
#   0.819 0.826 0.835 0.848, put the best at its edge)
CHOSEN = {
    'fedavg_drop': 0.001,
    'fedprox': 4.0,
    'fednova': 0.001,
    'scaffold': 0.003,
    'qffl': 0.1,
    'feddyn': 3.0,
    'fedavgm': 0.03,
    'fedadam': 0.001,
    'fedyogi': 0.001,
    'fedadagrad': 0.01
}


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  return comparison.get_config(GRIDS, CHOSEN, variant)
