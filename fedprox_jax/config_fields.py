"""Helpers to check config fields, shared by the tasks, the algorithms and the experiment."""
import difflib
import math

import ml_collections

from fedprox_jax.errors import ConfigError

# Seeds feed JAX keys and NumPy generators; JAX keeps only the low 32 bits of a seed, so a larger
# one would silently give the results of another.
SEED_LIMIT = 2**32


def flatten(tree, prefix: str = '') -> dict:
  """A nested config (ConfigDict or dict) as {'dotted.field': value}."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, (dict, ml_collections.ConfigDict)):
      out.update(flatten(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def get(config, field: str):
  """config['a.b.c'] for a dotted field."""
  value = config
  for part in field.split('.'):
    value = value[part]
  return value


def unknown_field_message(field: str, known: list[str], where: str = 'config') -> str:
  """'<where> has no field F' with the closest known field, or the fields of F's group."""
  group = field.rsplit('.', 1)[0] + '.' if '.' in field else ''
  children = sorted({k[len(group):].split('.')[0] for k in known if k.startswith(group)})
  if children:  # A known group: the nearest of its own fields.
    close = [group + c for c in difflib.get_close_matches(field[len(group):], children, n=1)]
  else:  # The group itself is misspelt: the nearest field anywhere, else the top level.
    close = difflib.get_close_matches(field, known, n=1)
    group, children = '', sorted({k.split('.')[0] for k in known})
  if close:
    return f'{where} has no field {field}: did you mean {close[0]}?'
  return (f'{where} has no field {field}; the fields of {group[:-1] or "the top level"} are '
          f'{", ".join(children)}')


def require(ok: bool, field: str, problem: str) -> None:
  if not ok:
    raise ConfigError(f'config.{field} {problem}')


def one_of(config: ml_collections.ConfigDict, field: str, choices) -> None:
  value = get(config, field)
  require(value in choices, field,
          f'= {value!r} is not one of {", ".join(repr(c) for c in choices)}')


def check_seed(value, field: str, span: int = 1) -> None:
  """0 <= value and value + span - 1 < 2^32 (`span` seeds from value on, as a sweep's repeats)."""
  ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value
  last = f' (and seed + repeats - 1 = {value + span - 1})' if span > 1 and ok else ''
  require(ok and value + span - 1 < SEED_LIMIT, field,
          f'= {value!r}{last} must be an int in [0, 2^32 - 1 = {SEED_LIMIT - 1}]')


def check_finite_floats(config: ml_collections.ConfigDict) -> None:
  for field, value in flatten(config).items():
    if isinstance(value, float):
      require(math.isfinite(value), field, f'= {value} must be a finite number')
