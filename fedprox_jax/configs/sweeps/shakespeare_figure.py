"""The paper's Figure 1 claim on Shakespeare, on a 2-core CPU: FedAvg dropping stragglers against
FedProx (mu = 0, and the paper's mu = 0.001: arm fedprox_mu0001) at 90% stragglers, 3 seeds: 9 runs.

    python -m fedprox_jax.sweep --config=configs/shakespeare.py:cpu \
        --sweep=configs/sweeps/shakespeare_figure.py --workdir=/tmp/shakespeare_figure
    python -m fedprox_jax.plot /tmp/shakespeare_figure --metrics=train/loss,local_test/accuracy

On the paper's settings (an accelerator's job): --config=configs/shakespeare.py.
"""
import ml_collections

from fedprox_jax.configs.sweeps import mnist_figure


def get_config() -> ml_collections.ConfigDict:
  s = mnist_figure.get_config()  # Its arms fedavg (dropping stragglers) and fedprox_mu0...
  s.repeats = 3  # Seeds base.seed, base.seed + 1, base.seed + 2.
  del s.arms['fedprox_mu2']
  s.arms.fedprox_mu0001 = {'algorithm': {'name': 'fedprox', 'mu': 0.001}}  # ...and the paper's mu.
  s.grid.stragglers.fraction = [0.9]
  return s
