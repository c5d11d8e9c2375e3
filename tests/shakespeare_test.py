"""The Shakespeare task: LEAF's sample and split of roles into clients, windows gathered from the
text, the character LSTM in the packed lanes against the plain loop, evaluation on a sample of
clients, and the command line on the shared texts."""
import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from fedprox_jax.configs import shakespeare as shakespeare_config
from fedprox_jax.engine import reference
from fedprox_jax.experiment.settings import for_run
from fedprox_jax.experiment.settings import simulation
from fedprox_jax.tasks import models
from fedprox_jax.tasks import shakespeare
from fedprox_jax.tasks import shakespeare_fetch
from fedprox_jax.tasks.federated_data import FederatedData
from tests.conftest import REPO
from tests.conftest import shakespeare_dir
from tests.conftest import subprocess_env
from tests.conftest import tiny_config
from tests.conftest import tiny_data

WINDOW = 80


def _roles(lengths, seed=0):
  """Handwritten roles: role i's text is random vocabulary characters, lengths[i] of them."""
  rng = np.random.default_rng(seed)
  letters = shakespeare.text_lib.ALL_LETTERS
  return [('play', f'ROLE{i}', ''.join(rng.choice(list(letters), n))) for i, n in enumerate(lengths)
         ]


def _load(monkeypatch, tmp_path, roles, **data):
  monkeypatch.setattr(shakespeare.text_lib, 'roles', lambda folder: roles)
  monkeypatch.setattr(shakespeare_fetch, 'texts_folder', lambda c: '')
  c = shakespeare_config.get_config().data
  c.cache_dir = str(tmp_path)
  c.update(data)
  return shakespeare.load(c)


def test_sample_takes_whole_roles_in_a_random_order_and_cuts_the_last():
  lengths = [80 + w for w in (500, 300, 1000, 200, 700, 90, 400)]
  total = sum(n - 80 for n in lengths)
  taken = shakespeare.sample_roles(lengths, 0.4, seed=3)
  roles = [r for r, _ in taken]
  assert len(set(roles)) == len(roles)
  assert sum(k for _, k in taken) == int(np.ceil(0.4 * total))
  for role, keep in taken[:-1]:
    assert keep == lengths[role] - 80  # Whole...
  assert taken[-1][1] <= lengths[taken[-1][0]] - 80  # ...but the last.
  assert shakespeare.sample_roles(lengths, 0.4, seed=3) == taken
  orders = {tuple(r for r, _ in shakespeare.sample_roles(lengths, 0.4, seed=s)) for s in range(8)}
  assert len(orders) > 1
  assert sum(k for _, k in shakespeare.sample_roles(lengths, 1.0, seed=0)) == total


def test_split_leaves_a_gap_of_79_so_test_inputs_share_no_character_with_training_inputs():
  for n in (2, 81, 100, 101, 500, 1001):
    train, test = shakespeare.split(n, 0.8)
    assert len(train) == int(0.8 * n)
    assert not set(train) & set(test)
    if len(train) and len(test):
      assert test.start - train.stop == 79
      last_train_input = train.stop - 1 + WINDOW - 1
      assert last_train_input < test.start  # Character indices of the role's text.
      assert test.stop == n


def test_clients_hold_their_roles_windows_and_targets(monkeypatch, tmp_path):
  roles = _roles([80 + 500, 80 + 150, 80 + 1000, 80 + 450, 80 + 800])
  data = _load(monkeypatch, tmp_path, roles, fraction=1.0, seed=1)
  texts = {len(t): shakespeare.text_lib.encode(t) for _, _, t in roles}
  # The role of 150 windows trains on 120, and 120 + 79 leaves it no test window: dropped.
  assert data.num_clients == 4
  assert sorted(data.train_sizes) == sorted(int(0.8 * w) for w in (500, 1000, 450, 800))
  assert data.window == WINDOW and data.input_dim == WINDOW
  train_offsets = np.concatenate([[0], np.cumsum(data.train_sizes)])
  test_offsets = np.concatenate([[0], np.cumsum(data.local_test_sizes)])
  for c in range(data.num_clients):
    train = data.train_x[train_offsets[c]:train_offsets[c + 1], 0]
    test = data.local_test_x[test_offsets[c]:test_offsets[c + 1], 0]
    windows = train[0]  # The role's text starts at its first training window.
    n = len(train) + 79 + len(test)  # Its windows, in the split's order.
    role = texts[n + WINDOW]
    assert np.array_equal(train, windows + np.arange(len(train)))
    assert np.array_equal(test, windows + len(train) + 79 + np.arange(len(test)))
    for start, label in zip(train, data.train_y[train_offsets[c]:train_offsets[c + 1]]):
      j = start - windows
      assert np.array_equal(data.text[start:start + WINDOW], role[j:j + WINDOW])
      assert label == role[j + WINDOW]
    assert np.array_equal(data.local_test_y[test_offsets[c]:test_offsets[c + 1]],
                          role[test - windows + WINDOW])


