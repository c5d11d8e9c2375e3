"""Lanes sharded over 4 forced CPU devices give the single-device results."""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from fedprox_jax.experiment.settings import simulation
from tests.conftest import REPO
from tests.conftest import settings
from tests.conftest import tiny_config
from tests.conftest import tiny_data

_FOUR_DEVICES = '''
import sys, jax, numpy as np
from fedprox_jax.experiment.settings import simulation
from tests.conftest import settings, tiny_config, tiny_data
assert jax.device_count() == 4, jax.devices()
config = tiny_config(**{'compute.num_lanes': NUM_LANES, 'stragglers.fraction': 0.5})
runs = [settings(config, seed=s, **{'algorithm.mu': mu}) for s, mu in ((0, 1.0), (1, 0.0))]
sim = simulation(config, tiny_data(), runs)
assert sim.num_lanes % 4 == 0
server = sim.initial_server
for r in range(1, config.num_rounds + 1):
  server, _ = sim.run_round(server, r)
params = server.params
np.savez(sys.argv[1], **{k: np.asarray(v) for k, v in params['Dense_0'].items()},
         **{'eval_' + k: v for k, v in sim.evaluate(params).items()})
'''


@pytest.mark.slow
def test_four_devices_equal_one(tmp_path):
  config = tiny_config(**{'stragglers.fraction': 0.5})
  runs = [settings(config, seed=s, **{'algorithm.mu': mu}) for s, mu in ((0, 1.0), (1, 0.0))]
  sim = simulation(config, tiny_data(), runs)
  server = sim.initial_server
  for r in range(1, config.num_rounds + 1):
    server, _ = sim.run_round(server, r)
  params = server.params
  metrics = sim.evaluate(params)
  for lanes in (3, 8):  # 3 lanes are padded to 4; 8 put two lanes on each device.
    out = tmp_path / f'{lanes}.npz'
    env = dict(os.environ,
               XLA_FLAGS='--xla_force_host_platform_device_count=4',
               JAX_PLATFORMS='cpu',
               PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, '-c',
         _FOUR_DEVICES.replace('NUM_LANES', str(lanes)),
         str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    got = np.load(out)
    for name in ('kernel', 'bias'):
      np.testing.assert_allclose(got[name], params['Dense_0'][name], rtol=1e-5, atol=1e-5)
    for name, value in metrics.items():
      np.testing.assert_allclose(got['eval_' + name], value, rtol=1e-5, atol=1e-6)
  assert jax.device_count() == 1
