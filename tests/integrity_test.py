"""What a run restores is verified: checkpoint digests, the metrics log against the checkpoint,
finished runs left alone, one process per workdir. In-process runs on a small synthetic task."""
import json
import logging
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import synthetic
from fedprox_jax import errors
from fedprox_jax import experiment
from fedprox_jax.experiment import checkpoints as checkpoints_lib
from fedprox_jax.experiment import workdir as workdir_lib
from tests.conftest import REPO
from tests.conftest import subprocess_env


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
  return [{
      k: v for k, v in json.loads(line).items() if not k.startswith('time/')
  } for line in lines]


def saved_params(workdir: pathlib.Path, round_index: int):
  """A checkpoint's parameters, read with orbax alone (not with the code under test)."""
  state = ocp.StandardCheckpointer().restore(workdir / 'checkpoints' / str(round_index) / 'state')
  return {k: v for k, v in state.items() if k.startswith('server.params.')}


@pytest.fixture(scope='module')
def undisturbed(tmp_path_factory):
  """A whole 12-round run: what every disturbed run must end equal to."""
  root = tmp_path_factory.mktemp('undisturbed')
  experiment.train_and_evaluate(small_config(), str(root))
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
def test_a_damaged_newest_checkpoint_is_skipped_and_its_rounds_recomputed(
    undisturbed, tmp_path, damage, caplog):
  run = _copy(undisturbed, tmp_path)
  DAMAGES[damage](run / 'checkpoints' / '12')
  experiment.train_and_evaluate(small_config(), str(run))
  assert f'checkpoint {run / "checkpoints" / "12"}' in caplog.text
  assert 'Resuming from the older checkpoint of round 8' in caplog.text
  assert (run / 'checkpoints-rejected' / '12').is_dir()  # Kept aside, not deleted.
  _assert_same_run(undisturbed, run)


def test_with_no_checkpoint_left_the_run_starts_from_round_0(undisturbed, tmp_path, caplog):
  run = _copy(undisturbed, tmp_path)
  for step in (4, 8, 12):
    _alter_values(run / 'checkpoints' / str(step))
  experiment.train_and_evaluate(small_config(), str(run))
  assert 'could be verified: starting from round 0' in caplog.text
  _assert_same_run(undisturbed, run)


def test_a_checkpoint_from_before_digests_restores_with_a_warning(undisturbed, tmp_path, caplog):
  run = _copy(undisturbed, tmp_path)
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
  _assert_same_run(undisturbed, run)


def test_a_checkpoint_of_a_newer_format_is_refused(undisturbed, tmp_path):
  run = _copy(undisturbed, tmp_path)
  meta = run / 'checkpoints' / '12' / 'meta' / 'metadata'
  assert '"format": 1' in meta.read_text()
  meta.write_text(meta.read_text().replace('"format": 1', '"format": 99'))
  with pytest.raises(errors.CheckpointError, match='format version 99, newer than'):
    experiment.train_and_evaluate(small_config(), str(run))


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
  experiment.train_and_evaluate(small_config(num_rounds=16), str(longer))
  experiment.train_and_evaluate(small_config(num_rounds=16), str(run))
  assert records(run) == records(longer)


@pytest.mark.parametrize('cut, rounds', [((3, 6), '3-5'), ((0, 13), '0-12'), ((0, 1), '0')])
def test_a_log_missing_records_before_the_checkpoint_is_refused(undisturbed, tmp_path, cut, rounds):
  run = _copy(undisturbed, tmp_path)
  log = run / 'metrics.jsonl'
  lines = log.read_text().splitlines(keepends=True)
  log.write_text(''.join(lines[:cut[0]] + lines[cut[1]:]))
  before = log.read_text()
  with pytest.raises(errors.LogError,
                     match=f'lacks the records of rounds {rounds}, which come '
                     'before the checkpoint of round 12.*--overwrite'):
    experiment.train_and_evaluate(small_config(num_rounds=16), str(run))
  assert log.read_text() == before  # Refused before anything was written.
  experiment.train_and_evaluate(small_config(num_rounds=16), str(run), overwrite=True)
  assert [r['round'] for r in records(run)] == list(range(17))


def test_a_deleted_log_is_refused(undisturbed, tmp_path):
  run = _copy(undisturbed, tmp_path)
  (run / 'metrics.jsonl').unlink()
  with pytest.raises(errors.LogError, match='lacks the records of rounds 0-12'):
    experiment.train_and_evaluate(small_config(num_rounds=16), str(run))


