"""A plain (non-editable) install carries every package and finds every algorithm and task."""
import pathlib
import subprocess
import sys

import pytest

from fedprox_jax import algorithms
from fedprox_jax import tasks
from tests.conftest import REPO


@pytest.mark.slow
def test_a_plain_install_has_every_package(tmp_path):
  site = tmp_path / 'site'
  install = subprocess.run([
      sys.executable, '-m', 'pip', 'install', '--quiet', '--no-deps', '--no-build-isolation',
      '--disable-pip-version-check', '--target',
      str(site),
      str(REPO)
  ],
                           capture_output=True,
                           text=True,
                           timeout=600)
  assert install.returncode == 0, install.stderr[-3000:]
  packages = sorted(
      str(p.parent.relative_to(REPO)).replace('/', '.')
      for p in REPO.glob('**/__init__.py')
      if p.parts[len(REPO.parts)] == 'fedprox_jax')
  code = ('import importlib, sys\n'
          f'for name in {packages!r}:\n'
          '  module = importlib.import_module(name)\n'
          f'  assert module.__file__.startswith({str(site)!r}), module.__file__\n'
          'from fedprox_jax import algorithms, tasks\n'
          'import fedprox_jax.configs.sweeps.mnist_algorithms\n'
          'print(sorted(algorithms.ALGORITHMS), sorted(tasks.TASKS))\n')
  # From elsewhere than the repository, with only the installed copy on the path.
  result = subprocess.run([sys.executable, '-c', code],
                          cwd=tmp_path,
                          env={
                              'PYTHONPATH': str(site),
                              'PATH': '/usr/bin:/bin'
                          },
                          capture_output=True,
                          text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  # The installed copy finds what the source tree holds.
  assert result.stdout.split('\n')[0] == f'{sorted(algorithms.ALGORITHMS)} {sorted(tasks.TASKS)}'
  assert {'fedavg', 'fednova', 'fedprox', 'scaffold'} <= set(algorithms.ALGORITHMS)
  assert len(packages) >= 9 and 'fedprox_jax.configs.sweeps' in packages
  assert pathlib.Path(site, 'fedprox_jax', 'algorithms', 'scaffold.py').is_file()
