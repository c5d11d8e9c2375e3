"""The command lines keep library chatter out of the log, by the libraries' public logger names:
JAX's search for a TPU is the canary (a CPU machine's JAX looks for one and says so at INFO)."""
import jax
import pytest

from tests.commands import SYNTHETIC_SMALL
from tests.commands import run_module
from tests.conftest import subprocess_env

_TPU_NOTE = "Unable to initialize backend 'tpu'"


def _run(tmp_path, *more):
  env = subprocess_env()
  env.pop('JAX_PLATFORMS')  # Every platform JAX knows is tried: the TPU too.
  result = run_module(*SYNTHETIC_SMALL,
                      '--workdir=',
                      '--config.num_rounds=1',
                      '--config.compute.cpu_devices=1',
                      '--config.compute.compilation_cache_dir=',
                      *more,
                      cwd=tmp_path,
                      env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stderr


@pytest.mark.slow
@pytest.mark.skipif(jax.default_backend() == 'tpu', reason='a TPU machine finds its TPU')
def test_jaxs_search_for_a_tpu_stays_out_of_the_log_unless_asked(tmp_path):
  assert _TPU_NOTE in _run(tmp_path, '--verbosity=1')  # The canary sings on this machine...
  quiet = _run(tmp_path)
  assert _TPU_NOTE not in quiet, quiet[-3000:]  # ...and is kept out of the log by default.
  assert 'round 1/1' in quiet
