"""Writing files so that a kill, a full disk or a reader never sees half of one."""
import os
import pathlib


def write_atomically(path: pathlib.Path, content: str | bytes) -> None:
  """Writes `content` to `path`: readers (and a kill) see the old file or the new, never half of
  one; a failed write leaves the old file and no temporary one."""
  tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
  try:
    with open(tmp, 'wb') as f:
      f.write(content.encode() if isinstance(content, str) else content)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise
