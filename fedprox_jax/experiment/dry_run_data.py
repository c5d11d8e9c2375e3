"""The data of a dry run: as a start would have them, reading only. Their plan where it is exact
without them (synthetic, MNIST: their Task.plan); a task whose sizes are known once loaded
(Shakespeare) is loaded into memory alone when its files are on this machine, else described."""
import functools
import json
import os
import pathlib
import time
from typing import NamedTuple

import ml_collections

from fedprox_jax import errors
from fedprox_jax import tasks
from fedprox_jax.experiment import program_plan
from fedprox_jax.tasks import cache
from fedprox_jax.tasks import data_plan
from fedprox_jax.tasks import mnist
from fedprox_jax.tasks import mnist_files
from fedprox_jax.tasks import shakespeare_fetch
from fedprox_jax.tasks import shakespeare_text


class DataInfo(NamedTuple):
  plan: data_plan.DataPlan
  num_clients: int
  source: str  # Where a start takes them from.
  load_s: float | None  # Rough seconds a start takes to have them (None: unknown).


def describe(c: ml_collections.ConfigDict) -> DataInfo:
  """The data as a start would have them, reading only."""
  d = c.data
  plan = tasks.plan(d, c.clients_per_round)
  if d.name == 'synthetic':
    exact = 'exact' if plan.train_sizes is not None else 'an expectation (too many to draw here)'
    examples = plan.train_rows + plan.eval_rows
    return DataInfo(
        plan, d.num_clients, f'generated at the start from data.seed = {d.seed}, no download '
        f'(sizes: {exact})', examples * program_plan.GENERATE_S_PER_EXAMPLE)
  if d.name == 'mnist':
    source, cached = _mnist_source(d)
    return DataInfo(plan, d.num_clients, source, 0.0 if cached else program_plan.MNIST_PREPARE_S)
  if d.name == 'shakespeare':
    return _shakespeare(c)
  return DataInfo(plan or data_plan.NO_DATA, d.get('num_clients', 0),
                  f'task {d.name}: described once loaded; the estimates leave what is unknown out',
                  None)


def _shakespeare(c: ml_collections.ConfigDict) -> DataInfo:
  """Loaded in memory alone when the texts (or the partition's cache) are here, else described."""
  texts = _shakespeare_texts(c.data)
  if texts is None:
    return DataInfo(
        data_plan.NO_DATA, 0, f'its texts fetched at the start from '
        f'{shakespeare_fetch.ARCHIVE_URL} (needs the network; not tried here): its sizes are '
        'known once loaded, so the estimates leave the data out', None)
  tick = time.perf_counter()
  data = _load_read_only(json.dumps(c.data.to_dict(), sort_keys=True))
  load_s = time.perf_counter() - tick
  if c.clients_per_round > data.num_clients:  # The Simulation's check, once they are loaded.
    raise errors.ConfigError(f'config.clients_per_round = {c.clients_per_round} exceeds the '
                             f'{data.num_clients} clients of config.data')
  stats = ', '.join(f'{k} {v:,.1f}' if isinstance(v, float) else f'{k} {v:,}'
                    for k, v in data.statistics().items())
  return DataInfo(
      data_plan.loaded_data(data, c.clients_per_round), data.num_clients,
      f'loaded here into memory alone ({load_s:.1f} s) from the partition cache of '
      f'data.cache_dir if there, else from the texts in {texts}; partition: {stats}', load_s)


def _mnist_source(d: ml_collections.ConfigDict) -> tuple[str, bool]:
  """(Where a start reads MNIST from, whether from the partition cache); the manual folder's
  files are checked as a start checks them."""
  path = cache.cache_path(d, mnist.cache_key(d))
  if path.exists():
    return f'read from the partition cache {path} (without TensorFlow)', True
  then = f'then partitioned and cached in {path}'
  manual = mnist_files.resolve_manual_dir(d.manual_dir)
  if manual:
    mnist_files.check_manual_dir(manual)
    return f'prepared by TFDS from the four files in {manual} (checked here), {then}', False
  tfds_dir = pathlib.Path(d.tfds_data_dir or '~/tensorflow_datasets').expanduser() / 'mnist'
  if any(tfds_dir.glob('*/dataset_info.json')):
    return f'read from TFDS\'s copy in {tfds_dir}, {then}', False
  return (f'downloaded by TFDS from {mnist_files.DOWNLOAD_HOST} into {tfds_dir} (needs the '
          f'network; not tried here), {then}; offline, set data.manual_dir or '
          f'${mnist_files.MANUAL_DIR_ENV}', False)


def _shakespeare_texts(d: ml_collections.ConfigDict) -> str | None:
  """The folder of the texts if they are on this machine (a start fetches them otherwise)."""
  manual = d.manual_dir or os.environ.get(shakespeare_text.MANUAL_DIR_ENV, '')
  if manual:
    return manual  # Checked as a start checks it, if the partition is not cached.
  copy = pathlib.Path(d.cache_dir or '~/.cache/fedprox_jax').expanduser() / shakespeare_fetch.FOLDER
  try:
    shakespeare_text.check_folder(str(copy))
  except errors.DataError:
    return None
  return str(copy)


@functools.lru_cache(maxsize=4)  # A sweep's runs, and a test's many dry runs, share the data.
def _load_read_only(data_json: str):
  """config.data's data, from their cache if there, else built in memory: nothing is written."""
  with cache.read_only():
    return tasks.load(ml_collections.ConfigDict(json.loads(data_json)))
