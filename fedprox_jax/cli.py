"""What the command lines share: reading config flags and turning known failures into one line."""
import importlib.util
import os
import pathlib
import re
import sys
import time
import traceback

from absl import flags
from absl import logging

from fedprox_jax import config_fields
from fedprox_jax import configs as presets
from fedprox_jax import errors
from fedprox_jax import quiet
from fedprox_jax import signals
from fedprox_jax.experiment import workdir as workdir_lib


def _one_line(e: BaseException) -> str:
  text = ' '.join(str(e).replace('\\n', ' ').replace("\\'", "'").split())
  return text[1:-1] if text[:1] == text[-1:] == "'" else text  # A KeyError's repr quotes.


def _load_config_file(spec: str):
  """The config of a config_flags spec ('path' or 'path:argument'), loaded as config_flags does."""
  path, _, argument = spec.partition(':')
  module_spec = importlib.util.spec_from_file_location('config_file', path)
  if module_spec is None:
    raise ValueError(f'{path} is not a Python file')
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(argument) if argument else module.get_config()


def _config_file_problem(e: BaseException, spec: str) -> str:
  """A failure to load config file `spec` in the user's words, with the file and line."""
  path = spec.partition(':')[0]
  cause = e.__cause__ or e
  if os.path.isfile(path) and not path.endswith('.py'):
    return f'{path} is not a Python config file: give a .py file with a get_config() function'
  if isinstance(cause, SyntaxError):
    return f'{cause.filename} line {cause.lineno}: {cause.msg}'
  if isinstance(cause, OSError) and not os.path.isfile(path):
    for sweep, flag in ((True, '--sweep'), (False, '--config')):
      if pathlib.Path(path).stem in presets.names(sweep) and not path.endswith('.py'):
        return f'{path} is a preset of {flag}: give it as {flag}={spec}'
    return (f'no config file {path}: give a file\'s path, or a preset\'s name: '
            f'{", ".join(presets.names())} (sweeps: {", ".join(presets.names(sweep=True))})')
  if isinstance(cause, TypeError) and 'positional argument' in str(cause):
    return f'{path}\'s get_config() takes no argument after ":" (or another number): {cause}'
  if "has no attribute 'get_config'" in str(cause):
    return f'{path} has no get_config() function: define one that returns the config'
  frames = [
      f for f in traceback.extract_tb(cause.__traceback__)
      if os.path.abspath(f.filename) == os.path.abspath(path)
  ]
  where = f'{path} line {frames[-1].lineno}' if frames else path
  return f'{where}: {type(cause).__name__}: {_one_line(cause)}'


def _unknown_override(argv: list[str]) -> str | None:
  """For a command line whose overrides failed: the first override of a field that its config
  lacks, named with the nearest field or the fields of its group."""
  specs = _config_specs(argv)
  for arg in argv:
    match = re.match(r'^--?(?:no)?(\w+)\.([\w.]+)', arg)
    if not match or match.group(1) not in specs:
      continue
    name, field = match.groups()
    try:
      known = list(config_fields.flatten(_load_config_file(specs[name])))
    except Exception:  # pylint: disable=broad-except
      return None  # The file itself is at fault; absl's message says how.
    groups = {k.rsplit('.', i)[0] for k in known for i in range(1, k.count('.') + 1)}
    if field not in known and field not in groups:
      return config_fields.unknown_field_message(field, known, f'--{name}')
  return None


def _config_specs(argv: list[str]) -> dict[str, str]:
  """{'config': spec, 'sweep': spec} as given on the command line."""
  specs = {}
  for arg in argv:
    match = re.match(r'^--?(config|sweep)=(.+)$', arg)
    if match:
      specs[match.group(1)] = match.group(2)
  return specs


