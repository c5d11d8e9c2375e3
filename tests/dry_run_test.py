"""--dry_run: every preset and sweep, each variant, checked and planned with nothing written; bad
configs and workdirs still refused in one line; the wall-time model's counts against plain ones."""
import ast
import functools
import importlib
import inspect
import itertools
import math
import pathlib
import re
import subprocess

import ml_collections
import numpy as np
import pytest

from fedprox_jax import config_fields
from fedprox_jax import configs as presets
from fedprox_jax import errors
from fedprox_jax.configs import mnist_fedprox
from fedprox_jax.configs import shakespeare as shakespeare_config
from fedprox_jax.experiment import dry_run
from fedprox_jax.experiment import program_plan
from fedprox_jax.tasks import shakespeare_text
from tests.commands import run_module
from tests.conftest import mnist_manual_dir
from tests.conftest import shakespeare_dir


def _module(name: str, sweep: bool = False):
  return importlib.import_module(f'fedprox_jax.configs.{"sweeps." if sweep else ""}{name}')


def _variants(name: str, sweep: bool = False) -> list:
  """None (the default) and every variant the preset's module names."""
  return [None, *getattr(_module(name, sweep), 'VARIANTS', ())]


PRESETS = [(n, v) for n in presets.names() for v in _variants(n)]
SWEEPS = [(n, v) for n in presets.names(sweep=True) for v in _variants(n, sweep=True)]


@pytest.fixture(scope='module', autouse=True)
def _texts_parsed_once():
  """The Shakespeare texts parsed once for all the module's dry runs (seconds each)."""
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(shakespeare_text, 'roles', functools.cache(shakespeare_text.roles))
    yield


def _with_local_data(config: ml_collections.ConfigDict, cache_dir: pathlib.Path):
  """The config reading this machine's datasets (a missing one fails under CI) and caching
  nowhere but in `cache_dir`, which a dry run must leave unmade."""
  config = ml_collections.ConfigDict(config.to_dict())
  if 'cache_dir' in config.data:
    config.data.cache_dir = str(cache_dir)
  if config.data.name == 'mnist':
    config.data.manual_dir = mnist_manual_dir()
  if config.data.name == 'shakespeare':
    config.data.manual_dir = str(shakespeare_dir())
  return config


def _files(root: pathlib.Path) -> list[str]:
  return sorted(str(p.relative_to(root)) for p in root.rglob('*'))


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
  """An empty working directory; after the test, it must still be empty."""
  monkeypatch.chdir(tmp_path)
  yield tmp_path
  assert _files(tmp_path) == []


@pytest.mark.parametrize('name, sweep', [(n, False) for n in presets.names()] +
                         [(n, True) for n in presets.names(sweep=True)])
def test_variants_are_exactly_what_get_config_takes(name, sweep):
  module = _module(name, sweep)
  variants = getattr(module, 'VARIANTS', None)
  if variants is None:  # No variants: get_config takes no argument at all.
    assert not inspect.signature(module.get_config).parameters
    return
  for variant in variants:
    assert isinstance(module.get_config(variant), ml_collections.ConfigDict)
  with pytest.raises(ValueError) as refused:
    module.get_config('no_such_variant')
  assert all(v in str(refused.value) for v in variants)  # The refusal lists every one.


def _check_report(text: str, run_names: list[str]) -> None:
  for heading in ('Compiled programs: ', 'Memory estimate: about ', 'Wall time estimate: about ',
                  dry_run.NOTHING_WRITTEN):
    assert heading in text
  for name in run_names:
    assert re.search(rf'^  {re.escape(name)}: ', text, re.M), name


@pytest.mark.parametrize('name, variant', PRESETS)
def test_every_preset_dry_runs_and_writes_nothing(name, variant, sandbox):
  module = _module(name)
  config = module.get_config(variant) if variant else module.get_config()
  config = _with_local_data(config, sandbox / 'cache')
  text = dry_run.single(config, str(sandbox / 'workdir'), False, False)
  _check_report(text, [])
  assert 'Runs: 1' in text
  assert f'{sandbox / "workdir"}: new, made at the start' in ' '.join(text.split())


