"""The layers' boundaries: the core and the engine take explicit values (no config), the core
knows no task, the engine no experiment, and neither the engine nor the experiment names a model;
the engine's refusals name settings as whoever made its settings says."""
import ast
import pathlib

import numpy as np
import pytest

from fedprox_jax import errors
from fedprox_jax.engine import resources
from fedprox_jax.engine.program_settings import ProgramSettings
from fedprox_jax.experiment import settings
from fedprox_jax.tasks import models
from tests.conftest import tiny_config

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / 'fedprox_jax'


def _modules(layer: str):
  return sorted((PACKAGE / layer).glob('*.py'))


def _imports(path: pathlib.Path) -> set[str]:
  names = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      names.add(node.module)
      names.update(f'{node.module}.{a.name}' for a in node.names)
  return names


@pytest.mark.parametrize('layer', ['core', 'engine'])
def test_the_core_and_the_engine_read_no_config(layer):
  for path in _modules(layer):
    assert not any(n.startswith('ml_collections') for n in _imports(path)), path.name


@pytest.mark.parametrize('layer, forbidden', [
    ('core', ('fedprox_jax.tasks', 'fedprox_jax.engine', 'fedprox_jax.experiment')),
    ('engine', ('fedprox_jax.experiment',)),
])
def test_a_layer_imports_nothing_above_it(layer, forbidden):
  for path in _modules(layer):
    bad = [n for n in _imports(path) if n.startswith(forbidden)]
    assert not bad, (path.name, bad)


@pytest.mark.parametrize('layer', ['engine', 'experiment'])
def test_no_model_is_named(layer):
  for path in _modules(layer):
    strings = {
        node.value
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    assert not strings & set(models.MODELS), (path.name, strings & set(models.MODELS))


def _too_many_steps(program: ProgramSettings):
  sizes = np.array([2_700_000, 5], np.int64)
  with pytest.raises(errors.ConfigError) as refused:
    resources.check_steps(program, sizes, num_runs=1, lanes=1, batch=1)
  return str(refused.value)


def test_the_engine_names_settings_as_its_maker_says():
  bare = ProgramSettings('fedprox', 'logistic_regression', local_epochs=1000, batch_size=1)
  message = _too_many_steps(bare)
  assert message.startswith('local_epochs = 1,000 makes rounds') and 'raise batch_size' in message
  named = ProgramSettings('fedprox',
                          'logistic_regression',
                          local_epochs=1000,
                          batch_size=1,
                          names=(('local_epochs', 'E'), ('batch_size', 'B')))
  assert _too_many_steps(named).startswith('E = 1,000 makes rounds')
  from_config = settings.for_program(
      tiny_config(**{
          'client.local_epochs': 1000,
          'client.batch_size': 1
      }))
  message = _too_many_steps(from_config)
  assert message.startswith('client.local_epochs = 1,000 makes rounds')
  assert 'raise client.batch_size' in message


def test_every_program_setting_comes_from_a_config_field():
  c = tiny_config(**{'eval.clients': 7, 'compute.num_lanes': 4, 'client.local_epochs': 3})
  program = settings.for_program(c)
  assert set(settings.PROGRAM_FIELDS) | {'model_options', 'names', 'aggregation'} == set(
      ProgramSettings.__dataclass_fields__)
  assert (program.eval_clients, program.num_lanes, program.local_epochs) == (7, 4, 3)
  assert program.aggregation == ()  # The stages follow their config fields.
  private = settings.for_program(tiny_config(**{'privacy.clip_norm': 1.0}))
  assert private.aggregation == ('clip', 'gaussian_noise')
  assert program.name('num_lanes') == 'compute.num_lanes'
