"""The spread of the clients' own local test accuracies (local_test/accuracy_p10, _p50, _p90 and
_std), held against a plain NumPy loop over the clients that applies the model itself."""
import dataclasses
import json
import pathlib
import struct

import jax.numpy as jnp
import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from fedprox_jax import experiment
from fedprox_jax.engine import evaluation
from fedprox_jax.engine.eval_sample import ClientSample
from fedprox_jax.engine.simulation import Simulation
from fedprox_jax.experiment.settings import simulation
from tests import runs
from tests.conftest import settings
from tests.conftest import tiny_config
from tests.conftest import tiny_data

KEYS = ('local_test/accuracy_p10', 'local_test/accuracy_p50', 'local_test/accuracy_p90',
        'local_test/accuracy_std')


def _two_runs(config, data) -> Simulation:
  """Two runs whose models differ (their seeds draw different initial parameters)."""
  return simulation(config, data, [settings(config), settings(config, seed=1)])


def _accuracies_by_hand(data, params, run: int, clients) -> list[float]:
  """Each client's accuracy on its own local test rows, by the logistic regression written out
  (logits = x W + b), for the clients among `clients` that have a local test example."""
  kernel = np.asarray(params['Dense_0']['kernel'][run], np.float64)
  bias = np.asarray(params['Dense_0']['bias'][run], np.float64)
  offsets = np.concatenate([[0], np.cumsum(data.local_test_sizes)])
  out = []
  for client in clients:
    rows = slice(offsets[client], offsets[client + 1])
    x, y = data.local_test_x[rows].astype(np.float64), data.local_test_y[rows]
    if len(y):
      out.append(float(np.mean(np.argmax(x @ kernel + bias, 1) == y)))
  return out


def _spread(accuracies: list[float]) -> dict[str, float]:
  p10, p50, p90 = np.percentile(accuracies, [10, 50, 90])
  return dict(zip(KEYS, (p10, p50, p90, np.std(accuracies))))


def _assert_spread(got: dict, want: dict) -> None:
  for key in KEYS:
    np.testing.assert_allclose(got[key], want[key], rtol=0, atol=1e-6, err_msg=key)


def test_every_client_evaluated_gives_the_spread_of_their_accuracies():
  data = tiny_data(num_clients=30)
  sim = _two_runs(tiny_config(), data)
  params = sim.initial_params
  got = sim.evaluate(params)
  wants = []
  for run in range(2):
    accuracies = _accuracies_by_hand(data, params, run, range(data.num_clients))
    want = _spread(accuracies)
    _assert_spread({k: got[k][run] for k in KEYS}, want)
    # Spread out (not all equal), over clients whose sizes matter: weighing each by its size (as
    # the pooled local_test/accuracy does) would give other numbers.
    assert want[KEYS[0]] < want[KEYS[2]] and want[KEYS[3]] > 0
    assert not np.isclose(np.mean(accuracies), got['local_test/accuracy'][run], atol=1e-3)
    wants.append(want)
  assert wants[0] != wants[1]  # The runs' own models, not one run's twice.


def test_a_sample_of_clients_gives_the_spread_of_the_sampled_clients():
  data = tiny_data(num_clients=30)
  sim = _two_runs(tiny_config(**{'eval.clients': 8}), data)
  params = sim.initial_params
  every_client = _spread(_accuracies_by_hand(data, params, 0, range(data.num_clients)))
  differs = []
  for round_index in (1, 2, 3):
    clients = sim._eval_sample.clients(round_index)  # pylint: disable=protected-access
    got = sim.evaluate(params, round_index)
    assert got['eval/clients'][0] == 8
    wants = [_spread(_accuracies_by_hand(data, params, run, clients)) for run in range(2)]
    for run, want in enumerate(wants):
      _assert_spread({k: got[k][run] for k in KEYS}, want)
    differs.append(wants[0] != every_client)
  assert any(differs)  # The sample's spread is not the population's.