def _with_presets(argv: list[str]) -> list[str]:
  """--config=NAME[:argument] and --sweep=NAME[:argument] name presets (fedprox_jax.configs)
  unless a file of that path exists."""
  out = []
  for arg in argv:
    match = re.match(r'^(--?(config|sweep)=)(.+)$', arg)
    if match:
      arg = match.group(1) + presets.resolve(match.group(3), sweep=match.group(2) == 'sweep')
    out.append(arg)
  return out


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, presets taken by name, and a bad config file, flag or override
  answered in one line."""
  argv = _with_presets(argv)
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except  # Config files may raise anything.
    for name, spec in _config_specs(argv).items():
      try:
        _load_config_file(spec)
      except Exception as load_error:  # pylint: disable=broad-except
        sys.exit(f'error: --{name}: {_config_file_problem(load_error, spec)}')
    sys.exit(f'error: {_unknown_override(argv) or _one_line(e)}')


def config_value(flag_holder, name: str):
  """The config of a config_flags flag; an unreadable config file exits with one line.
  (config_flags loads lazily and reports a failed load on first use.)"""
  try:
    config = flag_holder.value
    config.keys()
    return config
  except Exception as e:  # pylint: disable=broad-except  # Whatever the user's file raises.
    sys.exit(f'error: --{name}: {_config_file_problem(e, flags.FLAGS[name].config_filename)}')


def _quiet_closed_event_loops(hook):
  """orbax's background threads may touch their closed asyncio loop after a failed save; Python
  then prints a harmless 'Event loop is closed' traceback. A stop asked for inside a library's
  callback (JAX's garbage-collection hook) is recorded and acted on: its traceback is noise too.
  Everything else goes to `hook`."""

  def quiet(unraisable) -> None:
    closed_loop = (isinstance(unraisable.exc_value, RuntimeError) and
                   str(unraisable.exc_value) == 'Event loop is closed')
    if not (closed_loop or isinstance(unraisable.exc_value, KeyboardInterrupt)):
      hook(unraisable)

  return quiet


def check_no_arguments(argv: list[str]) -> None:
  """Flags only: a stray word (`--overwrite false`) would otherwise be ignored."""
  if len(argv) > 1:
    sys.exit(f'error: unexpected argument {argv[1]!r}: give every flag as --name=value')


def leads(config) -> bool:
  """Whether this process may speak for the run: not one known to follow another's lead."""
  return not (config.compute.distributed and config.compute.process_id > 0)


def choose_workdir(workdir: str | None, spec: str, claim: bool = True) -> str | None:
  """--workdir as given; unset, a new folder under ./runs/ named by the config and the time, made
  here (`claim`) so that runs started in the same second each get their own; empty (--workdir=),
  none (nothing is saved). A process that only follows the run's leader claims nothing."""
  if workdir is not None:
    return workdir or None
  path, _, argument = spec.partition(':')
  name = '-'.join(filter(None, [pathlib.Path(path).stem, argument]))
  base = pathlib.Path('runs') / f'{name}-{time.strftime("%Y%m%d-%H%M%S")}'
  if not claim:
    return str(base)
  try:
    return str(workdir_lib.claim_new(base))
  except errors.ConfigError as e:
    sys.exit(f'error: {e}')


def _process_seconds() -> float:
  """Wall time since this process started (Linux), else since this module was imported."""
  try:
    with open('/proc/self/stat') as f:
      started = int(f.read().rsplit(')', 1)[1].split()[19]) / os.sysconf('SC_CLK_TCK')
    with open('/proc/uptime') as f:
      return float(f.read().split()[0]) - started
  except (OSError, ValueError, IndexError):
    return time.perf_counter() - _IMPORTED


_IMPORTED = time.perf_counter()


def run(main,
        workdir: str | None = None,
        results: str = '',
        plot: str = '',
        chosen: bool = False,
        config=None) -> None:
  """Calls main(); a known failure or an interruption ends the process with one line. The first
  and last lines say where the results go (`results`: the workdir's main files; `plot`: the
  arguments of the command that plots them), or that nothing is saved. A workdir `chosen` here
  (not given) must be named to the command that resumes the run. With config.compute.distributed
  the process first joins the others; all but the first then log warnings and errors only."""
  sys.unraisablehook = _quiet_closed_event_loops(sys.unraisablehook)
  signals.install()
  quiet.install()  # Before joining other processes: JAX's notes on it come then.
  again = f'rerun the same command with --workdir={workdir}' if chosen else 'rerun the same command'
  reword = lambda message: str(message).replace('rerun the same command', again)
  lines = True  # Whether this process speaks for the run (all but the first of several do not).
  try:
    signals.check()  # A stop asked for while the libraries loaded.
    lines = _join(config)
    if lines and workdir:
      logging.info('Results go to %s (--workdir=DIR chooses the place)', workdir)
    elif lines:
      logging.warning('Nothing is saved (--workdir=): give --workdir=DIR, or leave it out for a '
                      'folder under ./runs/, to keep the results')
    main()
    if lines and workdir:
      logging.info(
          'Results in %s: %s. Plot them: python -m fedprox_jax.plot %s. The whole '
          'process took %.1f s (data, compilation and rounds).', workdir, results,
          plot.format(workdir=workdir), _process_seconds())
    elif lines:
      logging.info('Nothing was saved (--workdir=). The whole process took %.1f s.',
                   _process_seconds())
  except errors.USER_ERRORS as e:  # Their message says what is wrong and what to do.
    logging.debug('%s', e, exc_info=True)
    processes = sys.modules.get('fedprox_jax.engine.processes')
    if processes:  # The run's other processes leave in order instead of waiting for this one.
      processes.tell_stopped(_first_line(e))
    if lines:
      sys.exit(f'error: {reword(e)}')
    if isinstance(e, errors.ConfigError):
      sys.exit(1)  # Every process has the same config: process 0 says what is wrong.
    sys.exit(f'error (process {_process_index()}): {reword(e)}')
  except errors.Interrupted as e:
    if lines:
      print(reword(e), file=sys.stderr)
    sys.exit(128 + signals.stopped_by())
  except KeyboardInterrupt:
    if lines:
      print(reword('interrupted; rerun the same command: a run resumes from its last checkpoint'),
            file=sys.stderr)
    sys.exit(128 + signals.stopped_by())
  except Exception as e:  # pylint: disable=broad-except
    from fedprox_jax.engine import resources  # pylint: disable=g-import-not-at-top
    memory = resources.out_of_memory(e)  # Outside the Simulation: loading data, a round's end.
    if memory is not None:
      logging.debug('%s', e, exc_info=True)
      sys.exit(f'error: {reword(memory)}'
               if lines else f'error (process {_process_index()}): {reword(memory)}')
    lost = _lost_a_process(e)
    processes = sys.modules.get('fedprox_jax.engine.processes')
    if lost is None:  # A bug: its traceback; the run's other processes leave in order.
      if processes:
        processes.tell_stopped(_first_line(e))
      raise
    if lost.quiet:  # The process that stopped said why; this one left JAX's shutdown with it.
      sys.exit(1)
    # Lost (killed, hung): JAX's exit would wait for it at its shutdown barrier, then abort.
    processes.end(lost, reword(f'error: {lost}'))


def _process_index() -> int:
  import jax  # pylint: disable=g-import-not-at-top
  return jax.process_index()


def _first_line(e: BaseException) -> str:
  return f'{type(e).__name__}: {str(e).strip().splitlines()[0][:200]}' if str(e) else type(
      e).__name__


def _lost_a_process(e: BaseException):
  """How another process of the run was lost, if `e` means that one was (processes.lost: its
  connection closed, its heartbeats stopped, a cross-process step timed out, or it stopped on an
  error of its own); None otherwise."""
  processes = sys.modules.get('fedprox_jax.engine.processes')
  return processes.lost(e) if processes else None


def _join(config) -> bool:
  """Joins a multi-process run if the config (or what a callable `config` returns) asks; whether
  this process speaks for the run."""
  if callable(config):
    config = config()
  if config is None or not config.compute.distributed:
    return True
  from fedprox_jax.engine import processes  # pylint: disable=g-import-not-at-top
  try:
    processes.join(config)
    signals.install()  # jax.distributed's preemption notifier took SIGTERM: take it back.
  except errors.ConfigError:
    raise
  except (RuntimeError, ValueError) as e:  # jax.distributed's own: no coordinator, a timeout...
    raise errors.ConfigError(
        f'could not join the run\'s processes ({str(e).splitlines()[0][:300]}): check '
        'compute.coordinator_address, compute.num_processes and compute.process_id (or the '
        'cluster\'s environment), and that every process was started') from None
  if processes.is_leader():
    return True
  logging.set_verbosity(logging.WARNING)
  return False
