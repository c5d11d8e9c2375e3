"""The paper's Figures 2 and 3 on one synthetic dataset: mu = 0, mu = 1 and adaptive mu.

    python -m fedprox_jax.sweep --config=configs/synthetic.py:1_1 \
        --sweep=configs/sweeps/synthetic.py:1_1 --workdir=/tmp/synthetic/1_1

scripts/reproduce_synthetic.py runs it for all four datasets and draws both figures. Adaptive mu
starts where the paper starts it: 1 on Synthetic-IID, 0 on the others.
"""
import ml_collections

from fedprox_jax.configs import synthetic

VARIANTS = tuple(synthetic.DATASETS)  # The synthetic datasets (configs/synthetic.py).


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  if variant not in (None, *VARIANTS):
    raise ValueError(f'unknown synthetic variant {variant!r}; one of {", ".join(VARIANTS)}')
  s = ml_collections.ConfigDict()
  s.repeats = 3
  start = 1.0 if variant == 'iid' else 0.0
  s.arms = ml_collections.ConfigDict({
      'mu0': {
          'algorithm': {
              'mu': 0.0
          }
      },
      'mu1': {
          'algorithm': {
              'mu': 1.0
          }
      },
      'adaptive': {
          'algorithm': {
              'mu': start,
              'adaptive_mu': True
          }
      },
  })
  s.grid = ml_collections.ConfigDict()  # No stragglers (the base config's fraction, 0).
  s.max_runs_per_chunk = 0
  s.cpu_devices = 0
  return s
