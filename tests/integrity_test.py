"""Checkpoints are verified when restored: damaged, altered, foreign and legacy ones, and
every part of the server state resumes bit-identical. In-process runs on a small synthetic task."""
import pathlib
import shutil

import numpy as np
import orbax.checkpoint as ocp
import pytest

from fedprox_jax import errors
from fedprox_jax import experiment
from fedprox_jax.experiment import checkpoint_state
from tests.runs import assert_same_run
from tests.runs import copy_run
from tests.runs import make_undisturbed
from tests.runs import records
from tests.runs import small_config


@pytest.fixture(scope='module')
def undisturbed(tmp_path_factory):
  """A whole 12-round run: what every disturbed run must end equal to."""
  return make_undisturbed(tmp_path_factory)


def _alter_values(step_dir: pathlib.Path) -> None:
  """Silent corruption: other parameter values in a well-formed orbax item, digest unchanged."""
  state = ocp.StandardCheckpointer().restore(step_dir / 'state')
  state['server.params.Dense_0.kernel'][0, 0, 0] += 1.0
  shutil.rmtree(step_dir / 'state')
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(step_dir / 'state', state)
  checkpointer.wait_until_finished()


def _flip_every_data_file(step_dir: pathlib.Path) -> None:
  for path in (step_dir / 'state').rglob('*'):
    if path.is_file() and path.parent.name == 'd':
      data = bytearray(path.read_bytes())
      data[len(data) // 2] ^= 0xFF
      path.write_bytes(bytes(data))


def _truncate_state(step_dir: pathlib.Path) -> None:
  for path in (step_dir / 'state').rglob('*'):
    if path.is_file():
      path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])


DAMAGES = {
    'altered values': _alter_values,
    'flipped bytes': _flip_every_data_file,
    'truncated files': _truncate_state,
    'no _METADATA': lambda d: (d / 'state' / '_METADATA').unlink(),
    'no state': lambda d: shutil.rmtree(d / 'state'),
    'no digest': lambda d: shutil.rmtree(d / 'meta'),
    'garbled digest': lambda d: (d / 'meta' / 'metadata').write_text('{"format": 1, "rou'),
}


@pytest.mark.parametrize('damage', list(DAMAGES))
@pytest.mark.slow
def test_a_damaged_newest_checkpoint_is_skipped_and_its_rounds_recomputed(
    undisturbed, tmp_path, damage, caplog):
  run = copy_run(undisturbed, tmp_path)
  DAMAGES[damage](run / 'checkpoints' / '12')
  experiment.train_and_evaluate(small_config(), str(run))
  assert f'checkpoint {run / "checkpoints" / "12"}' in caplog.text
  assert 'Resuming from the older checkpoint of round 8' in caplog.text
  assert (run / 'checkpoints-rejected' / '12').is_dir()  # Kept aside, not deleted.
  assert_same_run(undisturbed, run)


@pytest.mark.slow
def test_with_no_checkpoint_left_the_run_stops_rather_than_write_over_its_records(
    undisturbed, tmp_path, caplog):
  run = copy_run(undisturbed, tmp_path)
  for step in (4, 8, 12):
    _alter_values(run / 'checkpoints' / str(step))
  log = (run / 'metrics.jsonl').read_bytes()
  with pytest.raises(errors.LogError, match='holds records up to round 12, but no checkpoint'):
    experiment.train_and_evaluate(small_config(), str(run))
  assert 'could be verified: starting from round 0' in caplog.text
  assert (run / 'metrics.jsonl').read_bytes() == log
  experiment.train_and_evaluate(small_config(), str(run), overwrite=True)  # The user's choice.
  assert_same_run(undisturbed, run)


@pytest.mark.slow
def test_a_checkpoint_from_before_digests_restores_with_a_warning(undisturbed, tmp_path, caplog):
  run = copy_run(undisturbed, tmp_path)
  # The old layout: one orbax item, `default`, with the models and adaptive mu as nested dicts
  # and no digest (what earlier releases wrote).
  for step in (4, 12):
    shutil.rmtree(run / 'checkpoints' / str(step))
  flat = ocp.StandardCheckpointer().restore(run / 'checkpoints' / '8' / 'state')
  old = {
      'params': {
          'Dense_0': {
              k: flat[f'server.params.Dense_0.{k}'] for k in ('kernel', 'bias')
          }
      },
      **{
          k: flat[f'adaptive.{k}'] for k in ('mu', 'last_loss', 'falling')
      }
  }
  shutil.rmtree(run / 'checkpoints' / '8')
  manager = ocp.CheckpointManager(run / 'checkpoints')
  manager.save(8, args=ocp.args.StandardSave(old))
  manager.close()
  assert (run / 'checkpoints' / '8' / 'default').is_dir()
  experiment.train_and_evaluate(small_config(), str(run))
  assert 'predates checkpoint digests and cannot be verified' in caplog.text
  assert_same_run(undisturbed, run)


@pytest.mark.slow
def test_a_checkpoint_of_a_newer_format_is_refused(undisturbed, tmp_path):
  run = copy_run(undisturbed, tmp_path)
  meta = run / 'checkpoints' / '12' / 'meta' / 'metadata'
  assert '"format": 1' in meta.read_text()
  meta.write_text(meta.read_text().replace('"format": 1', '"format": 99'))
  with pytest.raises(errors.CheckpointError, match='format version 99, newer than'):
    experiment.train_and_evaluate(small_config(), str(run))


