"""Large populations: the O(cohort) sampler, the per-round gather of the cohort's rows, the
evaluation schedule, the million-device preset, and runs begun under earlier draws."""
import collections
import itertools
import json
import math

import jax
import numpy as np
import pytest

from fedprox_jax import errors
from fedprox_jax import experiment
from fedprox_jax.configs import synthetic as synthetic_config
from fedprox_jax.core import cohort as cohort_lib
from fedprox_jax.core.packing import ClientData
from fedprox_jax.engine import cohort_rows
from fedprox_jax.experiment import validation
from fedprox_jax.experiment.settings import for_run
from fedprox_jax.experiment.settings import simulation
from fedprox_jax.tasks import synthetic
from tests.commands import run_code
from tests.commands import run_module
from tests.runs import records
from tests.runs import small_config


def _draws(population: int, k: int, count: int) -> np.ndarray:
  keys = jax.random.split(jax.random.PRNGKey(0), count)
  sample = jax.jit(jax.vmap(lambda key: cohort_lib.sample_without_replacement(key, population, k)))
  return np.asarray(sample(keys))


@pytest.mark.parametrize('population, k', [(5, 3), (4, 4), (6, 1)])
def test_sampler_draws_every_ordered_tuple_equally_often(population, k):
  """Each ordered k-tuple of distinct clients is equally likely: a chi-square test against the
  uniform law over all of them (listed by itertools), at a level the sampler fails by far if it
  favours a client or an order (Floyd's algorithm alone puts late clients last)."""
  draws = _draws(population, k, 60_000)
  tuples = list(itertools.permutations(range(population), k))
  counts = collections.Counter(map(tuple, draws.tolist()))
  assert set(counts) <= set(tuples)  # Distinct clients, in range.
  expected = len(draws) / len(tuples)
  chi2 = sum((counts.get(t, 0) - expected)**2 / expected for t in tuples)
  dof = len(tuples) - 1
  assert chi2 < dof + 5 * math.sqrt(2 * dof), (chi2, dof)


def test_sampler_work_does_not_grow_with_the_population():
  """Ten clients of 2^31 - 1: a sampler that touched every client would need 8 GB here."""
  draws = _draws(2**31 - 1, 10, 4)
  assert all(len(set(row)) == 10 for row in draws.tolist())
  assert draws.min() >= 0 and draws.max() > 2**30  # Drawn from the whole range.


def _final_server(config, data):
  sim = simulation(config, data, [for_run(config)] * 2)
  server = sim.initial_server
  for r in range(1, 4):
    server, _ = sim.run_round(server, r)
  return sim, server


def test_per_round_rows_equal_replicated_data():
  """The lanes read the cohort's gathered rows exactly as they read the whole data: same
  parameters bit for bit, for SCAFFOLD (client states follow the real clients) over 2 runs."""
  config = small_config(**{'algorithm.name': 'scaffold', 'stragglers.fraction': 0.5})
  config.clients_per_round = 5
  data = synthetic.load(config.data)
  results = {}
  for mode in ('replicated', 'per_round'):
    config.compute.client_data = mode
    sim, server = _final_server(config, data)
    assert sim.client_data_mode == mode
    results[mode] = jax.device_get((server, sim.client_states.gather(sim.sample(3).clients)))
  jax.tree.map(np.testing.assert_array_equal, results['replicated'], results['per_round'])


