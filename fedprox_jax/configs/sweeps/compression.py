"""Compressed uploads against accuracy: the default FedProx run (mu = 1, 90% stragglers doing
partial work) and FedAvg dropping its stragglers, uncompressed against stochastic quantization to
8, 4, 2 and 1 bits and top-k 10% and 1% with and without error feedback, 3 seeds, 100 rounds:

    python -m fedprox_jax.sweep --config=mnist_fedprox --sweep=compression \\
        --workdir=/tmp/compression
    python -m fedprox_jax.plot /tmp/compression --x=comm/upload_bytes_total

and the CNN at a few settings (variant cnn, on the mnist_moon preset's CNN setting: 200 clients,
one epoch, no stragglers, 40 rounds; FedAvg at its tuned learning rate 0.03, see
configs/sweeps/mnist_moon.py; uncompressed, 8 bits, top-k 1% with and without error feedback):

    python -m fedprox_jax.sweep --config=mnist_moon --sweep=compression:cnn \\
        --workdir=/tmp/compression_cnn

The CNN's residuals take 6.6 MB a client: at the default partition's 1,000 clients (6.2 GiB a run)
error feedback is refused on machines under 25 GiB, so the CNN runs on the 200 clients of
mnist_moon.

Bits and top-k are traced values: each algorithm's compressed arms without error feedback share
one program, those with it another (its residuals are part of the program), the uncompressed a
third.
"""
import ml_collections

VARIANTS = ('cnn',)
ALGORITHMS = {
    'fedprox': {
        'name': 'fedprox',
        'mu': 1.0,
        'drop_stragglers': False
    },
    'fedavg_drop': {
        'name': 'fedavg',
        'mu': 0.0,
        'drop_stragglers': True
    },
}
# The CNN's: FedAvg on the mnist_moon preset, at the learning rate its comparison tuned.
CNN = {'name': 'fedavg', 'mu': 0.0, 'drop_stragglers': False}
CNN_LEARNING_RATE = 0.03
OFF = {'bits': 0, 'topk': 1.0, 'error_feedback': False}


def _arms(algorithm: dict, bits: list, topk: list) -> dict:
  arms = {'': {'algorithm': dict(algorithm), 'compression': dict(OFF)}}
  if bits:
    arms['_quantized'] = {
        'algorithm': dict(algorithm),
        'compression': {
            'topk': 1.0,
            'error_feedback': False
        },
        'grid': {
            'compression': {
                'bits': bits
            }
        }
    }
  for feedback in (False, True):
    arms['_topk_ef' if feedback else '_topk'] = {
        'algorithm': dict(algorithm),
        'compression': {
            'bits': 0,
            'error_feedback': feedback
        },
        'grid': {
            'compression': {
                'topk': topk
            }
        }
    }
  return arms


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  if variant not in (None, *VARIANTS):
    raise ValueError(f'unknown variant {variant!r}: none (the logistic regression) or cnn')
  s = ml_collections.ConfigDict()
  s.repeats = 3
  arms = {}
  if variant == 'cnn':
    for suffix, arm in _arms(CNN, [8], [0.01]).items():
      arms[f'fedavg{suffix}'] = {**arm, 'client': {'learning_rate': CNN_LEARNING_RATE}}
  else:
    for name, algorithm in ALGORITHMS.items():
      arms.update({
          f'{name}{suffix}': arm
          for suffix, arm in _arms(algorithm, [8, 4, 2, 1], [0.1, 0.01]).items()
      })
  s.arms = ml_collections.ConfigDict(arms)
  s.grid = ml_collections.ConfigDict()
  s.max_runs_per_chunk = 0
  s.cpu_devices = 0
  return s
