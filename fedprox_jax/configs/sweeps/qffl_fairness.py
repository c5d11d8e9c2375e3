"""q-FFL's claim on Synthetic(1,1): q > 0 keeps the mean accuracy while cutting the spread of
accuracy across devices and lifting the worst ones. q in {0, 0.1, 1, 5}, 5 seeds, no stragglers,
200 rounds, the per-device spread of local test accuracy (local_test/accuracy_p10, _p50, _p90,
_std) recorded at every evaluation.

    python -m fedprox_jax.sweep --config=synthetic:1_1 --config.eval.dissimilarity=False \
        --sweep=qffl_fairness --workdir=/tmp/qffl_fairness
    python -m fedprox_jax.plot /tmp/qffl_fairness \
        --metrics=local_test/accuracy,local_test/accuracy_p10,local_test/accuracy_std

The client learning rate is q-FFL's tuned one on this dataset (0.03, configs/sweeps/
synthetic_algorithms.py); q = 0 is FedAvg keeping stragglers (there are none here) at that rate.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
  s = ml_collections.ConfigDict()
  s.repeats = 5
  s.arms = ml_collections.ConfigDict({
      'qffl': {
          'algorithm': {
              'name': 'qffl',
              'mu': 0.0
          },
          'client': {
              'learning_rate': 0.03
          },
          'grid': {
              'algorithm': {
                  'q': [0.0, 0.1, 1.0, 5.0]
              }
          }
      }
  })
  s.grid = ml_collections.ConfigDict()  # No stragglers (the base config's fraction, 0).
  s.max_runs_per_chunk = 0
  s.cpu_devices = 0
  return s
