"""MNIST through TFDS and the partition cache: damaged files are named, or rebuilt, never used."""
import dataclasses
import logging
import shutil

import numpy as np
import pytest

from fedprox_jax import errors
from fedprox_jax import tasks
from fedprox_jax.configs import mnist_fedprox
from fedprox_jax.experiment import validation
from fedprox_jax.tasks import mnist_files as mnist
from tests.conftest import mnist_manual_dir

# Every test reads MNIST as TFDS prepares it (TensorFlow, tens of seconds).
pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
  """A TFDS data dir with MNIST prepared (from the local files when there are some)."""
  manual = mnist_manual_dir()
  root = tmp_path_factory.mktemp('tfds')
  mnist.load_mnist(str(root), manual)
  return root, manual


def _data_config(prepared, cache_dir, num_clients=100, pool='train'):
  c = mnist_fedprox.get_config().data
  c.tfds_data_dir, c.manual_dir = str(prepared[0]), prepared[1]
  c.cache_dir, c.num_clients, c.pool = str(cache_dir), num_clients, pool
  return c


def _flip_middle(path):
  data = bytearray(path.read_bytes())
  data[len(data) // 2] ^= 0xFF
  path.write_bytes(bytes(data))


def test_a_damaged_partition_cache_is_rebuilt_with_a_warning(prepared, tmp_path, caplog):
  config = _data_config(prepared, tmp_path)
  first = tasks.load(config)
  (cache,) = tmp_path.glob('*.npz')
  whole = cache.read_bytes()

  def edited_labels(path):  # A well-formed archive whose content was changed.
    with np.load(path) as f:
      arrays = dict(f)
    arrays['train_y'] = np.where(arrays['train_y'] == 3, 255, arrays['train_y'])
    np.savez(path.with_suffix(''), **arrays)

  for damage in (_flip_middle, lambda p: p.write_bytes(whole[:len(whole) // 2]),
                 lambda p: p.write_bytes(b''), edited_labels):
    caplog.clear()
    damage(cache)
    again = tasks.load(config)
    assert f'The partition cache {cache} is unreadable' in caplog.text
    for field in dataclasses.fields(first):
      np.testing.assert_array_equal(getattr(again, field.name), getattr(first, field.name))
    assert cache.read_bytes() == whole  # Rebuilt whole.


def test_damaged_tfds_files_name_the_folder_and_the_fix(prepared, tmp_path):
  tfds_dir = tmp_path / 'tfds'
  shutil.copytree(prepared[0], tfds_dir)
  (version,) = (tfds_dir / 'mnist').iterdir()
  (record,) = version.glob('mnist-train.tfrecord*')
  _flip_middle(record)
  with pytest.raises(errors.DataError,
                     match=rf'MNIST as prepared by TFDS in {tfds_dir / "mnist"} '
                     rf'cannot be read \(.*\): delete that folder \(rm -r {tfds_dir / "mnist"}\) '
                     'and rerun'):
    mnist.load_mnist(str(tfds_dir), prepared[1])
  shutil.rmtree(tfds_dir / 'mnist')  # The fix the message gives.
  assert len(mnist.load_mnist(str(tfds_dir), prepared[1])['train_labels']) == 60_000


def test_a_garbled_tfds_dataset_info_is_named(prepared, tmp_path):
  tfds_dir = tmp_path / 'tfds'
  shutil.copytree(prepared[0], tfds_dir)
  (version,) = (tfds_dir / 'mnist').iterdir()
  (version / 'dataset_info.json').write_text('{"name": "mni')
  with pytest.raises(errors.DataError, match='cannot be read .*: delete that folder'):
    mnist.load_mnist(str(tfds_dir), prepared[1])


@pytest.mark.parametrize('pool, most', [('train', 5420), ('all', 6310)])
def test_the_largest_workable_client_count_gives_every_client_data(prepared, tmp_path, pool, most,
                                                                   caplog):
  caplog.set_level(logging.INFO)
  config = mnist_fedprox.get_config()
  config.data = _data_config(prepared, tmp_path, most, pool)
  validation.validate(config)
  data = tasks.load(config.data)
  assert data.num_clients == most
  assert data.train_sizes.min() >= 1 and data.local_test_sizes.min() >= 1
