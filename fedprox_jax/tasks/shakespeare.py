"""The paper's federated Shakespeare (LEAF): one client per speaking role of a play; its samples
are every 80-character window of the role's speech, the target the character that follows.

LEAF's non-IID sampling: roles in a random order (from data.seed) are taken until data.fraction of
all windows is reached, the last role cut to fit; data.max_windows > 0 then keeps only each role's
first windows (not LEAF's: a bound on local work for small machines). LEAF's split, per role: the
first train_fraction of its windows for training, then a gap of 79 windows (no test window's input
shares a character with a training window's input), the rest for test; roles left without a
training or a test window are dropped (so a role needs over 400 windows at train_fraction 0.8).
Each client's text is kept once, as character ids; windows are gathered from their starts inside
the program (never materialised: 80 times the text). The texts are data.manual_dir's, or
fetched once into the cache (tasks/shakespeare_fetch.py).
"""
import ml_collections
import numpy as np

from fedprox_jax import config_fields
from fedprox_jax.config_fields import require
from fedprox_jax.errors import DataError
from fedprox_jax.tasks import cache
from fedprox_jax.tasks import shakespeare_fetch
from fedprox_jax.tasks import shakespeare_text as text_lib
from fedprox_jax.tasks.federated_data import FederatedData
from fedprox_jax.tasks.federated_data import check_partition
from fedprox_jax.tasks.task import Task

WINDOW = text_lib.SEQ_LEN
GAP = WINDOW - 1
NUM_CLASSES = len(text_lib.ALL_LETTERS)
_PARTITION_FIELDS = ('name', 'fraction', 'train_fraction', 'seed', 'max_windows')
_CACHE_VERSION = 1


def validate(c: ml_collections.ConfigDict) -> None:
  d = c.data
  require(0 < d.fraction <= 1, 'data.fraction', f'= {d.fraction} must be in (0, 1]')
  require(0 < d.train_fraction < 1, 'data.train_fraction',
          f'= {d.train_fraction} must be in (0, 1)')
  require(d.max_windows >= 0, 'data.max_windows', f'= {d.max_windows} must be >= 0 (0: all)')
  # A client needs a test window after its training windows and the gap.
  require(
      d.max_windows == 0 or int(d.train_fraction * d.max_windows) + GAP < d.max_windows,
      'data.max_windows', f'= {d.max_windows} leaves no test window after the '
      f'{d.train_fraction:g} for training and the gap of {GAP}: raise it')
  config_fields.one_of(c, 'model.name', ('lstm',))
  for field in ('embedding', 'hidden', 'layers'):
    require(c.model[field] >= 1, f'model.{field}', f'= {c.model[field]} must be >= 1')


def sample_roles(lengths: list[int], fraction: float, seed: int) -> list[tuple[int, int]]:
  """LEAF's non-IID sample: (role, windows kept) for roles taken in a random order until
  `fraction` of all windows is reached, the last one cut to fit."""
  windows = np.maximum(np.asarray(lengths) - WINDOW, 0)
  wanted = int(np.ceil(fraction * windows.sum()))
  taken, total = [], 0
  for role in np.random.default_rng(seed).permutation(len(lengths)):
    if total >= wanted:
      break
    keep = int(min(windows[role], wanted - total))
    if keep:
      taken.append((int(role), keep))
      total += keep
  return taken


def split(num_windows: int, train_fraction: float) -> tuple[range, range]:
  """A role's training and test windows: the first part, a gap of 79, the rest."""
  cut = int(train_fraction * num_windows)
  return range(cut), range(min(cut + GAP, num_windows), num_windows)


def _build(c: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
  roles = text_lib.roles(shakespeare_fetch.texts_folder(c))
  texts = [text_lib.encode(text) for _, _, text in roles]
  pieces, train, test, offset = [], [[], []], [[], []], 0
  for role, keep in sample_roles([len(t) for t in texts], c.fraction, c.seed):
    keep = min(keep, c.max_windows or keep)  # A role's first windows only, if capped.
    ids = texts[role][:keep + WINDOW]  # The last role cut to fit: its first `keep` windows.
    train_windows, test_windows = split(keep, c.train_fraction)
    if not train_windows or not test_windows:
      continue  # LEAF drops clients left without a training or a test window.
    for windows, out in ((train_windows, train), (test_windows, test)):
      out[0].append(offset + np.arange(windows.start, windows.stop, dtype=np.int32))
      out[1].append(len(windows))
    pieces.append(ids)
    offset += len(ids)
  if not pieces:
    raise DataError(f'no role of the sample (data.fraction = {c.fraction}) keeps a training and '
                    'a test window: raise data.fraction')
  text = np.concatenate(pieces)
  arrays = {'text': text}
  for name, (starts, sizes) in (('train', train), ('local_test', test)):
    starts = np.concatenate(starts)
    arrays[f'{name}_x'] = starts[:, None]
    arrays[f'{name}_y'] = text[starts + WINDOW].astype(np.int32)
    arrays[f'{name}_sizes'] = np.asarray(sizes, np.int32)
  arrays['test_x'], arrays['test_y'] = np.zeros((0, 1), np.int32), np.zeros(0, np.int32)
  return arrays


def _check(arrays: dict[str, np.ndarray]) -> None:
  arrays = dict(arrays)
  text = arrays.pop('text')
  check_partition(arrays, NUM_CLASSES)
  for name in ('train_x', 'local_test_x'):
    if len(arrays[name]) and (arrays[name].min() < 0 or arrays[name].max() + WINDOW >= len(text)):
      raise ValueError(f'{name} holds windows outside the text')


def load(c: ml_collections.ConfigDict) -> FederatedData:
  arrays = cache.load_or_build(c,
                               cache.key(c, _PARTITION_FIELDS, _CACHE_VERSION),
                               lambda: _build(c),
                               _check,
                               fix='raise data.fraction')
  return FederatedData(train_x=arrays['train_x'],
                       train_y=arrays['train_y'],
                       train_sizes=arrays['train_sizes'],
                       local_test_x=arrays['local_test_x'],
                       local_test_y=arrays['local_test_y'],
                       local_test_sizes=arrays['local_test_sizes'],
                       test_x=arrays['test_x'],
                       test_y=arrays['test_y'],
                       num_classes=NUM_CLASSES,
                       text=arrays['text'],
                       window=WINDOW)


TASK = Task(name='shakespeare',
            validate=validate,
            load=load,
            model_dims=lambda c: (NUM_CLASSES, WINDOW))
