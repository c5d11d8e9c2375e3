"""One run over two processes (jax.distributed on CPU, collectives through gloo), started by the
launcher: the same records as one process with two devices (the same lanes), a process killed
mid-run stops the other with one line, and the rerun resumes to the undisturbed records.

Synthetic(1,1) data: nothing to prepare, so both processes start their rounds at once. The runs
share the module's compilation cache (a repeated program is not compiled again). Each test runs
whole programs: all are slow."""
import signal
import subprocess

import pytest

from tests.commands import child_pids
from tests.commands import run_module
from tests.commands import start_module
from tests.commands import stop
from tests.commands import tail
from tests.commands import wait_until
from tests.runs import records

pytestmark = pytest.mark.slow

RUN = [
    '--config=synthetic:1_1', '--config.data.num_clients=40', '--config.clients_per_round=5',
    '--config.client.local_epochs=2', '--config.checkpoint_every=4',
    '--config.eval.dissimilarity=False'
]


@pytest.fixture(scope='module')
def xla_cache(tmp_path_factory):
  return tmp_path_factory.mktemp('xla')


def _flags(cache, workdir, rounds):
  return [
      *RUN, f'--config.num_rounds={rounds}', f'--workdir={workdir}',
      f'--config.compute.compilation_cache_dir={cache}'
  ]


def _launch(cache, workdir, rounds, log):
  return start_module('--processes=2',
                      '--',
                      *_flags(cache, workdir, rounds),
                      '--config.compute.cpu_devices=1',
                      module='fedprox_jax.launch',
                      log=log)


def _one_process(cache, workdir, rounds):
  result = run_module(*_flags(cache, workdir, rounds), '--config.compute.cpu_devices=2')
  assert result.returncode == 0, result.stderr[-3000:]
  return records(workdir)


def _kill_the_second_process(launched, log) -> None:
  """SIGKILL to the launcher's child of process_id 1; fails with what happened if it is gone."""
  follower = child_pids(launched, 'process_id=1')
  if not follower:
    stop(launched)
    pytest.fail(f'the second process is not running (the launcher: exit code '
                f'{launched.returncode}); its log ends:\n{tail(log)}')
  subprocess.run(['kill', f'-{signal.SIGKILL.value}', *follower], check=True)


def _rounds_logged(workdir) -> int:
  try:
    return (workdir / 'metrics.jsonl').read_bytes().count(b'\n')
  except FileNotFoundError:
    return 0


def test_two_processes_equal_one_process_with_two_devices(xla_cache, tmp_path):
  log = tmp_path / 'launch.log'
  launched = _launch(xla_cache, tmp_path / 'two', 12, log)
  try:
    assert launched.wait(timeout=600) == 0, tail(log)
  finally:
    stop(launched)
  err = log.read_text()
  assert 'Results in' in err and err.count('Results in') == 1  # Process 0 alone speaks...
  assert 'libtpu' not in err and 'distributed service' not in err  # ...without JAX's chatter...
  two = records(tmp_path / 'two')
  assert [r['round'] for r in two] == list(range(13))
  assert two == _one_process(xla_cache, tmp_path / 'one', 12)  # ...and writes: bit for bit.
  assert sorted(p.name for p in (tmp_path / 'two' / 'checkpoints').iterdir()) == ['12', '4', '8']