@pytest.mark.parametrize('num_clients', [1, 2, 7, 1000])
def test_the_spread_of_sums_per_client_is_numpys(num_clients):
  """client_spread alone, on sums of many shapes (clients without examples among them) for 3 runs:
  numpy's percentiles and std of the accuracies of the clients with examples."""
  rng = np.random.default_rng(num_clients)
  count = rng.integers(0, 30, num_clients).astype(np.float32)
  count[0] = 5  # At least one client counts.
  correct = np.floor(rng.random((num_clients, 3)) * (count[:, None] + 1)).astype(np.float32)
  got = evaluation.client_spread(jnp.asarray(correct), jnp.asarray(count))
  for run in range(3):
    want = _spread(list(correct[count > 0, run] / count[count > 0]))
    _assert_spread({k: got[k.split('/')[1]][run] for k in KEYS}, want)


def _without_local_test(data, client: int):
  """`data` with `client`'s local test examples taken away."""
  offsets = np.concatenate([[0], np.cumsum(data.local_test_sizes)])
  keep = np.ones(len(data.local_test_y), bool)
  keep[offsets[client]:offsets[client + 1]] = False
  sizes = data.local_test_sizes.copy()
  sizes[client] = 0
  return dataclasses.replace(data,
                             local_test_x=data.local_test_x[keep],
                             local_test_y=data.local_test_y[keep],
                             local_test_sizes=sizes)


@pytest.mark.parametrize('sampled', [False, True])
def test_a_client_without_local_test_examples_is_left_out(sampled):
  full = tiny_data(num_clients=30)
  config = tiny_config(**{'eval.clients': 8 if sampled else 0})
  round_index = 1
  clients = (ClientSample(full, 8, config.data.seed).clients(round_index)
             if sampled else np.arange(full.num_clients))
  empty = int(clients[0])  # The first client evaluated: its rows would lead the sums.
  data = _without_local_test(full, empty)
  sim = _two_runs(config, data)
  params = sim.initial_params
  got = sim.evaluate(params, round_index)
  for run in range(2):
    accuracies = _accuracies_by_hand(data, params, run, clients)
    assert len(accuracies) == len(clients) - 1
    want = _spread(accuracies)
    _assert_spread({k: got[k][run] for k in KEYS}, want)
    # Counted as an accuracy of 0 it would move the spread: the test tells the two apart.
    assert _spread(accuracies + [0.0]) != want


def _tensorboard_tags(workdir: pathlib.Path) -> set[str]:
  """The scalar tags of a run's TensorBoard event files (TFRecords: length, its CRC, the event,
  its CRC), read without TensorBoard."""
  tags = set()
  for path in workdir.glob('events.out.tfevents.*'):
    blob = path.read_bytes()
    at = 0
    while at < len(blob):
      length, = struct.unpack('<Q', blob[at:at + 8])
      event = event_pb2.Event.FromString(blob[at + 12:at + 12 + length])
      tags.update(value.tag for value in event.summary.value)
      at += 12 + length + 4
  return tags


@pytest.mark.slow
def test_a_run_records_the_spread_in_its_files(tmp_path):
  experiment.train_and_evaluate(runs.small_config(num_rounds=3, checkpoint_every=3), str(tmp_path))
  records = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert [r['round'] for r in records] == [0, 1, 2, 3]
  for record in records:
    values = [record[k] for k in KEYS]
    assert all(0 <= v <= 1 for v in values) and values[0] <= values[1] <= values[2]
  summary = json.loads((tmp_path / 'summary.json').read_text())
  for key in KEYS:
    assert summary[f'final/{key}'] == records[-1][key]
  for key in ('local_test/accuracy_p10', 'local_test/accuracy_std'):
    np.testing.assert_allclose(summary[f'last10/{key}'], np.mean([r[key] for r in records[1:]]))
  assert set(KEYS) <= _tensorboard_tags(tmp_path)
