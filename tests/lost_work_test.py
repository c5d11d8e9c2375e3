"""Nothing lost, nothing misreported: two starts on one new workdir, default workdirs claimed in
the same second, checkpoints of another config or from an older release, checkpoints that cannot
be read right now, orbax declining a save, malformed progress, stale temporary files, and a
refused sweep that must write nothing. In-process runs on a small synthetic task."""
import errno
import json
import pathlib
import shutil
import subprocess
import time

import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from fedprox_jax import cli
from fedprox_jax import errors
from fedprox_jax import experiment
from fedprox_jax import files
from fedprox_jax.experiment import checkpoint_state
from fedprox_jax.experiment import workdir as workdir_lib
from fedprox_jax.tasks import cache
from tests.runs import assert_same_run
from tests.runs import copy_run
from tests.runs import make_undisturbed
from tests.runs import records
from tests.runs import small_config


@pytest.fixture(scope='module')
def undisturbed(tmp_path_factory):
  return make_undisturbed(tmp_path_factory)


@pytest.mark.slow
def test_a_start_refused_on_a_new_workdir_leaves_the_winners_directory(tmp_path, monkeypatch):
  """The other process makes and locks the workdir between this one's look and its mkdir: this
  one is refused, and must not remove what the other made."""
  workdir = tmp_path / 'new'
  real_mkdir = pathlib.Path.mkdir
  other = {}

  def mkdir_after_the_other_process(self, *args, **kwargs):
    if self == workdir and not other:
      other['lock'] = None
      other['lock'] = workdir_lib.WorkdirLock(str(workdir)).__enter__()
    return real_mkdir(self, *args, **kwargs)

  monkeypatch.setattr(pathlib.Path, 'mkdir', mkdir_after_the_other_process)
  with pytest.raises(workdir_lib.WorkdirBusy, match='is in use by another run'):
    experiment.train_and_evaluate(small_config(), str(workdir))
  assert other['lock'] is not None
  assert (workdir / '.lock').is_file()  # The winner's directory and lock file are still there.
  other['lock'].__exit__(None, None, None)


