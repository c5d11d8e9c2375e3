"""What a run restores is verified: checkpoint digests, the metrics log against the checkpoint,
finished runs left alone, one process per workdir. In-process runs on a small synthetic task."""
import json
import logging
import os
import pathlib
import shutil
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import synthetic
from fedprox_jax import checkpoints as checkpoints_lib
from fedprox_jax import config_checks
from fedprox_jax import sweeps
from fedprox_jax import train
from fedprox_jax import workdir as workdir_lib
from fedprox_jax import writers
from tests.conftest import REPO, subprocess_env


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


def records(workdir: pathlib.Path) -> list[dict]:
  """metrics.jsonl without its wall-clock fields."""
  lines = (workdir / 'metrics.jsonl').read_text().splitlines()
  return [{k: v for k, v in json.loads(l).items() if not k.startswith('time/')} for l in lines]


def saved_params(workdir: pathlib.Path, round_index: int):
  """A checkpoint's parameters, read with orbax alone (not with the code under test)."""
  state = ocp.StandardCheckpointer().restore(workdir / 'checkpoints' / str(round_index) / 'state')
  return state['params']


@pytest.fixture(scope='module')
def undisturbed(tmp_path_factory):
  """A whole 12-round run: what every disturbed run must end equal to."""
  root = tmp_path_factory.mktemp('undisturbed')
  train.train_and_evaluate(small_config(), str(root))
  return root