def test_a_garbled_line_is_refused_by_number(undisturbed, tmp_path):
  run = _copy(undisturbed, tmp_path)
  log = run / 'metrics.jsonl'
  lines = log.read_text().splitlines(keepends=True)
  lines[4] = 'not json\n'
  log.write_text(''.join(lines))
  with pytest.raises(errors.LogError, match='line 5 is not a metrics record'):
    experiment.train_and_evaluate(small_config(num_rounds=16), str(run))


# Finished runs, resumed summaries, round counts.


def test_rerunning_a_finished_run_changes_nothing(undisturbed, tmp_path, caplog):
  run = _copy(undisturbed, tmp_path)
  files = {
      p: (p.read_bytes(), p.stat().st_mtime_ns)
      for p in run.rglob('*')
      if p.is_file() and p.name != workdir_lib.LOCK_NAME
  }
  caplog.set_level(logging.INFO)
  got = experiment.train_and_evaluate(small_config(), str(run))
  assert 'is complete (round 12 of 12): nothing to do' in caplog.text
  assert [r['round'] for r in got] == list(range(13))
  after = {
      p: (p.read_bytes(), p.stat().st_mtime_ns)
      for p in run.rglob('*')
      if p.is_file() and p.name != workdir_lib.LOCK_NAME
  }
  assert after == files


def test_a_finished_run_missing_its_summary_gets_it_back(undisturbed, tmp_path):
  run = _copy(undisturbed, tmp_path)
  (run / 'summary.json').unlink()
  experiment.train_and_evaluate(small_config(), str(run))
  assert json.loads((run / 'summary.json').read_text()) == json.loads(
      (undisturbed / 'summary.json').read_text())


def test_a_resumed_run_summary_covers_all_its_rounds(undisturbed, tmp_path):
  run = tmp_path / 'run'
  experiment.train_and_evaluate(small_config(num_rounds=8), str(run))
  experiment.train_and_evaluate(small_config(), str(run))
  whole = json.loads((undisturbed / 'summary.json').read_text())['program']
  resumed = json.loads((run / 'summary.json').read_text())['program']
  assert resumed['real_steps'] == whole['real_steps'] > 0
  assert resumed['executed_steps'] == whole['executed_steps']
  assert resumed['wall_s'] > 0 and resumed['median_round_s'] > 0


def test_fewer_rounds_than_a_workdir_has_done_are_refused(undisturbed, tmp_path):
  run = _copy(undisturbed, tmp_path)
  config_json = (run / 'config.json').read_text()
  with pytest.raises(errors.ConfigError,
                     match=r'num_rounds = 8 is below the 12 rounds that the run'):
    experiment.train_and_evaluate(small_config(num_rounds=8), str(run))
  assert (run / 'config.json').read_text() == config_json


# One process per workdir.


def test_a_busy_workdir_is_refused_naming_its_holder(tmp_path):
  run = tmp_path / 'run'
  with workdir_lib.WorkdirLock(str(run)):
    with pytest.raises(workdir_lib.WorkdirBusy,
                       match=f'--workdir {run} is in use by another run '
                       f'\\(pid {os.getpid()}\\)'):
      experiment.train_and_evaluate(small_config(), str(run))
    sweep = synthetic_sweep()
    with pytest.raises(workdir_lib.WorkdirBusy, match='is in use by another run'):
      experiment.run_sweep(small_config(), sweep, str(run))
  assert not (run / 'metrics.jsonl').exists()
  experiment.train_and_evaluate(small_config(), str(run))  # Free again once the holder is gone.


def synthetic_sweep():
  from configs.sweeps import synthetic as synthetic_sweeps  # pylint: disable=g-import-not-at-top
  sweep = synthetic_sweeps.get_config('1_1')
  sweep.repeats = 1
  return sweep


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
  run = tmp_path / 'run'
  code = ('import sys, time; from fedprox_jax.experiment.workdir import WorkdirLock\n'
          f'lock = WorkdirLock({str(run)!r}).__enter__(); print("held", flush=True)\n'
          'time.sleep(600)\n')
  holder = subprocess.Popen([sys.executable, '-c', code],
                            cwd=REPO,
                            env=subprocess_env(),
                            stdout=subprocess.PIPE,
                            text=True)
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


# What a careful user's faults found: each stops in one line, or ends as the undisturbed run.


def test_a_checkpoint_of_another_config_is_set_aside(undisturbed, tmp_path, caplog):
  foreign = tmp_path / 'foreign'
  experiment.train_and_evaluate(small_config(seed=1), str(foreign))
  run = _copy(undisturbed, tmp_path)
  shutil.rmtree(run / 'checkpoints' / '12')
  shutil.copytree(foreign / 'checkpoints' / '12', run / 'checkpoints' / '12')
  experiment.train_and_evaluate(small_config(), str(run))
  assert 'checkpoints/12 was made by another config; skipped' in caplog.text
  _assert_same_run(undisturbed, run)


