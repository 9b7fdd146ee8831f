"""Stop with `make`: the supervisor is exec'd by make's recipe, so make is its parent.

- SIGTERM to make: make forwards it to its child (us) and waits; our handler stops the stack.
- make killed (SIGKILL): the kernel sends us SIGTERM (PR_SET_PDEATHSIG), same path.
- SIGINT to make alone (`kill -INT <make>`, not Ctrl-C, which reaches the whole foreground group):
  make forwards nothing and waits for its children forever. What changes is visible, though: make's
  handler resets the signal to its default action before waiting, so /proc/<make>/status no longer
  lists it among the caught signals (SigCgt). `ParentWatch.parent_is_stopping()` notices that.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from .services import set_parent_death_signal

WATCHED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def caught_signals(pid: int) -> set[int]:
    """The signals process `pid` has a handler for, from /proc (empty if it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return set()
    for line in status.splitlines():
        if line.startswith("SigCgt:"):
            mask = int(line.split()[1], 16)
            return {sig for sig in range(1, 65) if mask & (1 << (sig - 1))}
    return set()


class ParentWatch:
    """Remembers our parent and the watched signals it catches now; later answers whether it has
    died or stopped catching one of them (it is on its way out)."""

    def __init__(self) -> None:
        self.parent = os.getppid()
        set_parent_death_signal(signal.SIGTERM)
        self.watched = caught_signals(self.parent) & set(WATCHED)

    def parent_is_stopping(self) -> bool:
        if os.getppid() != self.parent:  # reparented: it died before the death signal was armed
            return True
        return not self.watched <= caught_signals(self.parent)