def _copy(undisturbed: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
  target = tmp_path / 'run'
  shutil.copytree(undisturbed, target)
  return target


def _assert_same_run(a: pathlib.Path, b: pathlib.Path) -> None:
  assert records(a) == records(b)
  jax.tree.map(np.testing.assert_array_equal, saved_params(a, 12), saved_params(b, 12))


def _alter_values(step_dir: pathlib.Path) -> None:
  """Silent corruption: other parameter values in a well-formed orbax item, digest unchanged."""
  state = ocp.StandardCheckpointer().restore(step_dir / 'state')
  state['params']['Dense_0']['kernel'][0, 0, 0] += 1.0
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
def test_a_damaged_newest_checkpoint_is_skipped_and_its_rounds_recomputed(
    undisturbed, tmp_path, damage, caplog):
  run = _copy(undisturbed, tmp_path)
  DAMAGES[damage](run / 'checkpoints' / '12')
  train.train_and_evaluate(small_config(), str(run))
  assert f'checkpoint {run / "checkpoints" / "12"}' in caplog.text
  assert 'Resuming from the older checkpoint of round 8' in caplog.text
  assert (run / 'checkpoints-rejected' / '12').is_dir()  # Kept aside, not deleted.
  _assert_same_run(undisturbed, run)


def test_with_no_checkpoint_left_the_run_starts_from_round_0(undisturbed, tmp_path, caplog):
  run = _copy(undisturbed, tmp_path)
  for step in (4, 8, 12):
    _alter_values(run / 'checkpoints' / str(step))
  train.train_and_evaluate(small_config(), str(run))
  assert 'could be verified: starting from round 0' in caplog.text
  _assert_same_run(undisturbed, run)


def test_a_checkpoint_from_before_digests_restores_with_a_warning(undisturbed, tmp_path, caplog):
  run = _copy(undisturbed, tmp_path)
  # The old layout: one orbax item, `default`, with no digest (what earlier releases wrote).
  for step in (4, 12):
    shutil.rmtree(run / 'checkpoints' / str(step))
  state = ocp.StandardCheckpointer().restore(run / 'checkpoints' / '8' / 'state')
  shutil.rmtree(run / 'checkpoints' / '8')
  manager = ocp.CheckpointManager(run / 'checkpoints')
  manager.save(8, args=ocp.args.StandardSave(state))
  manager.close()
  assert (run / 'checkpoints' / '8' / 'default').is_dir()
  train.train_and_evaluate(small_config(), str(run))
  assert 'predates checkpoint digests and cannot be verified' in caplog.text
  _assert_same_run(undisturbed, run)


def test_a_checkpoint_of_a_newer_format_is_refused(undisturbed, tmp_path):
  run = _copy(undisturbed, tmp_path)
  meta = run / 'checkpoints' / '12' / 'meta' / 'metadata'
  meta.write_text(meta.read_text().replace('"format": 1', '"format": 99'))
  with pytest.raises(checkpoints_lib.CheckpointError, match='format version 99, newer than'):
    train.train_and_evaluate(small_config(), str(run))


def test_the_digest_covers_values_round_and_progress():
  state = {'params': {'w': np.arange(6, dtype=np.float32).reshape(2, 3)}, 'mu': np.ones(1)}
  base = checkpoints_lib.digest(3, state, {'real_steps': 5})
  other = {'params': {'w': state['params']['w'].copy()}, 'mu': np.ones(1)}
  assert checkpoints_lib.digest(3, other, {'real_steps': 5}) == base
  other['params']['w'][1, 2] = np.nextafter(np.float32(5), np.float32(6))
  assert checkpoints_lib.digest(3, other, {'real_steps': 5}) != base
  assert checkpoints_lib.digest(4, state, {'real_steps': 5}) != base
  assert checkpoints_lib.digest(3, state, {'real_steps': 6}) != base
  reshaped = {'params': {'w': state['params']['w'].reshape(3, 2)}, 'mu': np.ones(1)}
  assert checkpoints_lib.digest(3, reshaped, {'real_steps': 5}) != base


# The metrics log against the checkpoint.

def test_a_partial_last_line_is_dropped_and_the_round_written_again(undisturbed, tmp_path):
  run = _copy(undisturbed, tmp_path)
  with open(run / 'metrics.jsonl', 'a') as f:
    f.write('{"round": 13, "train/lo')  # A run killed while writing round 13.
  longer = tmp_path / 'longer'
  train.train_and_evaluate(small_config(num_rounds=16), str(longer))
  train.train_and_evaluate(small_config(num_rounds=16), str(run))
  assert records(run) == records(longer)


@pytest.mark.parametrize('cut, rounds', [((3, 6), '3-5'), ((0, 13), '0-12'), ((0, 1), '0')])
def test_a_log_missing_records_before_the_checkpoint_is_refused(undisturbed, tmp_path, cut,
                                                                  rounds):
  run = _copy(undisturbed, tmp_path)
  log = run / 'metrics.jsonl'
  lines = log.read_text().splitlines(keepends=True)
  log.write_text(''.join(lines[:cut[0]] + lines[cut[1]:]))
  before = log.read_text()
  with pytest.raises(writers.LogError, match=f'lacks the records of rounds {rounds}, which come '
                     'before the checkpoint of round 12.*--overwrite'):
    train.train_and_evaluate(small_config(num_rounds=16), str(run))
  assert log.read_text() == before  # Refused before anything was written.
  train.train_and_evaluate(small_config(num_rounds=16), str(run), overwrite=True)
  assert [r['round'] for r in records(run)] == list(range(17))


def test_a_deleted_log_is_refused(undisturbed, tmp_path):
  run = _copy(undisturbed, tmp_path)
  (run / 'metrics.jsonl').unlink()
  with pytest.raises(writers.LogError, match='lacks the records of rounds 0-12'):
    train.train_and_evaluate(small_config(num_rounds=16), str(run))


def test_a_garbled_line_is_refused_by_number(undisturbed, tmp_path):
  run = _copy(undisturbed, tmp_path)
  log = run / 'metrics.jsonl'
  lines = log.read_text().splitlines(keepends=True)
  lines[4] = 'not json\n'
  log.write_text(''.join(lines))
  with pytest.raises(writers.LogError, match='line 5 is not a metrics record'):
    train.train_and_evaluate(small_config(num_rounds=16), str(run))


# Finished runs, resumed summaries, round counts.

def test_rerunning_a_finished_run_changes_nothing(undisturbed, tmp_path, caplog):
  run = _copy(undisturbed, tmp_path)
  files = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.rglob('*')
           if p.is_file() and p.name != workdir_lib.LOCK_NAME}
  caplog.set_level(logging.INFO)
  got = train.train_and_evaluate(small_config(), str(run))
  assert 'is complete (round 12 of 12): nothing to do' in caplog.text
  assert [r['round'] for r in got] == list(range(13))
  after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.rglob('*')
           if p.is_file() and p.name != workdir_lib.LOCK_NAME}
  assert after == files


