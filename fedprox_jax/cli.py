"""What the command lines share: where results go, and known failures turned into one line."""
import os
import pathlib
import sys
import time

from absl import logging

from fedprox_jax import errors
from fedprox_jax import quiet
from fedprox_jax import signals
from fedprox_jax.experiment import workdir as workdir_lib


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
  from fedprox_jax.engine import devices  # pylint: disable=g-import-not-at-top  # (Loads JAX.)
  devices.own_process()  # A command line's process: its config's process-wide settings apply.
  hook = sys.unraisablehook
  sys.unraisablehook = _quiet_closed_event_loops(hook)
  try:
    _run(main, workdir, results, plot, chosen, config)
  finally:
    sys.unraisablehook = hook


def _run(main, workdir, results, plot, chosen, config) -> None:
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
          'Results in %s: %s. Plot them: python -m fedprox_jax.plot %s. The process took '
          '%.1f s in all.', workdir, results, plot.format(workdir=workdir), _process_seconds())
    elif lines:
      logging.info('Nothing was saved (--workdir=). The process took %.1f s in all.',
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
    from fedprox_jax.experiment import preflight  # pylint: disable=g-import-not-at-top
    # Outside the Simulation: loading data, a round's end.
    memory = resources.out_of_memory(e, name=preflight.name)
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
  from fedprox_jax.experiment import settings  # pylint: disable=g-import-not-at-top
  try:
    processes.join(settings.for_compute(config))
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
