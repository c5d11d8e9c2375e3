"""The library API (train_and_evaluate, as in a notebook) shows its progress and leaves its
caller's process as it found it; the command lines alone set what a whole process needs."""
import json

import pytest

from tests.commands import run_code
from tests.conftest import subprocess_env

_STATE = '''
def state():
  import logging, os, sys
  import jax, matplotlib
  return {
      'cache_dir': jax.config.jax_compilation_cache_dir,
      'min_compile_s': jax.config.jax_persistent_cache_min_compile_time_secs,
      'cpu_devices': jax.config.jax_num_cpu_devices,
      'unraisablehook': repr(sys.unraisablehook),
      'backend': matplotlib.get_backend(),
      'root': [logging.getLogger().level, len(logging.getLogger().handlers)],
      'filters': {n: len(logging.getLogger(n).filters)
                  for n in ('absl', 'asyncio', 'matplotlib.font_manager')},
      'jax_level': logging.getLogger('jax').level,
      'env': {n: os.environ.get(n) for n in ('TF_CPP_MIN_LOG_LEVEL', 'TF_ENABLE_ONEDNN_OPTS')},
  }
'''

_NOTEBOOK = _STATE + '''
import json, sys
import matplotlib
backend = matplotlib.get_backend()
from fedprox_jax import experiment, plots
assert matplotlib.get_backend() == backend, 'importing the plots chose a matplotlib backend'
# (Importing orbax, as any program that imports it, gives the root logger a handler: before.)
before = state()
from fedprox_jax.configs import synthetic
c = synthetic.get_config('1_1')
c.data.num_clients, c.clients_per_round, c.num_rounds = 12, 4, 3
c.compute.cpu_devices = 3  # Settings of the whole process: left as they are.
c.compute.compilation_cache_dir = sys.argv[1]
records = experiment.train_and_evaluate(c, None)
import jax
print(json.dumps({'before': before, 'after': state(), 'rounds': len(records),
                  'devices': jax.local_device_count()}))
'''


def _notebook(tmp_path):
  result = run_code(_NOTEBOOK,
                    str(tmp_path / 'xla'),
                    cwd=tmp_path,
                    env=subprocess_env(MPLBACKEND='svg'))
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.splitlines()[-1]), result.stderr


@pytest.mark.slow
def test_a_library_run_leaves_the_process_as_it_found_it_and_shows_progress(tmp_path):
  out, stderr = _notebook(tmp_path)
  assert out['rounds'] == 4  # Rounds 0 (before training) to 3.
  assert out['after'] == out['before']  # Cache, devices, hooks, backend, logging, environment.
  assert out['devices'] == 1 and not (tmp_path / 'xla').exists()
  # Progress in a notebook, where no command line set up logging.
  assert 'round 3/3' in stderr, stderr[-3000:]
  # The process-wide settings it left alone are named, with how to apply them.
  assert 'compute.cpu_devices=3' in stderr and 'configure_process(config)' in stderr
  # JAX's notes (its search for a TPU) stay out of it.
  assert "backend 'tpu'" not in stderr, stderr[-3000:]


@pytest.mark.slow
def test_configure_process_applies_the_process_settings(tmp_path):
  code = ('import sys\n'
          'from fedprox_jax import experiment\n'
          'from fedprox_jax.configs import synthetic\n'
          'c = synthetic.get_config("1_1")\n'
          'c.compute.cpu_devices = 3\n'
          'c.compute.compilation_cache_dir = sys.argv[1]\n'
          'experiment.configure_process(c)\n'
          'import jax\n'
          'jax.jit(lambda x: x + 1)(1.0).block_until_ready()\n'
          'print(jax.local_device_count())\n')
  result = run_code(code, str(tmp_path / 'xla'), cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.split() == ['3']
  assert any((tmp_path / 'xla').iterdir())  # The compiled program was cached there.