def test_a_killed_process_stops_the_other_and_the_rerun_resumes(xla_cache, tmp_path):
  workdir, log = tmp_path / 'run', tmp_path / 'launch.log'
  launched = _launch(xla_cache, workdir, 300, log)
  try:
    wait_until(lambda: (workdir / 'checkpoints' / '4').is_dir() and _rounds_logged(workdir) >= 6,
               launched, log, 'checkpoint of round 4')
    _kill_the_second_process(launched, log)
    assert launched.wait(timeout=300) == 128 + signal.SIGKILL, tail(log)
  finally:
    stop(launched)
  lines = [line for line in log.read_text().splitlines() if line.startswith('error')]
  # The launcher says which process was killed; what process 0 says of the loss is held back.
  assert lines == [
      'error: process 1 of the run was killed by signal 9 (SIGKILL): rerun the same command to '
      'resume from the last checkpoint'
  ], tail(log)
  done = len(records(workdir))
  assert done < 301  # Stopped before the end...

  rerun = run_module('--processes=2',
                     '--',
                     *_flags(xla_cache, workdir, 300),
                     '--config.compute.cpu_devices=1',
                     module='fedprox_jax.launch')
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert 'Resuming from the checkpoint of round' in rerun.stderr
  # ...and resumed to the records of an undisturbed run.
  assert records(workdir) == _one_process(xla_cache, tmp_path / 'undisturbed', 300)


SWEEP = [
    '--config=synthetic:1_1', '--sweep=mnist_figure', '--sweep.repeats=1',
    '--sweep.max_runs_per_chunk=3', '--config.num_rounds=30', '--config.data.num_clients=40',
    '--config.clients_per_round=5', '--config.client.local_epochs=2',
    '--config.eval.dissimilarity=False', '--config.checkpoint_every=5'
]


def _sweep_rows(workdir):
  rows = (workdir / 'results.csv').read_text().splitlines()
  columns = rows[0].split(',')
  keep = [i for i, c in enumerate(columns) if not c.startswith('time/')]
  return [[row.split(',')[i] for i in keep] for row in rows]


def test_a_sweep_over_two_processes_killed_and_resumed_equals_one_process(xla_cache, tmp_path):
  """Three chunks of three runs: the rerun keeps the finished chunks (the leader tells the other
  process so), resumes the interrupted one, and ends with one process's table."""
  workdir, log = tmp_path / 'sweep', tmp_path / 'launch.log'
  cache = f'--config.compute.compilation_cache_dir={xla_cache}'
  args = [
      '--processes=2', '--module=fedprox_jax.sweep', '--', *SWEEP, cache, '--sweep.cpu_devices=1',
      f'--workdir={workdir}'
  ]
  launched = start_module(*args, module='fedprox_jax.launch', log=log)
  try:
    wait_until((workdir / 'checkpoints' / 'runs3-6' / '10').is_dir, launched, log,
               'checkpoint of round 10 in the second chunk')
    _kill_the_second_process(launched, log)
    assert launched.wait(timeout=300) != 0, tail(log)
  finally:
    stop(launched)
  rerun = run_module(*args, module='fedprox_jax.launch')
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert 'Chunk 1/3 is complete: kept as it is' in rerun.stderr
  one = run_module(*SWEEP,
                   cache,
                   '--sweep.cpu_devices=2',
                   f'--workdir={tmp_path / "one"}',
                   module='fedprox_jax.sweep')
  assert one.returncode == 0, one.stderr[-3000:]
  assert _sweep_rows(workdir) == _sweep_rows(tmp_path / 'one')
  assert len(_sweep_rows(workdir)) == 1 + 9 * 31


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_stops_both_processes_after_the_same_round(xla_cache, tmp_path, signum):
  workdir, log = tmp_path / 'run', tmp_path / 'launch.log'
  launched = _launch(xla_cache, workdir, 2000, log)
  try:
    wait_until((workdir / 'checkpoints' / '4').is_dir, launched, log, 'checkpoint of round 4')
    launched.send_signal(signum)  # The launcher passes it on.
    assert launched.wait(timeout=300) == 128 + signum.value, tail(log)
  finally:
    stop(launched)
  err = log.read_text()
  said = [line for line in err.splitlines() if line.startswith('interrupted after round')]
  assert len(said) == 1 and 'rerun the same command to resume' in said[0], err[-3000:]
  assert not [line for line in err.splitlines() if line.startswith('error')], err[-3000:]
  stopped_after = int(said[0].split()[3].rstrip(';'))
  assert [r['round'] for r in records(workdir)][-1] == stopped_after < 2000
