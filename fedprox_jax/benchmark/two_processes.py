"""The default run in one process with 2 CPU devices against the same run over 2 processes of 1
device each (`python -m fedprox_jax.launch`)."""
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def _round_times(workdir: str) -> tuple[float, float]:
  """Median training round and median round with evaluation (s) of a run's records."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  train = [r['time/round_s'] for r in records if 'time/round_s' in r]
  elapsed = np.diff([r['time/elapsed_s'] for r in records])
  return float(np.median(train)), float(np.median(elapsed))


def measure(num_rounds: int) -> dict:
  """The default run in one process with 2 CPU devices, then over 2 processes of 1 device each
  (the same lanes; `python -m fedprox_jax.launch`), alternately, twice each."""
  out = {'one_process': [], 'two_processes': []}
  run = [
      '--config=mnist_fedprox', f'--config.num_rounds={num_rounds}',
      '--config.compute.compilation_cache_dir='
  ]
  for _ in range(2):
    for name, command in (('one_process', [
        sys.executable, '-m', 'fedprox_jax.run', *run, '--config.compute.cpu_devices=2'
    ]), ('two_processes', [
        sys.executable, '-m', 'fedprox_jax.launch', '--processes=2', '--', *run,
        '--config.compute.cpu_devices=1'
    ])):
      with tempfile.TemporaryDirectory() as workdir:
        tick = time.perf_counter()
        proc = subprocess.run([*command, f'--workdir={workdir}/run'],
                              capture_output=True,
                              text=True,
                              check=False)
        if proc.returncode:
          raise RuntimeError(f'{name} failed:\n{proc.stderr[-3000:]}')
        out[name].append((*_round_times(f'{workdir}/run'), time.perf_counter() - tick))
  return {
      name:
          dict(
              zip(('train_round_s', 'round_s', 'process_wall_s'),
                  np.median(np.array(v), axis=0).tolist())) for name, v in out.items()
  }
