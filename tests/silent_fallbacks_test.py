"""What used to be dropped or replaced without a word is now refused or said."""
import logging
import sys
import textwrap

import jax
import pytest

from fedprox_jax import registry
from fedprox_jax.algorithms import base
from fedprox_jax.configs import mnist_fedprox
from fedprox_jax.errors import ConfigError
from fedprox_jax.experiment import validation
from fedprox_jax.tasks import models


def _package(tmp_path, name, modules: dict[str, str]):
  folder = tmp_path / name
  folder.mkdir()
  (folder / '__init__.py').write_text('')
  for module, text in modules.items():
    (folder / f'{module}.py').write_text(textwrap.dedent(text))
  sys.path.insert(0, str(tmp_path))
  return folder


_ALGORITHM = '''
from fedprox_jax.algorithms import fedprox
ALGORITHM = fedprox.ALGORITHM._replace(name={name!r})
'''


def test_a_marker_of_the_wrong_type_is_refused(tmp_path, monkeypatch):
  monkeypatch.setattr(sys, 'path', list(sys.path))
  folder = _package(
      tmp_path, 'wrong_type_pkg', {
          'good': _ALGORITHM.format(name='good'),
          'bad': 'ALGORITHM = {"name": "bad"}\n',
          'helper': 'X = 1\n'
      })
  with pytest.raises(TypeError, match=r'wrong_type_pkg\.bad\.ALGORITHM is a dict, not a Algorithm'):
    registry.discover('wrong_type_pkg', [str(folder)], 'ALGORITHM', base.Algorithm)


def test_two_algorithms_of_one_name_are_refused(tmp_path, monkeypatch):
  monkeypatch.setattr(sys, 'path', list(sys.path))
  folder = _package(tmp_path, 'twice_pkg', {
      'first': _ALGORITHM.format(name='same'),
      'second': _ALGORITHM.format(name='same')
  })
  with pytest.raises(ValueError, match="both named 'same'"):
    registry.discover('twice_pkg', [str(folder)], 'ALGORITHM', base.Algorithm)


def test_distinct_algorithms_and_helper_modules_are_found(tmp_path, monkeypatch):
  monkeypatch.setattr(sys, 'path', list(sys.path))
  folder = _package(tmp_path, 'fine_pkg', {
      'b': _ALGORITHM.format(name='b'),
      'a': _ALGORITHM.format(name='a'),
      'helper': 'X = 1\n'
  })
  found = registry.discover('fine_pkg', [str(folder)], 'ALGORITHM', base.Algorithm)
  assert list(found) == ['a', 'b']


def test_a_model_field_the_model_does_not_take_is_refused():
  with pytest.raises(ConfigError, match=r"config.model.hidden is not a field of model 'cnn'"):
    models.create_model('cnn', 10, 784, jax.random.key(0), hidden=256)
  # The LSTM takes its sizes.
  models.create_model('lstm', 5, 80, jax.random.key(0), embedding=4, hidden=8, layers=1)


def _warnings(config, caplog) -> list[str]:
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    validation.warn_unused(config)
  return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize('name', ['fednova', 'scaffold', 'fedavg'])
def test_another_algorithm_with_fedproxs_mu_is_warned_about(name, caplog):
  c = mnist_fedprox.get_config()
  c.algorithm.name = name
  said = _warnings(c, caplog)
  assert any(f'is {name} with algorithm.mu = 1.0' in m and 'algorithm.mu = 0' in m for m in said)
  c.algorithm.mu = 0.0
  assert not any('algorithm.mu' in m for m in _warnings(c, caplog))


def test_adaptive_mu_is_read_by_fedprox_and_fedavg_and_called_unread_elsewhere(caplog):
  """Adaptive mu is FedProx's rule (algorithms/fedprox.py): FedProx and FedAvg read it, the
  others are told they do not, which is what their runs do (tests/algorithms_test.py)."""
  c = mnist_fedprox.get_config()
  c.algorithm.adaptive_mu = True
  assert not _warnings(c, caplog)  # FedProx: nothing to say.
  c.algorithm.name, c.algorithm.mu = 'fedavg', 0.0
  assert not any('not read' in m for m in _warnings(c, caplog))
  c.algorithm.name = 'fednova'
  said = _warnings(c, caplog)
  assert any(
      'config.algorithm.adaptive_mu = True is not read by the run (algorithm fednova' in m and
      'only fedavg, fedprox read it' in m for m in said), said