def test_a_finished_run_missing_its_summary_gets_it_back(undisturbed, tmp_path):
  run = _copy(undisturbed, tmp_path)
  (run / 'summary.json').unlink()
  train.train_and_evaluate(small_config(), str(run))
  assert json.loads((run / 'summary.json').read_text()) == json.loads(
      (undisturbed / 'summary.json').read_text())


def test_a_resumed_run_summary_covers_all_its_rounds(undisturbed, tmp_path):
  run = tmp_path / 'run'
  train.train_and_evaluate(small_config(num_rounds=8), str(run))
  train.train_and_evaluate(small_config(), str(run))
  whole = json.loads((undisturbed / 'summary.json').read_text())['program']
  resumed = json.loads((run / 'summary.json').read_text())['program']
  assert resumed['real_steps'] == whole['real_steps'] > 0
  assert resumed['executed_steps'] == whole['executed_steps']
  assert resumed['wall_s'] > 0 and resumed['median_round_s'] > 0


def test_fewer_rounds_than_a_workdir_has_done_are_refused(undisturbed, tmp_path):
  run = _copy(undisturbed, tmp_path)
  config_json = (run / 'config.json').read_text()
  with pytest.raises(config_checks.ConfigError,
                     match=r'num_rounds = 8 is below the 12 rounds that the run'):
    train.train_and_evaluate(small_config(num_rounds=8), str(run))
  assert (run / 'config.json').read_text() == config_json


# One process per workdir.

def test_a_busy_workdir_is_refused_naming_its_holder(tmp_path):
  run = tmp_path / 'run'
  with workdir_lib.WorkdirLock(str(run)):
    with pytest.raises(workdir_lib.WorkdirBusy, match=f'--workdir {run} is in use by another run '
                       f'\\(pid {os.getpid()}\\)'):
      train.train_and_evaluate(small_config(), str(run))
    sweep = synthetic_sweep()
    with pytest.raises(workdir_lib.WorkdirBusy, match='is in use by another run'):
      sweeps.run_sweep(small_config(), sweep, str(run))
  assert not (run / 'metrics.jsonl').exists()
  train.train_and_evaluate(small_config(), str(run))  # Free again once the holder is gone.


def synthetic_sweep():
  from configs.sweeps import synthetic as synthetic_sweeps  # pylint: disable=g-import-not-at-top
  sweep = synthetic_sweeps.get_config('1_1')
  sweep.repeats = 1
  return sweep


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
  run = tmp_path / 'run'
  code = ('import sys, time; from fedprox_jax.workdir import WorkdirLock\n'
          f'lock = WorkdirLock({str(run)!r}).__enter__(); print("held", flush=True)\n'
          'time.sleep(600)\n')
  holder = subprocess.Popen([sys.executable, '-c', code], cwd=REPO, env=subprocess_env(),
                            stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == 'held'
    with pytest.raises(workdir_lib.WorkdirBusy, match=f'pid {holder.pid}'):
      with workdir_lib.WorkdirLock(str(run)):
        pass
  finally:
    holder.kill()
    holder.wait()
  with workdir_lib.WorkdirLock(str(run)):  # The kernel released it with the process.
    assert (run / workdir_lib.LOCK_NAME).read_text() == f'{os.getpid()}\n'
