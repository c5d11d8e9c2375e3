"""Reading the command lines' flags: presets by name, --help, and a bad config file, flag or
override answered in one line."""
import importlib.util
import os
import pathlib
import re
import sys
import textwrap
import traceback

from absl import flags

from fedprox_jax import config_fields
from fedprox_jax import configs as presets


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


_HELP = ('-h', '--help', '-?', '--helpshort', '--helpfull')


def _help(full: bool) -> None:
  """How to name presets and override their fields, then the command's own flags (`full`: every
  flag); exit 0 (absl's own --help exits 1, and says neither)."""
  main = sys.modules['__main__']
  program = (main.__spec__.name
             if getattr(main, '__spec__', None) else pathlib.Path(sys.argv[0]).name)
  sweep = 'sweep' in flags.FLAGS
  paragraphs = [
      (main.__doc__ or '').strip(),
      f'Usage: python -m {program} --config=PRESET_OR_FILE'
      f'{" --sweep=PRESET_OR_FILE" if sweep else ""} [--config.FIELD=VALUE ...] [--workdir=DIR] '
      '[--dry_run]',
      f'--config names a preset ({", ".join(presets.names())}) or a .py file with a '
      'get_config(); PRESET:VARIANT picks a variant (e.g. --config=synthetic:1_1).',
  ]
  if sweep:
    paragraphs.append(f'--sweep names a sweep preset ({", ".join(presets.names(sweep=True))}) '
                      'or such a file.')
  paragraphs.append('Any field can be overridden: --config.algorithm.mu=0 --config.num_rounds=50'
                    f'{" --sweep.repeats=2" if sweep else ""} (the fields: '
                    'docs/configuration.md).')
  text = '\n\n'.join(textwrap.fill(p, 100, break_on_hyphens=False) for p in paragraphs if p)
  try:
    print(text + '\n\n' + (flags.FLAGS.get_help() if full else flags.FLAGS.main_module_help()))
    sys.stdout.flush()
  except BrokenPipeError:  # `--help | head`: the reader has what it wanted.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
  sys.exit(0)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, presets taken by name, and a bad config file, flag or override
  answered in one line."""
  if any(arg in _HELP for arg in argv[1:]):
    _help(full='--helpfull' in argv)
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


def check_no_arguments(argv: list[str]) -> None:
  """Flags only: a stray word (`--overwrite false`) would otherwise be ignored."""
  if len(argv) > 1:
    sys.exit(f'error: unexpected argument {argv[1]!r}: give every flag as --name=value')
