"""--help says how to name presets and override fields, and exits 0."""
import os
import subprocess

import pytest

from fedprox_jax import configs
from tests.commands import command
from tests.commands import run_module
from tests.conftest import subprocess_env


@pytest.mark.parametrize('command', ['run', 'sweep'])
def test_help_names_the_presets_and_how_to_override_and_exits_0(command, tmp_path):
  result = run_module('--help', module=f'fedprox_jax.{command}', cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  text = ' '.join(result.stdout.split())
  assert all(name in text for name in configs.names()), text
  assert '--config.algorithm.mu=0' in text and '--workdir' in text and '--dry_run' in text
  assert (command == 'sweep') == all(name in text for name in configs.names(sweep=True))
  assert not result.stderr.strip(), result.stderr[-3000:]
  assert not any(tmp_path.iterdir())  # Nothing written.


def test_help_into_a_closed_pipe_is_not_an_error(tmp_path):
  read_end, write_end = os.pipe()
  os.close(read_end)  # The reader has left, as `| head -1` does once it has its line.
  try:
    result = subprocess.run(command('--helpfull'),
                            cwd=tmp_path,
                            env=subprocess_env(),
                            stdout=write_end,
                            stderr=subprocess.PIPE,
                            text=True,
                            timeout=300)
  finally:
    os.close(write_end)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
