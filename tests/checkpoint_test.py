"""Checkpoint and resume, determinism, and every bad input answered in one line."""
import json

import numpy as np
import orbax.checkpoint as ocp
import pytest

from fedprox_jax.experiment import workdir as workdir_lib
from tests.commands import mnist_data_flags
from tests.commands import run_module
from tests.runs import records

# Synthetic(1,1) on 12 devices and short local work: a round takes milliseconds, a run seconds.
FLAGS = [
    '--config=configs/synthetic.py:1_1', '--config.data.num_clients=12',
    '--config.clients_per_round=5', '--config.client.local_epochs=2',
    '--config.eval.dissimilarity=False', '--config.checkpoint_every=5', '--config.checkpoint_keep=2'
]


def _final_params(workdir):
  steps = sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit())
  path = workdir / 'checkpoints' / str(steps[-1]) / 'state'
  # Saved as host arrays: readable whatever devices saved them and this process has.
  state = ocp.StandardCheckpointer().restore(path.absolute())
  return steps, {'Dense_0': {k: state[f'server.params.Dense_0.{k}'] for k in ('kernel', 'bias')}}


@pytest.mark.slow
def test_a_checkpoint_resumes_on_other_devices(tmp_path):
  """Checkpoints are restored onto the resuming process's devices, whatever saved them: the run
  goes on as it would have, up to float summation order (other lanes, other sums: ~1e-7)."""
  flags = [*FLAGS, '--config.checkpoint_every=2']
  whole = tmp_path / 'whole'
  result = run_module(*flags, f'--workdir={whole}', '--config.num_rounds=6',
                      '--config.compute.cpu_devices=1')
  assert result.returncode == 0, result.stderr[-3000:]
  moved = tmp_path / 'moved'
  first = run_module(*flags, f'--workdir={moved}', '--config.num_rounds=4',
                     '--config.compute.cpu_devices=1')
  assert first.returncode == 0, first.stderr[-3000:]
  resumed = run_module(*flags, f'--workdir={moved}', '--config.num_rounds=6',
                       '--config.compute.cpu_devices=3')
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert 'Resuming from the checkpoint of round 4' in resumed.stderr
  assert 'Resuming on 3 lanes where the checkpoint ran 1' in resumed.stderr
  got, want = records(moved), records(whole)
  assert [r['round'] for r in got] == [r['round'] for r in want] == list(range(7))
  assert got[:5] == want[:5]  # The rounds run on the same devices are bit-identical.
  for a, b in zip(got[5:], want[5:]):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)
  (_, params_a), (_, params_b) = _final_params(moved), _final_params(whole)
  np.testing.assert_allclose(params_a['Dense_0']['kernel'],
                             params_b['Dense_0']['kernel'],
                             atol=1e-5)


@pytest.mark.slow
def test_workdir_of_another_config_is_refused_unless_overwritten(tmp_path):
  flags = [*FLAGS, '--config.num_rounds=3', f'--workdir={tmp_path}']
  assert run_module(*flags).returncode == 0
  refused = run_module(*flags, '--config.algorithm.mu=2')
  assert refused.returncode != 0
  assert refused.stderr.strip().splitlines()[-1] == (
      f'error: --workdir {tmp_path} holds a run of another config (algorithm.mu: 1.0 -> 2.0): '
      'use another workdir, or --overwrite to start it over')
  assert json.loads((tmp_path / 'config.json').read_text())['algorithm']['mu'] == 1.0
  # More rounds extend the run; --overwrite starts another one.
  longer = run_module(*[f for f in flags if 'num_rounds' not in f], '--config.num_rounds=5')
  assert longer.returncode == 0 and [r['round'] for r in records(tmp_path)] == list(range(6))
  over = run_module(*flags, '--config.algorithm.mu=2', '--overwrite')
  assert over.returncode == 0 and len(records(tmp_path)) == 4


