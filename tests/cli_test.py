"""The real command line on shrunken configs (MNIST read offline from ../shared/mnist where MNIST
is what is tested), and the command lines' shared pieces in process."""
import json
import shutil
import signal
import subprocess
import sys
import time

import pytest

from fedprox_jax import cli
from fedprox_jax import command_flags
from tests.commands import SYNTHETIC_SMALL
from tests.commands import command
from tests.commands import mnist_data_flags
from tests.commands import run_module
from tests.commands import stop
from tests.conftest import REPO
from tests.conftest import mnist_manual_dir
from tests.conftest import subprocess_env

SMALL = [
    '--config.num_rounds=2', '--config.data.num_clients=100', '--config.clients_per_round=5',
    '--config.client.local_epochs=2'
]


def test_a_default_workdir_is_made_under_runs_and_named_by_the_config(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert cli.choose_workdir('', 'configs/synthetic.py:1_1') is None  # --workdir=: nothing saved.
  assert cli.choose_workdir('somewhere', 'x.py') == 'somewhere'
  unclaimed = cli.choose_workdir(None, 'configs/synthetic.py:1_1', claim=False)
  assert unclaimed.startswith('runs/synthetic-1_1-') and not (tmp_path / 'runs').exists()
  claimed = cli.choose_workdir(None, 'configs/synthetic.py:1_1')
  assert (tmp_path / claimed).is_dir() and claimed.startswith('runs/synthetic-1_1-')
  assert cli.choose_workdir(None, 'configs/synthetic.py:1_1') != claimed  # Each run its own.


def test_a_stray_word_on_the_command_line_is_refused():
  command_flags.check_no_arguments(['run'])
  with pytest.raises(SystemExit, match="unexpected argument 'false': give every flag as"):
    command_flags.check_no_arguments(['run', 'false'])


@pytest.mark.slow
def test_cli_writes_config_metrics_and_summary(mnist_env, tmp_path):
  env, root = mnist_env
  workdir = tmp_path / 'run'
  result = run_module('--config=configs/mnist_fedprox.py',
                      f'--workdir={workdir}',
                      *SMALL,
                      *mnist_data_flags(root),
                      env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Partition: clients 100' in result.stderr
  assert 'ETA' in result.stderr
  config = json.loads((workdir / 'config.json').read_text())
  assert config['num_rounds'] == 2 and config['algorithm']['mu'] == 1.0
  records = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert [r['round'] for r in records] == [0, 1, 2]
  assert 0.0 < records[-1]['test/accuracy'] <= 1.0
  assert records[-1]['train/loss'] != records[0]['train/loss']  # The model was trained.
  summary = json.loads((workdir / 'summary.json').read_text())
  assert summary['final/round'] == 2 and summary['data']['clients'] == 100

  # A second run reads the cached partition and never imports TensorFlow.
  code = ('import sys; from fedprox_jax import experiment\n'
          'from fedprox_jax.configs import mnist_fedprox\n'
          'c = mnist_fedprox.get_config(); c.num_rounds = 1; c.data.num_clients = 100\n'
          f'c.clients_per_round = 5; c.data.cache_dir = {str(root / "cache")!r}\n'
          'c.data.manual_dir = "/nonexistent"\n'
          'experiment.train_and_evaluate(c)\n'
          'assert "tensorflow" not in sys.modules, "TensorFlow was imported"\n')
  second = subprocess.run([sys.executable, '-c', code],
                          cwd=REPO,
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=600)
  assert second.returncode == 0, second.stderr[-3000:]


@pytest.mark.slow
def test_cli_invalid_config_fails_before_compute(tmp_path):
  result = run_module('--config=configs/mnist_fedprox.py', '--config.algorithm.mu=-1',
                      f'--workdir={tmp_path / "run"}')
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1] == 'error: config.algorithm.mu = -1.0 must be >= 0'


@pytest.mark.slow
@pytest.mark.parametrize('damage, message', [('missing', 'is missing'), ('corrupt', 'is corrupt')])
def test_cli_bad_mnist_files_say_what_to_do(mnist_env, tmp_path, damage, message):
  env, _ = mnist_env
  if not mnist_manual_dir():
    pytest.skip('needs the MNIST files on disk (outside CI only; under CI it fails instead)')
  manual = tmp_path / 'manual'
  shutil.copytree(mnist_manual_dir(), manual)
  victim = manual / 't10k-labels-idx1-ubyte.gz'
  victim.chmod(0o644)
  if damage == 'missing':
    victim.unlink()
  else:
    victim.write_bytes(victim.read_bytes()[:-10] + b'0123456789')
  result = run_module('--config=configs/mnist_fedprox.py',
                      *SMALL,
                      *mnist_data_flags(tmp_path, manual_dir=manual),
                      env=env)
  assert result.returncode != 0
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('error: MNIST file') and message in last, last
  assert 'Traceback' not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize('delay', [0.3, 1.0])
def test_ctrl_c_while_the_libraries_load_stops_the_run(tmp_path, delay):
  """A stop asked for before the run starts is never lost (a library's callback once swallowed
  it, and the run went on to exit 0)."""
  proc = subprocess.Popen(command(*SYNTHETIC_SMALL, '--config.num_rounds=2000',
                                  f'--workdir={tmp_path / "run"}'),
                          cwd=REPO,
                          env=subprocess_env(),
                          stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE,
                          text=True)
  time.sleep(delay)
  proc.send_signal(signal.SIGINT)
  try:
    _, err = proc.communicate(timeout=300)
  finally:
    stop(proc)
  assert proc.returncode == 130, err[-3000:]
  assert 'Traceback' not in err and 'interrupted' in err.strip().splitlines()[-1]
