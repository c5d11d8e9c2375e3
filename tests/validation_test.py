"""Bad input stops before any compute, in one line that names the field and the fix."""

import ml_collections
import pytest

from fedprox_jax import errors
from fedprox_jax import experiment
from fedprox_jax.configs import synthetic
from fedprox_jax.configs.sweeps import mnist_figure
from fedprox_jax.experiment import grid as sweeps
from fedprox_jax.experiment import validation
from tests.commands import run_module
from tests.conftest import tiny_config


@pytest.mark.parametrize('field, value', [
    ('seed', 2**32),
    ('seed', 2**64),
    ('seed', -1),
    ('data.seed', 2**32),
    ('data.seed', -3),
])
def test_seeds_outside_32_bits_are_refused(field, value):
  # JAX keys keep a seed's low 32 bits: 2^32 would silently repeat seed 0.
  with pytest.raises(errors.ConfigError,
                     match=rf'config.{field} = .* must be an int in \[0, 2\^32 - 1'):
    validation.validate(tiny_config(**{field: value}))


def test_the_largest_seed_is_accepted():
  validation.validate(tiny_config(seed=2**32 - 1, **{'data.seed': 2**32 - 1}))


def test_a_sweep_whose_seeds_pass_2_32_is_refused():
  sweep = mnist_figure.get_config()
  with pytest.raises(errors.ConfigError, match=r'seed \+ repeats - 1 = 4294967299'):
    sweeps.expand(tiny_config(seed=2**32 - 1), sweep)
  sweep.repeats = 1
  assert len(sweeps.expand(tiny_config(seed=2**32 - 1), sweep)) == 9


@pytest.mark.parametrize('field, value', [
    ('algorithm.mu', float('inf')),
    ('client.weight_decay', float('inf')),
    ('client.learning_rate', float('nan')),
    ('stragglers.fraction', float('nan')),
    ('data.train_fraction', float('-inf')),
])
def test_every_float_field_must_be_finite(field, value):
  with pytest.raises(errors.ConfigError, match=f'config.{field} = .* must be a finite'):
    validation.validate(tiny_config(**{field: value}))


@pytest.mark.parametrize('pool, overrides, most', [
    ('train', {}, 5420),
    ('all', {}, 6310),
    ('train', {
        'data.examples_per_label': 50
    }, 540),
    ('train', {
        'data.labels_per_client': 5
    }, 2160),
])
def test_a_partition_the_pool_cannot_give_is_refused_with_the_largest_workable(
    pool, overrides, most):
  config = tiny_config(**{'data.pool': pool, 'clients_per_round': 10, **overrides})
  config.data.num_clients = most
  validation.validate(config)
  config.data.num_clients = most + 10
  with pytest.raises(errors.ConfigError,
                     match=f'data.num_clients = {most + 10} is more than .* use at most {most}'):
    validation.validate(config)


def test_100000_clients_are_refused():
  with pytest.raises(errors.ConfigError, match='use at most 5420'):
    validation.validate(tiny_config(**{'data.num_clients': 100_000}))


def _sweep(**changes):
  sweep = mnist_figure.get_config()
  for key, value in changes.items():
    sweep[key] = value
  return sweep


@pytest.mark.parametrize('sweep, message', [
    (_sweep(repeats=0), 'sweep.repeats = 0 must be an int >= 1'),
    (_sweep(max_runs_per_chunk=-1), 'sweep.max_runs_per_chunk = -1 must be an int >= 0'),
    (_sweep(cpu_devices=-2), 'sweep.cpu_devices = -2 must be an int >= 0'),
    (_sweep(arms=ml_collections.ConfigDict({'a': {
        'algorithm': {
            'muu': 1.0
        }
    }})), "sweep arm 'a': the config has no field algorithm.muu: did you mean algorithm.mu"),
    (_sweep(grid=ml_collections.ConfigDict({'stragglers': {
        'fractoin': [0.0]
    }})),
     'sweep.grid: the config has no field stragglers.fractoin: did you mean stragglers.fraction'),
    (_sweep(grid=ml_collections.ConfigDict({'stragglers': {
        'fraction': []
    }})), 'sweep.grid.stragglers.fraction = .* must be a non-empty list'),
    (_sweep(arms=ml_collections.ConfigDict({'a': {
        'algorithm': {
            'mu': -1.0
        }
    }})), 'sweep run a-fraction0.0-seed0: config.algorithm.mu = -1.0 must be >= 0'),
    (_sweep(arms=ml_collections.ConfigDict()), 'sweep.arms is empty'),
    (_sweep(grid=ml_collections.ConfigDict({'stragglers': {
        'fraction': [0.5, 0.5]
    }})), 'the sweep names two runs fedavg-fraction0.5-seed0'),
])
def test_bad_sweeps_are_refused_before_compute(sweep, message, tmp_path):
  with pytest.raises(errors.ConfigError, match=message):
    experiment.run_sweep(tiny_config(), sweep, str(tmp_path / 'sweep'))
  assert not (tmp_path / 'sweep').exists()