@pytest.mark.slow
def test_divergence_keeps_earlier_checkpoints(mnist_env, tmp_path):
  env, root = mnist_env
  # Weight decay with lr * decay > 2 multiplies the weights by |1 - lr * decay| = 1.1 a step:
  # they overflow after several rounds of MNIST's 100 small clients, once checkpoints exist.
  flags = [
      '--config=configs/mnist_fedprox.py', '--config.data.num_clients=100',
      '--config.clients_per_round=5', '--config.client.local_epochs=2',
      '--config.checkpoint_keep=2', '--config.num_rounds=40', '--config.checkpoint_every=1',
      '--config.client.learning_rate=2100', '--config.algorithm.mu=0', *mnist_data_flags(root),
      f'--workdir={tmp_path}'
  ]
  result = run_module(*flags, env=env)
  assert result.returncode != 0
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('error: round ') and 'non-finite' in last, last
  round_failed = int(last.split()[2].rstrip(':'))
  logged = records(tmp_path)
  assert [r['round'] for r in logged] == list(range(round_failed))
  assert round_failed > 2
  steps, params = _final_params(tmp_path)
  assert steps == [round_failed - 2, round_failed - 1]  # The last two, intact and finite.
  assert all(np.isfinite(np.asarray(p)).all() for p in params['Dense_0'].values())
  assert not (tmp_path / 'summary.json').exists()


@pytest.mark.slow
@pytest.mark.parametrize('args, message', [
    (['--config=configs/nope.py'], 'error: --config: no config file configs/nope.py'),
    (['--config=configs/mnist_fedprox.py', '--config.algorithm.muu=3'
     ], 'did you mean algorithm.mu?'),
    (['--config=configs/mnist_fedprox.py', '--config.algorithm.mu=abc'
     ], "could not convert string to float: 'abc'"),
    (['--config=configs/mnist_fedprox.py', '--workdir=/dev/null/run'
     ], 'error: --workdir /dev/null/run cannot be written'),
])
def test_bad_command_lines_fail_in_one_line(args, message):
  # Each fails before any data are read: no MNIST needed.
  result = run_module(*args)
  assert result.returncode != 0
  assert 'Traceback' not in result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('error: ') and message in last, last


def test_config_differences_ignore_paths_devices_and_rounds():
  old = {
      'num_rounds': 10,
      'algorithm': {
          'mu': 1.0
      },
      'data': {
          'cache_dir': 'a',
          'seed': 0
      },
      'compute': {
          'num_lanes': 0
      }
  }
  new = {
      'num_rounds': 20,
      'algorithm': {
          'mu': 2.0
      },
      'data': {
          'cache_dir': 'b',
          'seed': 1
      },
      'compute': {
          'num_lanes': 4
      }
  }
  assert workdir_lib.config_differences(old,
                                        new) == ['algorithm.mu: 1.0 -> 2.0', 'data.seed: 0 -> 1']


def test_a_workdir_from_before_the_server_fields_resumes_with_their_old_behaviour():
  old = {'algorithm': {'mu': 1.0}}  # Written before config.server existed: plain FedAvg server.
  new = {'algorithm': {'mu': 1.0}, 'server': {'optimizer': 'sgd', 'learning_rate': 0.0}}
  assert workdir_lib.config_differences(old, new) == []
  new['server']['optimizer'] = 'adam'
  assert workdir_lib.config_differences(old, new) == ["server.optimizer: 'sgd' -> 'adam'"]


def test_no_data_and_no_network_fails_at_once(monkeypatch, tmp_path):
  from fedprox_jax import errors  # pylint: disable=g-import-not-at-top
  from fedprox_jax.tasks import mnist_files as mnist  # pylint: disable=g-import-not-at-top
  monkeypatch.delenv(mnist.MANUAL_DIR_ENV, raising=False)
  monkeypatch.setattr(mnist, '_reachable', lambda host: False)
  with pytest.raises(errors.DataError,
                     match=r'cannot be reached \(offline\?\): set data.manual_dir'):
    mnist.load_mnist(str(tmp_path / 'tfds'), manual_dir='')