def test_the_digest_covers_values_round_and_progress():
  state = {'params': {'w': np.arange(6, dtype=np.float32).reshape(2, 3)}, 'mu': np.ones(1)}
  base = checkpoint_state.digest(3, state, {'real_steps': 5})
  other = {'params': {'w': state['params']['w'].copy()}, 'mu': np.ones(1)}
  assert checkpoint_state.digest(3, other, {'real_steps': 5}) == base
  other['params']['w'][1, 2] = np.nextafter(np.float32(5), np.float32(6))
  assert checkpoint_state.digest(3, other, {'real_steps': 5}) != base
  assert checkpoint_state.digest(4, state, {'real_steps': 5}) != base
  assert checkpoint_state.digest(3, state, {'real_steps': 6}) != base
  reshaped = {'params': {'w': state['params']['w'].reshape(3, 2)}, 'mu': np.ones(1)}
  assert checkpoint_state.digest(3, reshaped, {'real_steps': 5}) != base


@pytest.mark.slow
def test_a_checkpoint_of_another_config_stops_the_run(undisturbed, tmp_path):
  foreign = tmp_path / 'foreign'
  experiment.train_and_evaluate(small_config(seed=1), str(foreign))
  run = copy_run(undisturbed, tmp_path)
  shutil.rmtree(run / 'checkpoints' / '12')
  shutil.copytree(foreign / 'checkpoints' / '12', run / 'checkpoints' / '12')
  log = (run / 'metrics.jsonl').read_bytes()
  with pytest.raises(errors.CheckpointError, match='checkpoints/12 was made by another config'):
    experiment.train_and_evaluate(small_config(), str(run))
  assert (run / 'checkpoints' / '12').is_dir() and not (run / 'checkpoints-rejected').exists()
  assert (run / 'metrics.jsonl').read_bytes() == log


@pytest.mark.slow
def test_oddly_named_checkpoint_directories_are_not_rounds(undisturbed, tmp_path):
  run = copy_run(undisturbed, tmp_path)
  (run / 'checkpoints' / '12').rename(run / 'checkpoints' / '012')
  (run / 'checkpoints' / '²').mkdir()
  experiment.train_and_evaluate(small_config(), str(run))
  assert_same_run(undisturbed, run)


@pytest.mark.slow
def test_checkpoints_that_are_a_file_are_refused_before_anything_is_written(undisturbed, tmp_path):
  run = copy_run(undisturbed, tmp_path)
  shutil.rmtree(run / 'checkpoints')
  (run / 'checkpoints').write_text('hi')
  log = (run / 'metrics.jsonl').read_text()
  with pytest.raises(errors.CheckpointError, match='checkpoints is not a directory'):
    experiment.train_and_evaluate(small_config(), str(run))
  assert (run / 'metrics.jsonl').read_text() == log


@pytest.mark.slow
def test_a_rejected_directory_that_is_a_file_is_named(undisturbed, tmp_path):
  run = copy_run(undisturbed, tmp_path)
  _alter_values(run / 'checkpoints' / '12')
  (run / 'checkpoints-rejected').write_text('in the way')
  with pytest.raises(errors.CheckpointError, match='could not be moved to'):
    experiment.train_and_evaluate(small_config(), str(run))


@pytest.mark.slow
def test_a_malformed_format_field_is_a_damaged_checkpoint(undisturbed, tmp_path, caplog):
  run = copy_run(undisturbed, tmp_path)
  meta = run / 'checkpoints' / '12' / 'meta' / 'metadata'
  meta.write_text(meta.read_text().replace('"format": 1', '"format": "1"'))
  experiment.train_and_evaluate(small_config(), str(run))
  assert "has a malformed format field ('1')" in caplog.text
  assert_same_run(undisturbed, run)


@pytest.mark.parametrize('algorithm, optimizer', [('scaffold', 'adam'), ('fednova', 'momentum')])
def test_every_part_of_the_server_state_resumes_bit_identical(tmp_path, algorithm, optimizer):
  """SCAFFOLD's c and c_i, the server optimizer's moments: a resume from an older checkpoint ends
  exactly as the undisturbed run (records, models, every saved array)."""
  config = small_config(**{
      'algorithm.name': algorithm,
      'server.optimizer': optimizer,
      'stragglers.fraction': 0.5
  })
  whole, run = tmp_path / 'whole', tmp_path / 'run'
  experiment.train_and_evaluate(config, str(whole))
  shutil.copytree(whole, run)
  shutil.rmtree(run / 'checkpoints' / '12')  # As if killed after round 9's record.
  log = run / 'metrics.jsonl'
  log.write_text(''.join(log.read_text().splitlines(keepends=True)[:10]))
  (run / 'summary.json').unlink()
  experiment.train_and_evaluate(config, str(run))
  assert records(run) == records(whole)
  a = ocp.StandardCheckpointer().restore(whole / 'checkpoints' / '12' / 'state')
  b = ocp.StandardCheckpointer().restore(run / 'checkpoints' / '12' / 'state')
  assert a.keys() == b.keys() and any(k.startswith('server.optimizer.') for k in a)
  if algorithm == 'scaffold':
    assert any(k.startswith('client_states.') for k in a)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)