def test_default_workdirs_chosen_in_the_same_second_differ(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr(time, 'strftime', lambda *_: '20261203-120000')
  chosen = [cli.choose_workdir(None, 'configs/mnist_fedprox.py') for _ in range(3)]
  assert chosen == [
      'runs/mnist_fedprox-20261203-120000', 'runs/mnist_fedprox-20261203-120000-2',
      'runs/mnist_fedprox-20261203-120000-3'
  ]
  assert all((tmp_path / c).is_dir() for c in chosen)  # Claimed: no other process can take them.
  # A process that follows another's lead (process_id > 0) claims nothing.
  follower = cli.choose_workdir(None, 'configs/mnist_fedprox.py', claim=False)
  assert follower == chosen[0]


def test_adding_a_config_field_leaves_fingerprints_as_they_were(monkeypatch):
  config = small_config()
  before = checkpoint_state.fingerprint([config])
  grown = ml_collections.ConfigDict(config.to_dict())
  grown.algorithm.new_knob = 0.5
  monkeypatch.setitem(workdir_lib.ADDED_FIELDS, 'algorithm.new_knob', 0.5)
  assert checkpoint_state.fingerprint([grown]) == before
  grown.algorithm.new_knob = 0.7  # A value earlier releases never ran: another config.
  assert checkpoint_state.fingerprint([grown]) != before


@pytest.mark.slow
def test_a_run_of_an_earlier_release_resumes_after_a_field_is_added(undisturbed, tmp_path,
                                                                    monkeypatch):
  run = copy_run(undisturbed, tmp_path)
  monkeypatch.setitem(workdir_lib.ADDED_FIELDS, 'algorithm.new_knob', 0.5)
  upgraded = small_config(num_rounds=16)
  upgraded.algorithm.new_knob = 0.5
  experiment.train_and_evaluate(upgraded, str(run))
  assert not (run / 'checkpoints-rejected').exists()
  assert records(run)[:len(records(undisturbed))] == records(undisturbed)  # Extended, not redone.
  assert [r['round'] for r in records(run)][-1] == 16


@pytest.mark.slow
def test_checkpoints_of_the_release_before_the_stable_fingerprint_resume(undisturbed, tmp_path):
  """This release's own earlier checkpoints hashed every field: they are still its own."""
  run = copy_run(undisturbed, tmp_path)
  config = small_config()
  every_field = checkpoint_state.earlier_fingerprints([config])[-1]
  assert every_field != checkpoint_state.fingerprint([config])
  meta_path = run / 'checkpoints' / '12' / 'meta' / 'metadata'
  meta = json.loads(meta_path.read_text())
  state = ocp.StandardCheckpointer().restore(run / 'checkpoints' / '12' / 'state')
  meta['config'] = every_field
  meta['sha256'] = checkpoint_state.digest(12, state, meta['progress'], every_field)
  meta_path.write_text(json.dumps(meta))
  experiment.train_and_evaluate(small_config(num_rounds=13), str(run))
  assert not (run / 'checkpoints-rejected').exists()


@pytest.mark.slow
def test_a_hand_edited_config_json_stops_instead_of_starting_over(undisturbed, tmp_path):
  run = copy_run(undisturbed, tmp_path)
  edited = small_config(**{'algorithm.mu': 0.5})
  (run / 'config.json').write_text(edited.to_json_best_effort(indent=2, sort_keys=True) + '\n')
  before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
  with pytest.raises(errors.CheckpointError, match='made by another config'):
    experiment.train_and_evaluate(edited, str(run))
  assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
  assert sorted(p.name for p in (run / 'checkpoints').iterdir()) == ['12', '4', '8']


@pytest.mark.parametrize(
    'error',
    [
        PermissionError(errno.EACCES, 'Permission denied'),
        OSError(errno.EIO, 'Input/output error'),
        OSError(errno.EMFILE, 'Too many open files'),
        MemoryError(),
        ValueError(
            "Error opening file: [os_error_code=5] Input/output error"),  # tensorstore's way.
    ],
    ids=['EACCES', 'EIO', 'EMFILE', 'MemoryError', 'tensorstore-EIO'])
@pytest.mark.slow
def test_a_checkpoint_that_cannot_be_read_now_stops_the_run_and_stays(undisturbed, tmp_path,
                                                                      monkeypatch, error):
  run = copy_run(undisturbed, tmp_path)
  log = (run / 'metrics.jsonl').read_bytes()

  def failing_restore(*args, **kwargs):
    raise error

  monkeypatch.setattr(ocp.StandardCheckpointer, 'restore', failing_restore)
  with pytest.raises(errors.CheckpointError, match='checkpoints/12 cannot be read now'):
    experiment.train_and_evaluate(small_config(num_rounds=16), str(run))
  assert sorted(p.name for p in (run / 'checkpoints').iterdir()) == ['12', '4', '8']
  assert not (run / 'checkpoints-rejected').exists()
  assert (run / 'metrics.jsonl').read_bytes() == log
  monkeypatch.undo()
  experiment.train_and_evaluate(small_config(), str(run))  # Readable again: all is there.
  assert_same_run(undisturbed, run)


@pytest.mark.slow
def test_a_digest_valid_checkpoint_with_an_empty_progress_is_damaged(undisturbed, tmp_path, caplog):
  run = copy_run(undisturbed, tmp_path)
  meta_path = run / 'checkpoints' / '12' / 'meta' / 'metadata'
  meta = json.loads(meta_path.read_text())
  state = ocp.StandardCheckpointer().restore(run / 'checkpoints' / '12' / 'state')
  meta['progress'] = {}
  meta['sha256'] = checkpoint_state.digest(12, state, {}, meta['config'])
  meta_path.write_text(json.dumps(meta))
  (run / 'summary.json').unlink()
  experiment.train_and_evaluate(small_config(), str(run))
  assert 'checkpoints/12 has a malformed progress record; skipped' in caplog.text
  assert_same_run(undisturbed, run)


@pytest.mark.slow
def test_a_save_that_orbax_declines_is_an_error(tmp_path, monkeypatch):
  monkeypatch.setattr(ocp.CheckpointManager, 'save', lambda *args, **kwargs: False)
  with pytest.raises(errors.CheckpointError, match='checkpoint of round 4 was not written'):
    experiment.train_and_evaluate(small_config(), str(tmp_path / 'run'))


def _dead_pid() -> int:
  process = subprocess.Popen(['true'])
  process.wait()
  return process.pid


@pytest.mark.slow
def test_temporary_files_of_killed_writers_are_removed(tmp_path):
  target = tmp_path / 'results.csv'
  dead = tmp_path / f'.results.csv.{_dead_pid()}.tmp'
  alive = tmp_path / f'.results.csv.{__import__("os").getppid()}.tmp'  # A writer still at work.
  other = tmp_path / f'.summary.json.{_dead_pid()}.tmp'  # Another file's: not this writer's.
  for path in (dead, alive, other):
    path.write_text('half a file')
  files.write_atomically(target, 'run,round\n')
  assert not dead.exists() and alive.exists() and other.exists()
  assert target.read_text() == 'run,round\n'


@pytest.mark.slow
def test_a_half_written_partition_cache_of_a_killed_build_is_removed(tmp_path):
  data = ml_collections.ConfigDict({'name': 'mnist', 'cache_dir': str(tmp_path)})
  build = lambda: {'train_y': np.arange(6, dtype=np.int32)}
  cache.load_or_build(data, 'KEY', build, lambda arrays: None, fix='')
  assert (tmp_path / 'mnist-KEY.npz').is_file()
  stale = tmp_path / f'.mnist-KEY.npz.{_dead_pid()}.tmp'
  stale.write_bytes(b'PK\x03\x04 half')
  arrays = cache.load_or_build(data, 'KEY', build, lambda arrays: None, fix='')  # A cache hit.
  assert not stale.exists()
  np.testing.assert_array_equal(arrays['train_y'], np.arange(6))


def _small_sweep() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      'repeats': 1,
      'arms': {
          'a': {
              'algorithm': {
                  'mu': 0.0
              }
          },
          'b': {
              'algorithm': {
                  'mu': 1.0
              }
          }
      }
  })


@pytest.mark.slow
def test_a_refused_sweep_writes_nothing(tmp_path):
  sweep_dir = tmp_path / 'sweep'
  experiment.run_sweep(small_config(num_rounds=4), _small_sweep(), str(sweep_dir))
  shutil.rmtree(sweep_dir / 'runs' / 'a-seed0')
  with pytest.raises(errors.LogError, match='lacks the records'):
    experiment.run_sweep(small_config(num_rounds=4), _small_sweep(), str(sweep_dir))
  assert not (sweep_dir / 'runs' / 'a-seed0').exists()