def _kept(lengths, fraction, seed, cap=0):
  """Windows of each client LEAF's rules keep: sampled, capped, with training and test windows."""
  kept = []
  for _, keep in shakespeare.sample_roles(lengths, fraction, seed):
    keep = min(keep, cap or keep)
    if int(0.8 * keep) + 79 < keep:
      kept.append(keep)
  return sorted(kept)


def test_fraction_and_max_windows_bound_the_sample(monkeypatch, tmp_path):
  lengths = [80 + 600 + 37 * i for i in range(20)]
  roles = _roles(lengths)
  for cap in (0, 500):
    data = _load(monkeypatch, tmp_path, roles, fraction=0.5, seed=0, max_windows=cap)
    windows = data.train_sizes + data.local_test_sizes + 79
    assert sorted(windows) == _kept(lengths, 0.5, 0, cap)
    assert len(windows) >= 5 and (not cap or windows.max() == cap)
  total = sum(n - 80 for n in lengths)
  assert sum(_kept(lengths, 0.5, 0)) <= int(np.ceil(0.5 * total))


def _text_data(num_clients=5, seed=0):
  """A tiny sequence federation: random text, clients of 12 to 40 training windows."""
  rng = np.random.default_rng(seed)
  train_sizes = rng.integers(12, 41, num_clients).astype(np.int32)
  test_sizes = np.full(num_clients, 3, np.int32)
  text = rng.integers(0, 80, 4000).astype(np.uint8)

  def windows(n):
    starts = rng.integers(0, len(text) - WINDOW, n).astype(np.int32)
    return starts[:, None], text[starts + WINDOW].astype(np.int32)

  train_x, train_y = windows(int(train_sizes.sum()))
  test_x, test_y = windows(int(test_sizes.sum()))
  return FederatedData(train_x,
                       train_y,
                       train_sizes,
                       test_x,
                       test_y,
                       test_sizes,
                       test_x[:0],
                       test_y[:0],
                       num_classes=80,
                       text=text,
                       window=WINDOW)


def test_the_lstm_in_packed_lanes_matches_the_plain_loop_on_materialised_windows():
  """The packed round gathers windows from starts inside the program; the reference is handed
  every window written out, and the model's plain apply function."""
  config = tiny_config(num_rounds=3,
                       clients_per_round=3,
                       **{
                           'stragglers.fraction': 0.5,
                           'algorithm.mu': 0.01,
                           'client.batch_size': 4,
                           'client.local_epochs': 2,
                           'client.learning_rate': 0.5
                       })
  config.model = shakespeare_config.get_config().model
  config.model.hidden, config.model.layers = 8, 2
  data = _text_data()
  sim = simulation(config, data, [for_run(config)])
  plain_apply, _ = models.create_model('lstm',
                                       80,
                                       WINDOW,
                                       jax.random.PRNGKey(0),
                                       hidden=8,
                                       layers=2)
  written_out = data.text[data.train_x[:, 0, None] + np.arange(WINDOW)].astype(np.int32)
  ref = reference.make_reference_train_cohort(plain_apply,
                                              learning_rate=config.client.learning_rate,
                                              weight_decay=config.client.weight_decay,
                                              batch_size=config.client.batch_size)
  server = sim.initial_server
  for r in range(1, config.num_rounds + 1):
    cohort = jax.tree.map(np.asarray, sim.sample(r))
    want = ref(server.params, cohort, np.asarray(sim.hp['mu']), written_out, data.train_y,
               data.train_offsets, data.train_sizes)
    server, _ = sim.run_round(server, r)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), server.params,
                 want)
  initial = jax.tree.leaves(sim.initial_params)
  assert any(not np.allclose(a, b) for a, b in zip(initial, jax.tree.leaves(server.params)))


def _plain_metrics(apply_fn, params, x, y):
  logits = np.asarray(apply_fn(params, x), np.float64)
  logits -= logits.max(1, keepdims=True)
  log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
  return -log_p[np.arange(len(y)), y].mean(), (logits.argmax(1) == y).mean()