def test_gathered_rows_are_each_clients_own():
  """The gather against a loop that copies each sampled client's rows one client at a time."""
  rng = np.random.default_rng(0)
  sizes = rng.integers(1, 9, 40).astype(np.int32)
  offsets = (np.cumsum(sizes) - sizes).astype(np.int32)
  x = np.arange(sizes.sum(), dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
  y = np.arange(sizes.sum(), dtype=np.int32)
  clients = np.array([[7, 0, 39], [12, 3, 5]], np.int32)
  bound = cohort_rows.rows_per_round(sizes, 3, 2)
  rows, slots = cohort_rows.make_gather(bound)(clients, ClientData(x, y, offsets, sizes))
  expected = [row for c in clients.reshape(-1) for row in range(offsets[c], offsets[c] + sizes[c])]
  assert np.asarray(rows.y)[:len(expected)].tolist() == expected
  assert np.asarray(rows.x)[:len(expected), 2].tolist() == expected
  assert np.asarray(rows.sizes).tolist() == sizes[clients.reshape(-1)].tolist()
  starts = np.asarray(rows.offsets)
  for slot, c in enumerate(clients.reshape(-1)):
    assert np.asarray(rows.y)[starts[slot]] == offsets[c]
  assert np.asarray(slots).tolist() == [[0, 1, 2], [3, 4, 5]]


def test_auto_gathers_per_round_only_for_large_populations_on_several_cpus():
  cpus = jax.devices()
  large = np.full(100_000, 20)
  assert cohort_rows.choose('auto', cpus, large, 10,
                            1) == ('per_round' if len(jax.local_devices()) > 1 else 'replicated')
  assert cohort_rows.choose('auto', cpus, np.full(1000, 60), 10, 1) == 'replicated'
  assert cohort_rows.choose('replicated', cpus, large, 10, 1) == 'replicated'


@pytest.mark.slow
def test_full_evaluation_on_its_schedule(tmp_path):
  """eval.clients = 3 with eval.full_every = 4: rounds 0, 4 and 8 read every device and equal the
  records of an all-device evaluation; the others (the last, 10, too) read 3 devices."""
  sampled = small_config(num_rounds=10, **{'eval.clients': 3, 'eval.full_every': 4})
  full = small_config(num_rounds=10)
  experiment.train_and_evaluate(sampled, str(tmp_path / 'sampled'))
  experiment.train_and_evaluate(full, str(tmp_path / 'full'))
  a, b = records(tmp_path / 'sampled'), records(tmp_path / 'full')
  for ra, rb in zip(a, b, strict=True):
    assert ra['round'] == rb['round']
    everyone = ra['round'] in (0, 4, 8)
    assert ra['eval/clients'] == (12 if everyone else 3)
    same = ra['local_test/accuracy'] == rb['local_test/accuracy'] and ra['train/loss'] == rb[
        'train/loss']
    assert same == everyone, ra['round']


@pytest.mark.parametrize('field, value, message', [
    ('eval.full_every', 4, 'needs eval.clients > 0'),
    ('compute.client_data', 'sharded', 'compute.client_data'),
    ('draws_version', 1, 'draws_version'),
    ('algorithm.adaptive_mu', True, 'full evaluations among sampled'),
])
def test_invalid_population_fields(field, value, message):
  c = small_config(**{field: value})
  if field == 'algorithm.adaptive_mu':
    c = small_config(eval_every=1, **{field: value, 'eval.clients': 3, 'eval.full_every': 4})
  with pytest.raises(errors.ConfigError, match=message):
    validation.validate(c)
  with pytest.raises(errors.ConfigError, match='multiple of eval_every'):
    validation.validate(small_config(eval_every=3, **{'eval.clients': 2, 'eval.full_every': 4}))


# Loads the million-device preset's data as a run does and prints its own peak resident memory
# (VmHWM; ru_maxrss would carry the parent's peak across fork and exec).
_LOAD_LARGE = """
from fedprox_jax.configs import synthetic as synthetic_config
from fedprox_jax.experiment import validation
from fedprox_jax.tasks import synthetic
c = synthetic_config.get_config('large')
validation.validate(c)
data = synthetic.load(c.data)
sizes = data.train_sizes + data.local_test_sizes
with open('/proc/self/status') as status:
  peak = [line for line in status if line.startswith('VmHWM:')][0].split()[1]
print(len(sizes), sizes.min(), sizes.max(), int(peak) * 1024)
"""


@pytest.mark.slow
def test_large_preset_holds_a_million_devices_in_under_4_gb():
  """The data of synthetic:large, generated and split as a run loads them: 10^6 devices of 10 to
  50 examples, and the loading process's measured peak under 4 GiB."""
  c = synthetic_config.get_config('large')
  assert c.eval.clients and c.eval.full_every and not c.eval.dissimilarity
  result = run_code(_LOAD_LARGE, timeout=1800)
  assert result.returncode == 0, result.stderr[-3000:]
  devices, smallest, largest, peak = map(int, result.stdout.split())
  assert devices == 10**6 and smallest >= 10 and largest <= 50
  assert peak < 4 * 2**30, f'peak {peak / 2**30:.2f} GiB'


@pytest.mark.slow
def test_a_run_begun_under_earlier_draws_is_not_resumed(tmp_path):
  """A workdir written before draws_version existed drew its cohorts otherwise: going on with
  this release's draws would mix two runs, so it is refused with the field named."""
  workdir = tmp_path / 'run'
  experiment.train_and_evaluate(small_config(num_rounds=4), str(workdir))
  saved = json.loads((workdir / 'config.json').read_text())
  del saved['draws_version']
  (workdir / 'config.json').write_text(json.dumps(saved))
  with pytest.raises(errors.ConfigError, match=r'draws_version: 1 -> 2'):
    experiment.train_and_evaluate(small_config(num_rounds=8), str(workdir))


SMALL_RUN = [
    '--config=synthetic:1_1', '--config.data.num_clients=40', '--config.num_rounds=4',
    '--config.eval.dissimilarity=False', '--config.stragglers.fraction=0.5',
    '--config.compute.compilation_cache_dir='
]


def _command_line(tmp_path, name, *flags, launch=False):
  launcher = ['--processes=2', '--'] if launch else []
  result = run_module(*launcher,
                      *SMALL_RUN,
                      *flags,
                      f'--workdir={tmp_path / name}',
                      module='fedprox_jax.launch' if launch else 'fedprox_jax.run',
                      timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return records(tmp_path / name)


@pytest.mark.slow
def test_per_round_rows_equal_replicated_data_over_devices_and_processes(tmp_path):
  """The same through the command line with lanes sharded over a mesh: 2 CPU devices in one
  process, and 2 processes of one device each (each gathers its own copy of the rows)."""
  replicated = _command_line(tmp_path, 'replicated', '--config.compute.cpu_devices=2',
                             '--config.compute.client_data=replicated')
  assert len(replicated) == 5
  assert _command_line(tmp_path, 'per_round', '--config.compute.cpu_devices=2',
                       '--config.compute.client_data=per_round') == replicated
  assert _command_line(tmp_path,
                       'processes',
                       '--config.compute.cpu_devices=1',
                       '--config.compute.client_data=per_round',
                       launch=True) == replicated