def test_an_unknown_sweep_field_is_refused():
  sweep = mnist_figure.get_config()
  sweep.repeat = 3
  with pytest.raises(errors.ConfigError,
                     match='the sweep has no field repeat: did you mean repeats'):
    sweeps.expand(tiny_config(), sweep)


# Command lines that fail before any compute; no data needed.

CONFIG_FILES = {
    'syntax.py':
        'import ml_collections\ndef get_config(:\n  pass\n',
    'no_get_config.py':
        'import ml_collections\nCONFIG = 1\n',
    'raises.py': ('from fedprox_jax.configs import mnist_fedprox\ndef get_config():\n'
                  '  c = mnist_fedprox.get_config()\n  c.seed = undefined_name\n  return c\n'),
}


@pytest.mark.parametrize('name, message', [
    ('syntax.py', 'syntax.py line 2: invalid syntax'),
    ('no_get_config.py', 'no_get_config.py has no get_config() function'),
    ('raises.py', "raises.py line 4: NameError: name 'undefined_name' is not defined"),
    ('missing.py', "no config file {dir}/missing.py: give a file's path, or a preset's name"),
])
@pytest.mark.slow
def test_a_broken_config_file_is_named_with_its_line(tmp_path, name, message):
  if name in CONFIG_FILES:
    (tmp_path / name).write_text(CONFIG_FILES[name])
  result = run_module(f'--config={tmp_path / name}')
  assert result.returncode != 0
  assert 'Traceback' not in result.stderr
  lines = result.stderr.strip().splitlines()
  assert lines[-1].startswith('error: --config: ') and message.format(dir=tmp_path) in lines[-1], (
      lines[-1])


@pytest.mark.parametrize('override, message', [
    ('--config.foo=3', '--config has no field foo; the fields of the top level are '
     'algorithm, checkpoint_every'),
    ('--config.algorithm.zzzzz=3', '--config has no field algorithm.zzzzz; the fields of '
     'algorithm are adaptive_mu, alpha, drop_stragglers, moon_mu, moon_temperature, mu, name, '
     'q, qffl_lipschitz, weighting'),
    ('--config.algorithm.muu=3', '--config has no field algorithm.muu: did you mean algorithm.mu?'),
])
@pytest.mark.slow
def test_an_unknown_field_names_the_valid_ones(override, message):
  result = run_module('--config=configs/mnist_fedprox.py', override)
  assert result.returncode != 0 and 'Traceback' not in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith(f'error: {message}')


@pytest.mark.slow
def test_a_stray_argument_is_refused():
  result = run_module('--config=configs/synthetic.py', '--overwrite', 'false')
  assert result.returncode != 0 and 'Traceback' not in result.stderr
  assert result.stderr.strip().splitlines()[-1] == (
      "error: unexpected argument 'false': give every flag as --name=value")


@pytest.mark.slow
def test_a_config_file_that_is_not_python_is_named(tmp_path):
  (tmp_path / 'notes.md').write_text('# notes')
  result = run_module(f'--config={tmp_path / "notes.md"}')
  assert result.returncode != 0 and 'Traceback' not in result.stderr
  assert 'notes.md is not a Python config file' in result.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_an_unknown_sweep_variant_is_refused():
  result = run_module('--config=configs/synthetic.py',
                      '--sweep=configs/sweeps/synthetic.py:1_2',
                      module='fedprox_jax.sweep')
  assert result.returncode != 0 and 'Traceback' not in result.stderr
  assert "unknown synthetic variant '1_2'" in result.stderr.strip().splitlines()[-1]