def test_evaluation_on_a_sample_of_clients_is_their_examples_metrics():
  data = tiny_data(num_clients=12)
  sampled = simulation(tiny_config(**{'eval.clients': 4}), data, [for_run(tiny_config())])
  whole = simulation(tiny_config(), data, [for_run(tiny_config())])
  params = sampled.initial_params
  one = jax.tree.map(lambda a: a[0], params)
  offsets = np.concatenate([[0], np.cumsum(data.local_test_sizes)])
  train_offsets = np.concatenate([[0], np.cumsum(data.train_sizes)])
  drawn = []
  for r in (0, 5, 10):
    clients = sampled._eval_sample.clients(r)  # pylint: disable=protected-access
    assert len(set(clients)) == 4 and clients.max() < 12
    drawn.append(tuple(clients))
    rows = np.concatenate([np.arange(offsets[c], offsets[c + 1]) for c in clients])
    train_rows = np.concatenate(
        [np.arange(train_offsets[c], train_offsets[c + 1]) for c in clients])
    got = sampled.evaluate(params, r)
    loss, accuracy = _plain_metrics(sampled.apply_fn, one, data.local_test_x[rows],
                                    data.local_test_y[rows])
    np.testing.assert_allclose(got['local_test/loss'][0], loss, rtol=1e-5)
    np.testing.assert_allclose(got['local_test/accuracy'][0], accuracy, rtol=1e-6)
    loss, _ = _plain_metrics(sampled.apply_fn, one, data.train_x[train_rows],
                             data.train_y[train_rows])
    np.testing.assert_allclose(got['train/loss'][0], loss, rtol=1e-5)
    # The central test set has no clients: evaluated whole either way.
    np.testing.assert_allclose(got['test/loss'], whole.evaluate(params, r)['test/loss'], rtol=1e-6)
    again = simulation(tiny_config(**{'eval.clients': 4}), data,
                       [for_run(tiny_config())]).evaluate(params, r)
    assert again == got  # The same clients for every program: a resumed run repeats its records.
  assert len(set(drawn)) == 3  # Drawn afresh at each evaluation.
  loss, _ = _plain_metrics(whole.apply_fn, one, data.local_test_x, data.local_test_y)
  np.testing.assert_allclose(whole.evaluate(params, 5)['local_test/loss'][0], loss, rtol=1e-5)


@pytest.mark.slow
def test_the_command_line_trains_on_the_shared_texts(tmp_path):
  folder = shakespeare_dir()
  workdir = tmp_path / 'run'
  flags = [
      '--config=configs/shakespeare.py:cpu', f'--workdir={workdir}',
      f'--config.data.manual_dir={folder}', f'--config.data.cache_dir={tmp_path / "cache"}',
      '--config.data.fraction=0.003', '--config.data.max_windows=500', '--config.model.hidden=16',
      '--config.num_rounds=2', '--config.eval_every=1', '--config.eval.clients=3',
      '--config.clients_per_round=4'
  ]
  result = subprocess.run([sys.executable, '-m', 'fedprox_jax.run', *flags],
                          cwd=REPO,
                          env=subprocess_env(),
                          capture_output=True,
                          text=True,
                          timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  records = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert [r['round'] for r in records] == [0, 1, 2]
  assert 0 <= records[-1]['local_test/accuracy'] <= 1
  assert records[-1]['train/loss'] < records[0]['train/loss']  # ln 80 = 4.38 at first.
  summary = json.loads((workdir / 'summary.json').read_text())
  assert summary['final/round'] == 2 and summary['data']['clients'] >= 4


@pytest.mark.slow
def test_texts_missing_from_the_given_folder_are_a_one_line_error(tmp_path):
  result = subprocess.run([
      sys.executable, '-m', 'fedprox_jax.run', '--config=configs/shakespeare.py:cpu',
      f'--workdir={tmp_path / "run"}', f'--config.data.manual_dir={tmp_path}',
      f'--config.data.cache_dir={tmp_path / "cache"}'
  ],
                          cwd=REPO,
                          env=subprocess_env(),
                          capture_output=True,
                          text=True,
                          timeout=300)
  assert result.returncode != 0
  last = result.stderr.strip().splitlines()[-1]
  assert 'Shakespeare file' in last and 'data.manual_dir' in last, last


@pytest.mark.parametrize('field,value', [('data.fraction', 0.0), ('data.max_windows', -1),
                                         ('data.max_windows', 300), ('model.name', 'cnn'),
                                         ('data.train_fraction', 1.0), ('model.hidden', 0),
                                         ('model.layers', 0), ('model.embedding', -1)])
def test_bad_shakespeare_fields_are_named(field, value):
  from fedprox_jax import errors  # pylint: disable=import-outside-toplevel
  from fedprox_jax.experiment import validation  # pylint: disable=import-outside-toplevel
  c = shakespeare_config.get_config('cpu')
  c.update_from_flattened_dict({field: value})
  with pytest.raises(errors.ConfigError, match=field.replace('.', r'\.')):
    validation.validate(c)


def test_the_presets_are_valid_and_the_figure_sweep_has_its_nine_runs():
  from fedprox_jax.configs.sweeps import shakespeare_figure  # pylint: disable=import-outside-toplevel
  from fedprox_jax.experiment import grid  # pylint: disable=import-outside-toplevel
  from fedprox_jax.experiment import validation  # pylint: disable=import-outside-toplevel
  for variant in ('paper', 'cpu'):
    validation.validate(shakespeare_config.get_config(variant))
  base, runs = grid.prepare(shakespeare_config.get_config('cpu'), shakespeare_figure.get_config())
  assert len(runs) == 9
  settings = {(r.config.algorithm.name, r.config.algorithm.mu, r.config.algorithm.drop_stragglers,
               r.config.stragglers.fraction) for r in runs}
  assert settings == {('fedavg', 0.0, True, 0.9), ('fedprox', 0.0, False, 0.9),
                      ('fedprox', 0.001, False, 0.9)}
  assert {r.config.seed for r in runs} == {0, 1, 2} and base.data.name == 'shakespeare'