def _documented(module, variant) -> tuple[ml_collections.ConfigDict, ml_collections.ConfigDict]:
  """(Base, sweep) of the sweep command that the module's docstring gives for `variant` (else its
  first, the base's variant then the same as the sweep's)."""
  text = re.sub(r'\\\n\s*', ' ', module.__doc__)
  commands = [c.split() for c in re.findall(r'python -m fedprox_jax\.sweep ([^\n]+)', text)]
  assert commands, f'{module.__name__} documents no sweep command'
  specs = lambda args, flag: [a.split('=', 1)[1] for a in args if a.startswith(f'--{flag}=')][0]
  chosen = [c for c in commands if specs(c, 'sweep').partition(':')[2] == (variant or '')]
  args = chosen[0] if chosen else commands[0]
  base_path, _, base_variant = specs(args, 'config').partition(':')
  if not chosen and base_variant == specs(args, 'sweep').partition(':')[2]:
    base_variant = variant
  base = _module(pathlib.Path(base_path).stem).get_config(*[base_variant] if base_variant else [])
  for arg in args:
    match = re.match(r'--config\.([\w.]+)=(.*)', arg)
    if match:
      try:
        value = ast.literal_eval(match.group(2))
      except (ValueError, SyntaxError):
        value = match.group(2)
      base.update_from_flattened_dict({match.group(1): value})
  return base, module.get_config(variant) if variant else module.get_config()


@pytest.mark.parametrize('name, variant', SWEEPS)
def test_every_sweep_dry_runs_names_its_runs_and_writes_nothing(name, variant, sandbox):
  base, sweep = _documented(_module(name, sweep=True), variant)
  base = _with_local_data(base, sandbox / 'cache')
  text = dry_run.sweep(base, sweep, str(sandbox / 'workdir'), False, False)
  # The runs, counted plainly: each arm's grid and the shared one, times the repeats.
  sizes = lambda tree: [len(v) for v in config_fields.flatten(tree).values()]
  per_arm = {
      name: math.prod(sizes(arm.get('grid', {})) + sizes(sweep.get('grid', {}))) * sweep.repeats
      for name, arm in sweep.arms.items()
  }
  expected = sum(per_arm.values())
  listed = text.split('\nRuns: ')[1].split('\nCompiled programs: ')[0].splitlines()[1:]
  names = [line.split(':')[0].strip() for line in listed if not line.startswith('      ')]
  assert f'Runs: {expected} ' in text and len(set(names)) == expected
  for arm in sweep.arms:  # Every run is named by its arm, then its grid values and its seed.
    assert sum(n.startswith(f'{arm}-') for n in names) == per_arm[arm]
  _check_report(text, names)


def test_a_bad_field_fails_in_one_line_as_a_start_does(sandbox, monkeypatch):
  # main() takes the process as a command line's; this one (the tests') is left as it is.
  monkeypatch.setattr(dry_run.devices_lib, 'own_process', lambda: None)
  config = mnist_fedprox.get_config()
  config.client.batch_size = 0
  with pytest.raises(SystemExit) as stopped:
    dry_run.main(lambda: dry_run.single(config, None, True, False))
  assert str(stopped.value) == 'error: config.client.batch_size = 0 must be >= 1'


def test_a_workdir_of_another_config_is_refused_and_left_as_it_is(tmp_path):
  workdir = tmp_path / 'workdir'
  workdir.mkdir()
  other = mnist_fedprox.get_config()
  other.algorithm.mu = 0.5
  (workdir / 'config.json').write_text(other.to_json())
  (workdir / 'metrics.jsonl').write_text('')
  before = {p: p.read_bytes() for p in workdir.iterdir()}
  config = _with_local_data(mnist_fedprox.get_config(), tmp_path / 'cache')
  with pytest.raises(errors.ConfigError, match='holds a run of another config'):
    dry_run.single(config, str(workdir), False, False)
  assert {p: p.read_bytes() for p in workdir.iterdir()} == before
  (workdir / 'notes.txt').write_text('mine')
  with pytest.raises(errors.ConfigError, match='--overwrite would delete .*notes.txt'):
    dry_run.single(config, str(workdir), False, True)
  (workdir / 'config.json').write_text(config.to_json())
  text = ' '.join(dry_run.single(config, str(workdir), False, False).split())
  assert f'{workdir}: holds a run of this config' in text
  assert sorted(p.name for p in workdir.iterdir()) == ['config.json', 'metrics.jsonl', 'notes.txt']
  assert (workdir / 'notes.txt').read_text() == 'mine' and not (workdir / '.lock').exists()


