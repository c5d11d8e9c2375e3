"""Lanes sharded over 4 forced CPU devices give the single-device results."""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from fedprox_jax.engine import client_states
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


def _on_four_devices(script: str, out):
  """What `script` saved to `out` (its argument), run in a process of 4 forced CPU devices."""
  env = dict(os.environ,
             XLA_FLAGS='--xla_force_host_platform_device_count=4',
             JAX_PLATFORMS='cpu',
             PYTHONPATH=str(REPO))
  result = subprocess.run([sys.executable, '-c', script, str(out)],
                          cwd=REPO,
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return np.load(out)


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
    got = _on_four_devices(_FOUR_DEVICES.replace('NUM_LANES', str(lanes)),
                           tmp_path / f'{lanes}.npz')
    for name in ('kernel', 'bias'):
      np.testing.assert_allclose(got[name], params['Dense_0'][name], rtol=1e-5, atol=1e-5)
    for name, value in metrics.items():
      np.testing.assert_allclose(got['eval_' + name], value, rtol=1e-5, atol=1e-6)
  assert jax.device_count() == 1


_STATES_ON_FOUR = '''
import sys, jax, numpy as np
from fedprox_jax.experiment.settings import simulation
from tests.conftest import settings, tiny_config, tiny_data
assert jax.device_count() == 4, jax.devices()
config = tiny_config(**CHANGES)
sim = simulation(config, tiny_data(), [settings(config)])
assert sim.client_states.in_round  # A copy on each device, read and written by the rounds.
server = sim.initial_server
for r in range(1, config.num_rounds + 1):
  server, _ = sim.run_round(server, r)
leaves = jax.tree.leaves((server.params, sim.client_states.get()))
np.savez(sys.argv[1], *[np.asarray(a) for a in leaves])
'''


@pytest.mark.slow
def test_client_states_kept_on_four_devices_equal_one_devices_and_the_hosts(tmp_path, monkeypatch):
  """SCAFFOLD's c_i and error feedback's residuals: copies on 4 devices written by the rounds, on
  one device, and in host memory, give the same models and states."""
  changes = {
      'algorithm.name': 'scaffold',
      'stragglers.fraction': 0.5,
      'compression.topk': 0.3,
      'compression.error_feedback': True,
      'compute.num_lanes': 4
  }
  results = []
  for budget in (client_states.DEVICE_BUDGET, 0):  # One device's copy; then the host's.
    monkeypatch.setattr(client_states, 'DEVICE_BUDGET', budget)
    config = tiny_config(**changes)
    sim = simulation(config, tiny_data(), [settings(config)])
    assert sim.client_states.in_round == (budget > 0)
    server = sim.initial_server
    for r in range(1, config.num_rounds + 1):
      server, _ = sim.run_round(server, r)
    results.append(jax.tree.leaves((server.params, sim.client_states.get())))
  four = _on_four_devices(_STATES_ON_FOUR.replace('CHANGES', repr(changes)), tmp_path / 'four.npz')
  results.append([four[f'arr_{i}'] for i in range(len(four.files))])
  assert np.abs(results[0][-1]).max() > 0  # The last leaf: a residual, kept.
  for other in results[1:]:
    for a, b in zip(results[0], other):
      np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
