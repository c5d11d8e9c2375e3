"""Faults during a run, through the real command line: kills at random moments, Ctrl-C, a full
disk, damaged caches. A run either ends exactly as an undisturbed one or stops in one line."""
import random
import re
import signal

import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.commands import run_code
from tests.commands import run_module
from tests.commands import start_module
from tests.commands import wait_until
from tests.runs import records

pytestmark = pytest.mark.slow  # Every test runs the command line, most of them several times.

# Synthetic(1,1) on 12 devices: no data to download, a round in milliseconds.
SMALL = [
    '--config=configs/synthetic.py:1_1', '--config.data.num_clients=12',
    '--config.clients_per_round=4', '--config.client.local_epochs=1',
    '--config.eval.dissimilarity=False', '--config.compute.cpu_devices=2'
]

# A full disk: the command runs with a file size limit, past which writes fail with EFBIG (and
# SIGXFSZ, which would kill the process, is ignored).
_LIMITED = ('import resource, runpy, signal, sys\n'
            'signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n'
            'limit = int(sys.argv.pop(1))\n'
            'resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))\n'
            'runpy.run_module("fedprox_jax.run", run_name="__main__", alter_sys=True)\n')


def _run_under_file_limit(*args, limit_file_size=None):
  """The command line, with writes past `limit_file_size` bytes failing (a full disk) if given."""
  if limit_file_size is None:
    return run_module(*args)
  return run_code(_LIMITED, str(limit_file_size), *args)


def _logged_rounds(workdir) -> int:
  try:
    return (workdir / 'metrics.jsonl').read_bytes().count(b'\n')
  except FileNotFoundError:
    return 0


def _wait_for_rounds(proc, workdir, rounds: int, log) -> None:
  wait_until(lambda: _logged_rounds(workdir) >= rounds, proc, log, f'{rounds} records logged')


def _final_params(workdir, round_index):
  path = workdir / 'checkpoints' / str(round_index) / 'state'
  state = ocp.StandardCheckpointer().restore(path)
  return {k: state[f'server.params.Dense_0.{k}'] for k in ('kernel', 'bias')}


def _last_line(result) -> str:
  return result.stderr.strip().splitlines()[-1]


