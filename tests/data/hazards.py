"""Reading paths that could hang a reader (FIFOs, /dev/zero, link loops) in a child process with a deadline.

A reader that regressed would block on a FIFO's open or read /dev/zero forever; in a child
with an alarm per path and a cap on its memory it fails the test instead of hanging it.
"""

import json
import subprocess
import sys

SECONDS_PER_PATH = 10

_CHILD = """
import importlib, json, os, resource, signal, sys
from kqv.errors import UserError

class Hung(BaseException):  # not an OSError, which a reader may catch
    pass

def hung(*_):
    raise Hung

cases = json.loads(sys.argv[1])
readers = {r: getattr(importlib.import_module(r.split(":")[0]), r.split(":")[1]) for r, *_ in cases.values()}
vm = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
resource.setrlimit(resource.RLIMIT_AS, (vm + 2**30, resource.getrlimit(resource.RLIMIT_AS)[1]))  # /dev/zero: fail
signal.signal(signal.SIGALRM, hung)
results = {}
for key, (reader, *paths) in cases.items():
    signal.alarm(int(sys.argv[2]))
    try:
        readers[reader](*paths)
        results[key] = "read without an error"
    except UserError as exc:
        results[key] = str(exc)
    except Hung:
        results[key] = "hung"
    except MemoryError:
        results[key] = "read until out of memory"
    signal.alarm(0)
print(json.dumps(results))
"""


def read_each(cases: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """{case: the UserError message, or "hung", …} for cases (reader, *paths): reader ("module:function")(*paths)."""
    args = json.dumps({key: [str(p) for p in case] for key, case in cases.items()})
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, args, str(SECONDS_PER_PATH)],
        capture_output=True,
        text=True,
        timeout=60 + SECONDS_PER_PATH * len(cases),
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
