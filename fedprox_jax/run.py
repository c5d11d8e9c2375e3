"""Command line: python -m fedprox_jax.run --config=configs/mnist_fedprox.py --workdir=DIR."""
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
                                          'Experiment config file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Where config.json, metrics.jsonl, summary.json and checkpoints go; unset: '
    'a new folder under ./runs/ named by the config and the time; empty (--workdir=): nothing is '
    'saved. A workdir with a checkpoint of the same config is resumed.')
_OVERWRITE = flags.DEFINE_bool(
    'overwrite', False, 'Start over in a workdir that holds another '
    "config's run, or a run that cannot be resumed (its files are "
    'deleted).')
_DRY_RUN = flags.DEFINE_bool(
    'dry_run', False, 'Check everything a start checks and print the config, workdir, data, '
    'compiled programs, memory and a rough wall time; start nothing and write nothing.')


def main(argv):
  command_flags.check_no_arguments(argv)
  config = command_flags.config_value(_CONFIG, 'config')
  if _DRY_RUN.value:
    from fedprox_jax.experiment import dry_run  # pylint: disable=g-import-not-at-top
    workdir = cli.choose_workdir(_WORKDIR.value, flags.FLAGS['config'].config_filename, claim=False)
    dry_run.main(lambda: dry_run.single(config, workdir, _WORKDIR.value is None, _OVERWRITE.value))
    return
  workdir = cli.choose_workdir(_WORKDIR.value,
                               flags.FLAGS['config'].config_filename,
                               claim=cli.leads(config))
  cli.run(lambda: experiment.train_and_evaluate(config, workdir, _OVERWRITE.value),
          workdir,
          results='metrics.jsonl, summary.json, checkpoints/',
          plot='--run {workdir}',
          chosen=_WORKDIR.value is None,
          config=config)


if __name__ == '__main__':
  flags.mark_flag_as_required('config')
  app.run(main, flags_parser=command_flags.parse_flags)