def test_forward_flops_match_the_models_arithmetic():
  """Logistic regression: 784 x 10 multiply-adds (and 10 biases); the paper's LSTM step: 3.82
  GFLOP a step of 10 windows (forward and backward, counted by hand in README: Shakespeare)."""
  c = mnist_fedprox.get_config()
  assert program_plan.forward_flops(c) == pytest.approx(2 * 784 * 10, rel=0.01)
  step = 3 * 10 * program_plan.forward_flops(shakespeare_config.get_config('paper'))
  assert step == pytest.approx(3.82e9, rel=0.03)


@pytest.mark.parametrize('fraction, drop', [(0.0, False), (0.9, False), (0.9, True), (0.5, True)])
def test_expected_steps_are_the_plain_mean_over_cohorts_and_stragglers(fraction, drop):
  """Against a plain average over every client and every number of epochs it may do."""
  c = mnist_fedprox.get_config()
  c.stragglers.fraction, c.algorithm.drop_stragglers = fraction, drop
  sizes = np.array([3, 10, 11, 25, 99])
  plan = program_plan.DataPlan(int(sizes.sum()), 0, 1, 0, int(sizes.max()), 0, 0, '', '', sizes)
  e, b = c.client.local_epochs, c.client.batch_size
  straggler = 0.0 if drop else np.mean(range(1, e))
  expected = c.clients_per_round * np.mean([-(-n // b) for n in sizes]) * (
      (1 - fraction) * e + fraction * straggler)
  assert program_plan._steps_per_run(c, plan, b, len(sizes)) == pytest.approx(expected)


def test_evaluations_are_the_rounds_that_are_evaluated():
  from fedprox_jax.experiment import rounds  # pylint: disable=g-import-not-at-top
  for num_rounds, every in itertools.product((1, 7, 10, 100), (1, 3, 10)):
    c = ml_collections.ConfigDict({'num_rounds': num_rounds, 'eval_every': every})
    evaluated = rounds.evaluation_rounds(num_rounds, every)
    assert program_plan.evaluations(c) == len(evaluated.up_to(num_rounds))


def _cli(args: list[str], cwd: pathlib.Path) -> subprocess.CompletedProcess:
  return run_module(*args[1:], module=args[0], cwd=cwd, timeout=300)


@pytest.mark.slow
def test_the_command_lines_dry_run_without_writing(tmp_path):
  cache = tmp_path / 'cache'
  manual = [f'--config.data.manual_dir={mnist_manual_dir()}'] if mnist_manual_dir() else []
  run = _cli([
      'fedprox_jax.run', '--config=mnist_fedprox', '--dry_run', f'--config.data.cache_dir={cache}',
      *manual
  ], tmp_path)
  assert run.returncode == 0, run.stderr
  assert re.search(r'^Workdir: runs/mnist_fedprox-\d{8}-\d{6} ', run.stdout, re.M)
  sweep = _cli([
      'fedprox_jax.sweep', '--config=synthetic:1_1', '--sweep=synthetic:1_1', '--dry_run',
      f'--workdir={tmp_path / "sweep"}'
  ], tmp_path)
  assert sweep.returncode == 0, sweep.stderr
  assert 'Runs: 9 ' in sweep.stdout and 'adaptive-seed2: ' in sweep.stdout
  assert 'Wall time estimate: about ' in sweep.stdout
  bad = _cli(['fedprox_jax.run', '--config=no_such_preset', '--dry_run'], tmp_path)
  assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1
  assert bad.stderr.startswith('error: --config: no config file no_such_preset')
  assert _files(tmp_path) == []
