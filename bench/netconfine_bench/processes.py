"""Time one whole process: wall clock and the peak RSS of its process tree.

CPU time is ``ru_utime + ru_stime`` of the same rusage: unlike wall time it
barely moves when other work competes for the CPUs, so its ratios are the
steadier check on a busy machine.

The peak RSS is ``ru_maxrss`` of the rusage ``wait4`` returns for the child: the
largest resident set of the child and every descendant it waited for (for
``ansible-playbook``: the controller, its forks, and the module processes on
the netns "hosts") - the same figure ``/usr/bin/time -v`` prints as
"Maximum resident set size".
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import tempfile
import threading
import time


@dataclasses.dataclass
class Timed:
    argv: list
    rc: int
    seconds: float
    max_rss_kb: int
    output: str
    cpu_seconds: float = 0.0   # user + system of the process and every descendant it waited for

    def check(self) -> "Timed":
        if self.rc != 0:
            raise RuntimeError("%s -> rc %d\n%s" % (" ".join(self.argv), self.rc, self.output[-4000:]))
        return self


def timed(argv, data: str | None = None, env: dict | None = None, cwd: str | None = None,
          timeout: float = 3600) -> Timed:
    """Run ``argv`` (stdin ``data``) to completion; stdout+stderr kept in ``output``."""
    with tempfile.TemporaryFile(mode="w+b") as out, tempfile.TemporaryFile(mode="w+b") as inp:
        if data is not None:
            inp.write(data.encode())
            inp.seek(0)
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=inp if data is not None else subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
        killer = threading.Timer(timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
        killer.start()
        try:
            _pid, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; keep Popen from waiting again
        out.seek(0)
        text = out.read().decode(errors="replace")
    return Timed(list(argv), proc.returncode, seconds, usage.ru_maxrss, text, usage.ru_utime + usage.ru_stime)
