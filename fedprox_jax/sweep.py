"""Command line: python -m fedprox_jax.sweep --config=BASE.py --sweep=SWEEP.py --workdir=DIR."""
import sys

from fedprox_jax import signals  # (The standard library only: loads at once.)

# A stop asked for while the libraries load is recorded, and acted on once they have (raised
# while they load, it could be lost in a library's callback, or crash an extension's import).
signals.record()

try:  # Ctrl-C while the libraries load: no traceback for that either.
  from absl import app
  from absl import flags
  from ml_collections import config_flags

  from fedprox_jax import cli
  from fedprox_jax import command_flags
  from fedprox_jax import experiment
except KeyboardInterrupt:
  sys.exit(130)

_CONFIG = config_flags.DEFINE_config_file('config',
                                          None,
                                          'Base experiment config file.',
                                          lock_config=True)
_SWEEP = config_flags.DEFINE_config_file('sweep',
                                         None, 'Sweep config file (arms, grid, '
                                         'repeats).',
                                         lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Where results.csv and runs/NAME/ go; unset: a new folder under ./runs/ named '
    'by the sweep and the time; empty (--workdir=): nothing is saved. A workdir of the same sweep '
    'is resumed.')
_OVERWRITE = flags.DEFINE_bool(
    'overwrite', False, 'Start over in a workdir that holds another '
    'sweep, or one that cannot be resumed (its files are deleted).')
_DRY_RUN = flags.DEFINE_bool(
    'dry_run', False, 'Check everything a start checks and print the base config, the runs, the '
    'workdir, data, compiled programs, memory and a rough wall time; start nothing and write '
    'nothing.')


def main(argv):
  command_flags.check_no_arguments(argv)
  base, sweep = command_flags.config_value(_CONFIG,
                                           'config'), command_flags.config_value(_SWEEP, 'sweep')
  if _DRY_RUN.value:
    from fedprox_jax.experiment import dry_run  # pylint: disable=g-import-not-at-top
    workdir = cli.choose_workdir(_WORKDIR.value, flags.FLAGS['sweep'].config_filename, claim=False)
    dry_run.main(
        lambda: dry_run.sweep(base, sweep, workdir, _WORKDIR.value is None, _OVERWRITE.value))
    return
  workdir = cli.choose_workdir(_WORKDIR.value,
                               flags.FLAGS['sweep'].config_filename,
                               claim=cli.leads(base))
  cli.run(
      lambda: experiment.run_sweep(base, sweep, workdir, _OVERWRITE.value),
      workdir,
      results='results.csv, runs/NAME/ (one folder per run)',
      plot='{workdir}',
      chosen=_WORKDIR.value is None,
      config=(lambda: experiment.prepared_base(base, sweep)) if base.compute.distributed else None)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'sweep'])
  app.run(main, flags_parser=command_flags.parse_flags)
