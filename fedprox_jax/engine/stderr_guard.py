"""The stderr of a run's process, when it is one of several, goes through a small process of its
own: JAX aborts a process whose coordinator is gone (its agent's check failure, with a C++ dump of
the stack and Python's dump of the threads) before Python can say anything; the guard passes every
line on (a moment later) and puts one line in place of such a dump.
"""
import os
import signal
import subprocess
import sys

# The guard's program (run by `python -S`), given the process's index: it reads the process's
# stderr on its stdin and writes to the terminal's stderr.
_GUARD = r'''
import os, re, select, sys, time
index = sys.argv[1]
fatal = re.compile(rb'^(F\d{4} \d\d:\d\d:\d\d|\*\*\* Check failure|terminate called|'
                   rb'Fatal Python error)')
rerun = 'rerun the same command to resume from the last checkpoint'
pending, dump, rest, said = [], None, b'', False

def write(line):
  global said
  said = said or line.startswith(b'error')
  os.write(1, line)

def one_line(dump):
  text = ' '.join(dump.decode(errors='replace').split())
  if 'stopped sending heartbeats' in text:
    tasks = re.search(r'stopped sending heartbeats\): ([\d ,]+)', text)
    who = f'process {tasks.group(1).strip()}' if tasks else 'a process'
    return (f'error: another process of the run stopped ({who} sent no heartbeat: stopped, hung, '
            f'or its host or network lost): {rerun}')
  if 'coordination service' in text and ('Failed to send RPC' in text or 'leader' in text):
    return ('error: another process of the run stopped (process 0, the coordinator, is gone: '
            f'killed, crashed, or its host or network lost): {rerun}')
  message = text.split('] ', 1)[-1][:200]
  return f'error: JAX aborted process {index} of the run ({message}): {rerun}'

while True:
  now = time.monotonic()
  wait = max(0.0, pending[0][0] + 0.1 - now) if pending else None
  ready, _, _ = select.select([0], [], [], wait)
  chunk = os.read(0, 65536) if ready else b''
  if ready and not chunk:
    break
  rest += chunk
  *lines, rest = rest.split(b'\n')
  now = time.monotonic()
  for line in lines:
    line += b'\n'
    if dump is not None:
      dump += line
    elif fatal.match(line):
      dump, pending = line, []  # Its preamble (JAX's notes on the error) goes with it.
    else:
      pending.append((now, line))
  while pending and now - pending[0][0] >= 0.1:
    write(pending.pop(0)[1])
if dump is None:
  for _, line in pending:
    write(line)
  if rest:
    write(rest)
elif not said:
  write((one_line(dump) + '\n').encode())
'''


def guard_stderr(index: int) -> None:
  """Sends this process's stderr (Python's and C++'s) through the guard (above), which ignores
  Ctrl-C and SIGTERM (they are the run's to act on) and ends when this process does."""
  if os.name != 'posix' or guarded:
    return
  flush()
  read, write = os.pipe()
  stops = (signal.SIGINT, signal.SIGTERM)
  handlers = [signal.signal(signum, signal.SIG_IGN) for signum in stops]  # Inherited, ignored.
  try:
    guarded.append(
        subprocess.Popen(  # pylint: disable=consider-using-with
            [sys.executable, '-S', '-c', _GUARD, str(index)],
            stdin=read,
            stdout=2,
            close_fds=True))
  finally:
    for signum, handler in zip(stops, handlers):
      signal.signal(signum, handler)
  os.close(read)
  os.dup2(write, 2)
  os.close(write)


guarded: list[subprocess.Popen] = []  # The guard, once started.


def flush() -> None:
  """Writes out what Python holds of stdout and stderr (before their file is replaced or closed)."""
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, ValueError):
      pass
