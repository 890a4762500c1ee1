"""Failpoints: named places where a test can make this process die abruptly (SIGKILL).

Crash-recovery tests set ``COPYHUNT_FAILPOINTS=name[:detail],...`` in a subprocess's environment;
when execution reaches a matching ``failpoint(name, detail)`` the process kills itself with
SIGKILL, exactly like an OOM kill or a lost worker, with no cleanup and no exception handlers.
Unset (always, in production) it costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "COPYHUNT_FAILPOINTS"


def failpoint(name: str, detail: str = "") -> None:
    armed = os.environ.get(ENV)
    if not armed:
        return
    for spec in armed.split(","):
        want, _, want_detail = spec.strip().partition(":")
        if want == name and (not want_detail or want_detail == detail):
            os.kill(os.getpid(), signal.SIGKILL)
