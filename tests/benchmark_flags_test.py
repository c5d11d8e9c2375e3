"""The benchmark's child processes get every flag of the benchmark as the parent has it: a flag
added to fedprox_jax/benchmark/settings.py reaches them with no other change, and no module of the
benchmark defines flags elsewhere (where they would not be forwarded).

Each check runs in a fresh interpreter: the benchmark's flags (--processes, --sweep) share names
with the launcher's and the sweep command's, which other tests import, and absl keeps one flag of
a name per process.
"""
import copy
import importlib
import pkgutil
import subprocess
import sys

from absl import flags

MEASUREMENT, CACHE = 'single:full', '/tmp/benchmark-cache'


def _in_a_fresh_process(check: str) -> None:
  # Imported here: the checks' own process needs neither conftest nor JAX.
  from tests.conftest import REPO  # pylint: disable=g-import-not-at-top
  from tests.conftest import subprocess_env  # pylint: disable=g-import-not-at-top
  result = subprocess.run(
      [sys.executable, '-c', f'from tests import benchmark_flags_test as t; t.{check}()'],
      cwd=REPO,
      env=subprocess_env(),
      capture_output=True,
      text=True,
      timeout=300,
      check=False)
  assert result.returncode == 0, result.stderr[-3000:]


def _fresh_flags() -> flags.FlagValues:
  """The process's flags, as yet unparsed, in a copy of their own."""
  copied = copy.deepcopy(flags.FLAGS)
  copied.unparse_flags()
  return copied


def _changed(flag) -> object:
  """A value of `flag` other than its default."""
  if isinstance(flag, flags.BooleanFlag):
    return not flag.default
  if isinstance(flag, flags.EnumFlag):
    return next(v for v in flag.parser.enum_values if v != flag.default)
  if isinstance(flag, flags.MultiFlag) or isinstance(flag.default, list):
    return ['7', '8']
  if isinstance(flag.default, (int, float)):
    return flag.default + 3
  if flag.default is None or isinstance(flag.default, str):
    return f'{flag.default or ""}changed'
  raise AssertionError(f'the benchmark flag --{flag.name} is a {flag.flag_type()}: give '
                       '_changed a value of it')


def check_a_child_gets_every_flag_as_the_parent_has_it() -> None:
  from fedprox_jax.benchmark import settings  # pylint: disable=g-import-not-at-top
  parent = _fresh_flags()
  parent(['benchmark'])
  for flag in parent.get_flags_for_module(settings.__name__):
    setattr(parent, flag.name, _changed(flag))
  child = _fresh_flags()
  child(['benchmark', *settings.child_flags(MEASUREMENT, CACHE, parent)])
  own = {settings.CHILD.name: MEASUREMENT, settings.CACHE.name: CACHE}
  child_flags = child.get_flags_for_module(settings.__name__)
  assert len(child_flags) > len(own)
  for flag in child_flags:
    want = own.get(flag.name, parent[flag.name].value)
    assert want != flag.default, f'--{flag.name}: the check left it at its default'
    assert flag.value == want, f'--{flag.name} reached the child as {flag.value!r}, not {want!r}'


def check_a_flag_added_to_the_benchmark_reaches_the_child() -> None:
  from fedprox_jax.benchmark import settings  # pylint: disable=g-import-not-at-top
  parent = _fresh_flags()
  flags.DEFINE_integer('added_later',
                       1,
                       'A flag the benchmark gains.',
                       flag_values=parent,
                       module_name=settings.__name__)
  parent(['benchmark', '--added_later=5'])
  assert '--added_later=5' in settings.child_flags(MEASUREMENT, CACHE, parent)


def check_the_benchmark_defines_flags_in_settings_only() -> None:
  """A flag defined elsewhere in the package would be missed by child_flags."""
  from fedprox_jax import benchmark  # pylint: disable=g-import-not-at-top
  for module in pkgutil.iter_modules(benchmark.__path__, f'{benchmark.__name__}.'):
    importlib.import_module(module.name)
  defined = flags.FLAGS.flags_by_module_dict()
  elsewhere = {
      name: [f.name for f in defined[name]]
      for name in defined
      if name.startswith(f'{benchmark.__name__}.') and name != f'{benchmark.__name__}.settings'
  }
  assert f'{benchmark.__name__}.__main__' in sys.modules  # The command's own flags looked at too.
  assert not elsewhere, f'define these in fedprox_jax/benchmark/settings.py: {elsewhere}'


def check_a_child_process_is_started_with_child_flags() -> None:
  main = importlib.import_module('fedprox_jax.benchmark.__main__')
  asked, started = [], []
  main.settings.child_flags = lambda *args: asked.append(args) or ['--forwarded']

  def run(command, **kwargs):
    del kwargs
    started.append(command)
    return subprocess.CompletedProcess(command, 0, stdout='{"measured": 1}\n', stderr='')

  main.subprocess.run = run  # This process's own: it ends with the check.
  assert main._child(MEASUREMENT, CACHE) == {'measured': 1}  # pylint: disable=protected-access
  assert asked == [(MEASUREMENT, CACHE)]
  assert started == [[sys.executable, '-m', 'fedprox_jax.benchmark', '--forwarded']]


def test_a_child_gets_every_flag_as_the_parent_has_it():
  _in_a_fresh_process('check_a_child_gets_every_flag_as_the_parent_has_it')


def test_a_flag_added_to_the_benchmark_reaches_the_child():
  _in_a_fresh_process('check_a_flag_added_to_the_benchmark_reaches_the_child')


def test_the_benchmark_defines_flags_in_settings_only():
  _in_a_fresh_process('check_the_benchmark_defines_flags_in_settings_only')


def test_a_child_process_is_started_with_child_flags():
  _in_a_fresh_process('check_a_child_process_is_started_with_child_flags')
