"""MNIST from tensorflow-datasets into NumPy, with clear errors for missing or corrupt files.

TensorFlow is imported only here, lazily, and only when the partition cache misses.
"""
import contextlib
import io
import logging
import os
import pathlib
import socket
import sys

from absl import logging as absl_logging
import numpy as np

from fedprox_jax import files
from fedprox_jax import quiet
from fedprox_jax.errors import DataError

# The official files and their SHA256, as registered by TFDS for its `mnist` builder.
OFFICIAL_FILES = {
    'train-images-idx3-ubyte.gz':
        '440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609',
    'train-labels-idx1-ubyte.gz':
        '3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c',
    't10k-images-idx3-ubyte.gz':
        '8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6',
    't10k-labels-idx1-ubyte.gz':
        'f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6',
}
# Examples of each digit in the official train and test files (fixed by their checksums).
CLASS_COUNTS = {
    'train': (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
    'test': (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009),
}
MANUAL_DIR_ENV = 'FEDPROX_JAX_MNIST_DIR'
DOWNLOAD_HOST = 'storage.googleapis.com'  # Where TFDS fetches MNIST from.


def check_manual_dir(manual_dir: str) -> None:
  """Fails with an actionable message unless `manual_dir` holds the four intact official files."""
  folder = pathlib.Path(manual_dir).expanduser()
  files.check_checksums(
      folder,
      OFFICIAL_FILES,
      'MNIST file',
      missing_fix=(f'put the four official MNIST .gz files ({", ".join(OFFICIAL_FILES)}) in '
                   f'{folder}, or set data.manual_dir to the folder that holds them'),
      altered_fix='replace it with the official file')


def resolve_manual_dir(manual_dir: str) -> str:
  """The config's manual dir, else the environment's, else '' (TFDS downloads by itself)."""
  return manual_dir or os.environ.get(MANUAL_DIR_ENV, '')


def _reachable(host: str, timeout_s: float = 5.0) -> bool:
  try:
    socket.create_connection((host, 443), timeout=timeout_s).close()
    return True
  except OSError:
    return False


def load_mnist(tfds_data_dir: str, manual_dir: str) -> dict[str, np.ndarray]:
  """Both MNIST splits as uint8 images [n, 28, 28] and int32 labels, via TFDS."""
  manual_dir = resolve_manual_dir(manual_dir)
  if manual_dir:
    check_manual_dir(manual_dir)
  with quiet.library_call():  # Before TensorFlow's import: its C++ notices come then.
    return _load_with_tfds(tfds_data_dir, manual_dir)


def _load_with_tfds(tfds_data_dir: str, manual_dir: str) -> dict[str, np.ndarray]:
  logging.info('Loading TensorFlow to read MNIST with TFDS (once: later runs read the partition '
               'cache)')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')  # TF only reads files; keep accelerators for JAX.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  if absl_logging.get_verbosity() < 1:
    tfds.disable_progress_bar()  # Bars of terminal codes, in a log file; one line a step here.

  where = f'{tfds_data_dir or "the TFDS data dir (~/tensorflow_datasets)"}/mnist'
  try:
    builder = tfds.builder('mnist', data_dir=tfds_data_dir or None)
    where = str(pathlib.Path(builder.data_dir).parent)
  except Exception as e:  # A damaged dataset_info.json, among others.
    raise _unreadable(where, e) from None
  prepared = (pathlib.Path(builder.data_dir) / 'dataset_info.json').exists()
  if not prepared and not manual_dir and not _reachable(DOWNLOAD_HOST):
    # TFDS would retry for minutes before giving up.
    raise DataError(f'MNIST is not prepared in {builder.data_dir} and {DOWNLOAD_HOST} cannot be '
                    f'reached (offline?): set data.manual_dir or ${MANUAL_DIR_ENV} to a folder '
                    'with the four official MNIST .gz files')
  config = tfds.download.DownloadConfig(manual_dir=manual_dir or None)
  if not prepared:
    logging.info('Preparing MNIST in %s from %s', builder.data_dir, manual_dir or
                 f'{DOWNLOAD_HOST} (downloading)')
  chatter = io.StringIO()  # TFDS prints its own two lines around the one above.
  try:
    with contextlib.redirect_stdout(chatter if absl_logging.get_verbosity() < 1 else sys.stdout):
      builder.download_and_prepare(download_config=config)
  except Exception as e:  # TFDS raises many kinds; all mean the same to a user.
    raise DataError(f'could not prepare MNIST with TFDS ({type(e).__name__}: {e}). Offline, set '
                    f'data.manual_dir or ${MANUAL_DIR_ENV} to a folder with the four official '
                    'MNIST .gz files') from None
  logging.info('Reading MNIST from %s', builder.data_dir)
  out = {}
  for split in ('train', 'test'):
    try:
      data = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
      images, labels = data['image'][..., 0], data['label'].astype(np.int32)
      counts = tuple(np.bincount(labels, minlength=10).tolist())
    except Exception as e:  # TensorFlow's DataLossError for a damaged record, among others.
      raise _unreadable(where, e) from None
    if images.shape[1:] != (28, 28) or counts != CLASS_COUNTS[split]:
      raise _unreadable(
          where,
          ValueError(f'its {split} split has {len(labels)} images of shape '
                     f'{images.shape[1:]} and digit counts {counts}'))
    out[f'{split}_images'], out[f'{split}_labels'] = images, labels
  return out


def _unreadable(where: str, e: Exception) -> DataError:
  reason = ' '.join(str(e).split())[:200]
  return DataError(f'MNIST as prepared by TFDS in {where} cannot be read ({type(e).__name__}: '
                   f'{reason}): delete that folder (rm -r {where}) and rerun the same command to '
                   'prepare it again')
