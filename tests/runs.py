"""Small in-process runs with workdirs, and how to compare them: shared by the integrity tests."""
import json
import pathlib
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp

from fedprox_jax import experiment
from fedprox_jax.configs import synthetic


def small_config(**overrides):
  """Synthetic(1,1) on 12 devices: a 12-round run takes well under a second."""
  c = synthetic.get_config('1_1')
  c.data.num_clients = 12
  c.clients_per_round = 4
  c.client.local_epochs = 2
  c.eval.dissimilarity = False
  c.num_rounds = 12
  c.checkpoint_every = 4
  c.checkpoint_keep = 3
  c.compute.cpu_devices = jax.device_count()
  for key, value in overrides.items():
    c.update_from_flattened_dict({key: value})
  return c


def straight_and_resumed(tmp_path: pathlib.Path, overrides: dict, stop: int = 4):
  """small_config(**overrides)'s records run straight through, and run to round `stop` then
  resumed to its end by a second call, as (straight, resumed)."""
  from fedprox_jax import experiment  # pylint: disable=g-import-not-at-top
  experiment.train_and_evaluate(small_config(**overrides), str(tmp_path / 'straight'))
  experiment.train_and_evaluate(small_config(**overrides, num_rounds=stop),
                                str(tmp_path / 'resumed'))
  experiment.train_and_evaluate(small_config(**overrides), str(tmp_path / 'resumed'))
  return records(tmp_path / 'straight'), records(tmp_path / 'resumed')


def records(workdir: pathlib.Path) -> list[dict]:
  """metrics.jsonl without its wall-clock fields."""
  lines = (workdir / 'metrics.jsonl').read_text().splitlines()
  return [{
      k: v for k, v in json.loads(line).items() if not k.startswith('time/')
  } for line in lines]


def saved_params(workdir: pathlib.Path, round_index: int):
  """A checkpoint's parameters, read with orbax alone (not with the code under test)."""
  state = ocp.StandardCheckpointer().restore(workdir / 'checkpoints' / str(round_index) / 'state')
  return {k: v for k, v in state.items() if k.startswith('server.params.')}


def make_undisturbed(tmp_path_factory):
  """A whole 12-round run: what every disturbed run must end equal to."""
  root = tmp_path_factory.mktemp('undisturbed')
  experiment.train_and_evaluate(small_config(), str(root))
  return root


def copy_run(undisturbed: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
  target = tmp_path / 'run'
  shutil.copytree(undisturbed, target)
  return target


def assert_same_run(a: pathlib.Path, b: pathlib.Path) -> None:
  assert records(a) == records(b)
  jax.tree.map(np.testing.assert_array_equal, saved_params(a, 12), saved_params(b, 12))
