"""The README's install (an editable install of a clone named fedprox_jax) works from anywhere."""
import pathlib
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO


def _clone(parent: pathlib.Path) -> pathlib.Path:
  """The repository's files as a clone would have them, in PARENT/fedprox_jax."""
  tracked = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'],
                           cwd=REPO,
                           capture_output=True,
                           check=True).stdout.decode().split('\0')
  clone = parent / 'fedprox_jax'
  for name in filter(None, tracked):
    source = REPO / name
    if source.is_file():
      (clone / name).parent.mkdir(parents=True, exist_ok=True)
      shutil.copy2(source, clone / name)
  return clone


@pytest.mark.slow
def test_an_editable_install_runs_a_preset_by_name_from_the_clones_parent(tmp_path):
  clone = _clone(tmp_path)
  venv = tmp_path / 'venv'
  # The machine's packages stay visible (no network needed); the project is installed afresh.
  subprocess.run(
      [sys.executable, '-m', 'venv', '--without-pip', '--system-site-packages',
       str(venv)],
      check=True)
  python = str(venv / 'bin' / 'python')
  install = subprocess.run([
      python, '-m', 'pip', 'install', '--quiet', '--no-deps', '--no-build-isolation',
      '--disable-pip-version-check', '-e',
      str(clone)
  ],
                           capture_output=True,
                           text=True,
                           timeout=600)
  assert install.returncode == 0, install.stderr[-3000:]

  def run(*args):
    return subprocess.run([python, *args],
                          cwd=tmp_path,
                          env={
                              'PATH': '/usr/bin:/bin',
                              'HOME': str(tmp_path)
                          },
                          capture_output=True,
                          text=True,
                          timeout=600)

  # The clone's parent holds a folder named fedprox_jax with no __init__.py: it must not shadow
  # the installed package.
  imported = run(
      '-c', 'import fedprox_jax.configs, fedprox_jax.configs.mnist_fedprox as m\n'
      'print(fedprox_jax.__file__); print(m.get_config().algorithm.name)')
  assert imported.returncode == 0, imported.stderr[-3000:]
  assert imported.stdout.split() == [str(clone / 'fedprox_jax' / '__init__.py'), 'fedprox']
  ran = run('-m', 'fedprox_jax.run', '--config=synthetic', '--workdir=', '--config.num_rounds=2',
            '--config.compute.cpu_devices=1')
  assert ran.returncode == 0, ran.stderr[-3000:]
  assert 'round 2/2' in ran.stderr + ran.stdout, ran.stderr[-3000:]
