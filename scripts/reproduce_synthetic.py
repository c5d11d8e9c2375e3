"""The paper's Figures 2 and 3 on its four synthetic datasets (4 sweeps of 9 runs, 200 rounds).

    python scripts/reproduce_synthetic.py /tmp/synthetic

Writes WORKDIR/VARIANT/ (a sweep each), WORKDIR/figure2.png (training loss and dissimilarity,
mu = 0 vs mu = 1) and WORKDIR/figure3.png (mu = 0, mu = 1 and adaptive mu on Synthetic-IID and
Synthetic(1,1)), and prints the final training losses.
"""
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
# pylint: disable=g-import-not-at-top
from absl import logging

from fedprox_jax import experiment
from fedprox_jax import plots
from fedprox_jax.configs import synthetic as synthetic_config
from fedprox_jax.configs.sweeps import synthetic as synthetic_sweep

NAMES = {
    'iid': 'Synthetic-IID',
    '0_0': 'Synthetic(0,0)',
    '0.5_0.5': 'Synthetic(0.5,0.5)',
    '1_1': 'Synthetic(1,1)'
}


def main() -> None:
  if len(sys.argv) != 2:
    sys.exit(__doc__)
  logging.set_verbosity(logging.INFO)  # Each sweep's rounds, with their ETA.
  root = pathlib.Path(sys.argv[1])
  dirs = {}
  for i, (variant, name) in enumerate(NAMES.items()):
    print(f'{name}: sweep {i + 1}/{len(NAMES)} (9 runs, 200 rounds)', flush=True)
    tick = time.perf_counter()
    dirs[name] = str(root / variant)
    experiment.run_sweep(synthetic_config.get_config(variant), synthetic_sweep.get_config(variant),
                         dirs[name])
    print(f'{name}: 9 runs in {time.perf_counter() - tick:.1f} s')
  print(
      plots.plot_datasets(dirs, ('train/loss', 'train/dissimilarity'), ('mu0', 'mu1'),
                          root / 'figure2.png',
                          log_scale=('train/dissimilarity',)))
  print(
      plots.plot_datasets({k: dirs[k] for k in ('Synthetic-IID', 'Synthetic(1,1)')},
                          ('train/loss', 'mu'), ('mu0', 'mu1', 'adaptive'), root / 'figure3.png'))
  for name, directory in dirs.items():
    print(f'\n{name}: training loss, mean of rounds 191-200')
    print(plots.final_table(plots.read_table(pathlib.Path(directory) / 'results.csv'),
                            'train/loss'))


if __name__ == '__main__':
  main()