def test_fields_the_run_does_not_read_are_warned_about_never_refused(caplog):
  config = tiny_config(
      **{
          'server.momentum': 0.5,
          'server.b2': 0.9,
          'algorithm.name': 'fednova',
          'algorithm.adaptive_mu': True
      })
  validation.validate(config)  # Never refused.
  # (adaptive_mu is FedProx's rule, which FedNova does not run.)
  assert validation.unused_fields(config) == [
      'server.momentum', 'server.b2', 'algorithm.adaptive_mu'
  ]
  config.algorithm.adaptive_mu = False
  config.server.optimizer = 'momentum'
  config.algorithm.name = 'fedprox'
  assert validation.unused_fields(config) == ['server.b2']
  validation.warn_unused(config)
  assert 'config.server.b2 = 0.9 is not read by the run (algorithm fedprox, server optimizer ' \
      'momentum)' in caplog.text
  config.server.optimizer = 'yogi'
  assert validation.unused_fields(config) == ['server.momentum']


# Sizes that no machine runs: refused by validation, before any data are generated or loaded.


@pytest.mark.parametrize('changes, message', [
    ({
        'client.local_epochs': 10**9
    }, r'needs about .* TiB of memory, more than this machine\'s .*; the most, .* is the shuffle '
     r'tables of 4 client jobs x client.local_epochs = 1,000,000,000'),
    ({
        'client.local_epochs': 2**31
    }, r'config.client.local_epochs = 2,147,483,648 must be at most 2\^31 - 1'),
    ({
        'compute.num_lanes': 10**8
    }, r'the most, .* TiB, is the models of compute.num_lanes = 100,000,000 lanes'),
    ({
        'compute.cpu_devices': 1000
    }, r'config.compute.cpu_devices = 1000 must be in \[0, \d+\] \(0: one per core'),
    ({
        'compute.cpu_devices': 10000
    }, r'config.compute.cpu_devices = 10000 must be in \[0, \d+\]'),
    ({
        'client.batch_size': 1,
        'client.local_epochs': 10**6
    }, r'client.local_epochs = 1,000,000 makes rounds of up to [\d,]+ local steps \(the '
     r'largest client, 1,395 training examples, takes 1,395,000,000 .*more than 2\^31 - 1'),
])
def test_sizes_no_machine_runs_are_refused(changes, message):
  with pytest.raises(errors.ConfigError, match=message):
    validation.validate(tiny_config(**changes))


@pytest.mark.parametrize('changes, message', [
    ({
        'data.num_clients': 3_000_000_000
    }, r'data.num_clients = 3000000000 must be in \[1, 2\^31 - 1\]'),
    ({
        'data.num_clients': 10**9
    }, r'config.data gives [\d,]+ training examples \(data.num_clients = 1,000,000,000 devices, '
     r'about 20,5[\d,]+ examples of 20 features\), more than 2\^31 - 1'),
    ({
        'data.size_log_sigma': 50.0
    }, r'config.data gives [\d,]+ training examples .* more than 2\^31 - 1'),
    ({
        'data.num_clients': 2,
        'clients_per_round': 1,
        'data.min_examples': 3_000_000,
        'data.size_log_mean': 0.0,
        'data.size_log_sigma': 0.0,
        'client.local_epochs': 1000,
        'client.batch_size': 1
    }, r'client.local_epochs = 1,000 makes rounds of up to [\d,]+ local steps \(the largest '
     r'client, 2,700,000 training examples'),
])
def test_synthetic_sizes_past_int32_are_refused_before_generating(changes, message):
  config = synthetic.get_config('large' if changes.get('data.num_clients', 0) > 2 else '1_1')
  config.update_from_flattened_dict(changes)
  with pytest.raises(errors.ConfigError, match=message):
    validation.validate(config)


def test_the_synthetic_presets_and_a_huge_batch_are_accepted():
  for variant in ('iid', '1_1', 'large'):
    validation.validate(synthetic.get_config(variant))
  validation.validate(tiny_config(**{'client.batch_size': 10**9}))