def test_a_run_without_its_config_json_is_refused(undisturbed, tmp_path):
  run = _copy(undisturbed, tmp_path)
  (run / 'config.json').unlink()
  with pytest.raises(errors.ConfigError, match='holds metrics.jsonl but no config.json: restore'):
    experiment.train_and_evaluate(small_config(**{'algorithm.mu': 0.0}), str(run))
  assert not (run / 'config.json').exists()


@pytest.mark.parametrize('content', ['[1, 2]', 'null', '{"algorithm": '])
def test_a_config_json_that_is_not_a_config_is_refused(undisturbed, tmp_path, content):
  run = _copy(undisturbed, tmp_path)
  (run / 'config.json').write_text(content)
  with pytest.raises(errors.ConfigError, match='config.json cannot be read'):
    experiment.train_and_evaluate(small_config(), str(run))


def test_a_sweeps_run_directory_is_not_a_workdir(tmp_path):
  sweep = synthetic_sweep()
  sweep.arms = {'mu1': {'algorithm': {'mu': 1.0}}}
  experiment.run_sweep(small_config(num_rounds=2), sweep, str(tmp_path / 'sweep'))
  with pytest.raises(errors.ConfigError, match='is a run of the sweep in'):
    experiment.train_and_evaluate(small_config(num_rounds=2),
                                  str(tmp_path / 'sweep' / 'runs' / 'mu1-seed0'))


def test_oddly_named_checkpoint_directories_are_not_rounds(undisturbed, tmp_path):
  run = _copy(undisturbed, tmp_path)
  (run / 'checkpoints' / '12').rename(run / 'checkpoints' / '012')
  (run / 'checkpoints' / '²').mkdir()
  experiment.train_and_evaluate(small_config(), str(run))
  _assert_same_run(undisturbed, run)


def test_checkpoints_that_are_a_file_are_refused_before_anything_is_written(undisturbed, tmp_path):
  run = _copy(undisturbed, tmp_path)
  shutil.rmtree(run / 'checkpoints')
  (run / 'checkpoints').write_text('hi')
  log = (run / 'metrics.jsonl').read_text()
  with pytest.raises(errors.CheckpointError, match='checkpoints is not a directory'):
    experiment.train_and_evaluate(small_config(), str(run))
  assert (run / 'metrics.jsonl').read_text() == log


def test_a_rejected_directory_that_is_a_file_is_named(undisturbed, tmp_path):
  run = _copy(undisturbed, tmp_path)
  _alter_values(run / 'checkpoints' / '12')
  (run / 'checkpoints-rejected').write_text('in the way')
  with pytest.raises(errors.CheckpointError, match='could not be moved to'):
    experiment.train_and_evaluate(small_config(), str(run))


def test_a_malformed_format_field_is_a_damaged_checkpoint(undisturbed, tmp_path, caplog):
  run = _copy(undisturbed, tmp_path)
  meta = run / 'checkpoints' / '12' / 'meta' / 'metadata'
  meta.write_text(meta.read_text().replace('"format": 1', '"format": "1"'))
  experiment.train_and_evaluate(small_config(), str(run))
  assert "has a malformed format field ('1')" in caplog.text
  _assert_same_run(undisturbed, run)


def test_a_log_round_beyond_floats_is_a_garbled_line(undisturbed, tmp_path):
  run = _copy(undisturbed, tmp_path)
  with open(run / 'metrics.jsonl', 'a') as f:
    f.write('{"round": 1e999}\n')
  with pytest.raises(errors.LogError, match='line 14 is not a metrics record'):
    experiment.train_and_evaluate(small_config(num_rounds=16), str(run))


def test_overwrite_deletes_only_what_runs_wrote(tmp_path):
  precious = tmp_path / 'thesis.tex'
  precious.write_text('years of work')
  with pytest.raises(errors.ConfigError,
                     match='--overwrite would delete .*thesis.tex, which no '
                     'run wrote'):
    experiment.train_and_evaluate(small_config(num_rounds=2), str(tmp_path), overwrite=True)
  assert precious.read_text() == 'years of work'


def test_extending_a_run_keeps_the_records_of_an_undisturbed_longer_run(tmp_path):
  short, whole = tmp_path / 'short', tmp_path / 'whole'
  experiment.train_and_evaluate(small_config(num_rounds=10, eval_every=3), str(short))
  assert [r['round'] for r in records(short)][-1] == 10  # The last round is always recorded.
  experiment.train_and_evaluate(small_config(num_rounds=12, eval_every=3), str(short))
  experiment.train_and_evaluate(small_config(num_rounds=12, eval_every=3), str(whole))
  assert records(short) == records(whole)  # Round 10's record went with the extension.


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