def test_random_kills_a_damaged_checkpoint_and_a_torn_log_still_end_bit_identical(tmp_path):
  rng = random.Random(20261125)
  flags = [
      *SMALL, '--config.num_rounds=1500', '--config.checkpoint_every=100',
      '--config.checkpoint_keep=3'
  ]
  whole = tmp_path / 'whole'
  assert _run_under_file_limit(*flags, f'--workdir={whole}').returncode == 0

  run = tmp_path / 'run'
  progress = 0
  for _ in range(2):  # Killed twice at random rounds, each time resumed.
    proc = start_module(*flags, f'--workdir={run}', log=tmp_path / 'killed.log')
    progress = rng.randint(progress + 150, progress + 600)
    _wait_for_rounds(proc, run, progress, tmp_path / 'killed.log')
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
  # Then the newest checkpoint is damaged and the log's last line torn, as by a crash mid-write.
  newest = max(int(p.name) for p in (run / 'checkpoints').iterdir() if p.name.isdigit())
  for path in (run / 'checkpoints' / str(newest) / 'state').rglob('*'):
    if path.is_file():
      path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 3])
  log = run / 'metrics.jsonl'
  log.write_bytes(log.read_bytes()[:-25])

  result = _run_under_file_limit(*flags, f'--workdir={run}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'Resuming from the older checkpoint of round {newest - 100}' in result.stderr
  assert 'dropped a partial last line' in result.stderr
  assert records(run) == records(whole)  # Every record once, bit for bit.
  for name in ('kernel', 'bias'):
    np.testing.assert_array_equal(_final_params(run, 1500)[name], _final_params(whole, 1500)[name])


def test_ctrl_c_says_where_the_run_stands_and_the_rerun_resumes(tmp_path):
  flags = [*SMALL, '--config.num_rounds=1500', '--config.checkpoint_every=50']
  run = tmp_path / 'run'
  proc = start_module(*flags, f'--workdir={run}', log=tmp_path / 'log')
  _wait_for_rounds(proc, run, 120, tmp_path / 'log')
  proc.send_signal(signal.SIGINT)
  assert proc.wait(timeout=60) == 130
  stderr = (tmp_path / 'log').read_text()
  assert 'Traceback' not in stderr
  last = stderr.strip().splitlines()[-1]
  match = re.fullmatch(
      r'interrupted after round (\d+); rerun the same command to resume '
      r'\(from the checkpoint of round (\d+)\)', last)
  assert match, last
  done, saved = map(int, match.groups())
  # Round 119 had its record when the signal came; it may not have finished all its work.
  assert saved == done // 50 * 50 and done >= 118
  result = _run_under_file_limit(*flags, f'--workdir={run}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'Resuming from the checkpoint of round {saved}' in result.stderr
  assert [r['round'] for r in records(run)] == list(range(1501))


def test_a_full_disk_stops_in_one_line_and_the_rerun_resumes(tmp_path):
  # Checkpoints of a 2000-feature model (80 kB of parameters) hit a 40 kB file size limit long
  # before metrics.jsonl does.
  flags = [
      *SMALL, '--config.data.dim=2000', '--config.checkpoint_every=5',
      '--config.compute.compilation_cache_dir='
  ]
  first = _run_under_file_limit(*flags, '--config.num_rounds=10', f'--workdir={tmp_path}')
  assert first.returncode == 0, first.stderr[-3000:]
  full = _run_under_file_limit(*flags,
                               '--config.num_rounds=20',
                               f'--workdir={tmp_path}',
                               limit_file_size=40_000)
  assert full.returncode == 1 and 'Traceback' not in full.stderr
  assert _last_line(full) == (
      f'error: the checkpoint of round 15 could not be written to {tmp_path / "checkpoints"} '
      '(File too large): free disk space or fix the directory, then rerun the same command to '
      'resume from the last checkpoint (round 10)')
  assert sorted(
      p.name for p in (tmp_path / 'checkpoints').iterdir() if p.name.isdigit()) == ['10', '5']
  again = _run_under_file_limit(*flags, '--config.num_rounds=20', f'--workdir={tmp_path}')
  assert again.returncode == 0, again.stderr[-3000:]
  assert 'Resuming from the checkpoint of round 10' in again.stderr
  assert [r['round'] for r in records(tmp_path)] == list(range(21))


def test_a_full_disk_under_the_metrics_log_names_it(tmp_path):
  flags = [
      *SMALL, '--config.num_rounds=40', '--config.checkpoint_every=1000',
      '--config.compute.compilation_cache_dir='
  ]
  full = _run_under_file_limit(*flags, f'--workdir={tmp_path}', limit_file_size=3_000)
  assert full.returncode == 1 and 'Traceback' not in full.stderr
  assert _last_line(full) == (
      f'error: {tmp_path / "metrics.jsonl"} could not be written (File too large): free disk '
      'space or fix the directory, then rerun the same command to resume')
  again = _run_under_file_limit(*flags, f'--workdir={tmp_path}')
  assert again.returncode == 0, again.stderr[-3000:]
  assert [r['round'] for r in records(tmp_path)] == list(range(41))


def test_sigterm_stops_like_ctrl_c(tmp_path):
  run = tmp_path / 'run'
  proc = start_module(*SMALL,
                      '--config.num_rounds=1500',
                      '--config.checkpoint_every=50',
                      f'--workdir={run}',
                      log=tmp_path / 'log')
  _wait_for_rounds(proc, run, 60, tmp_path / 'log')
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=60) == 143  # 128 + SIGTERM, as for a process killed by it.
  last = (tmp_path / 'log').read_text().strip().splitlines()[-1]
  assert last.startswith('interrupted after round ') and 'rerun the same command' in last, last


def test_a_disk_full_from_the_start_is_one_line(tmp_path):
  full = _run_under_file_limit(*SMALL,
                               '--config.num_rounds=3',
                               f'--workdir={tmp_path / "run"}',
                               limit_file_size=0)
  assert full.returncode == 1 and 'Traceback' not in full.stderr
  assert _last_line(full).startswith(f'error: --workdir {tmp_path / "run"} cannot be written')
