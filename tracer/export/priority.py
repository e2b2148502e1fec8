"""The export process gives way: it runs at the lowest CPU priority while it keeps up.

Encoding spans is background work.  When every CPU is busy, an export process at normal
priority takes turns with the server it traces, and each turn it takes is latency added to a
handshake or a message — the very figures the trace is there to show.  So on Linux the export
process runs under ``SCHED_IDLE`` (sched(7)): the kernel gives it a CPU that nothing else
wants, and a server thread that wakes up takes that CPU back at once.

Nothing is lost for it:

- when the export process falls behind — the server has waited :data:`BEHIND_AFTER_S` for room
  in the pipe (:class:`ChildPipe`) — the server puts it back at normal priority, and it stays
  there until it has read everything waiting (:func:`settle`); then it gives way again;
- when the server waits for it (a flush, the shutdown), it runs at normal priority too.

Leaving ``SCHED_IDLE`` takes ``CAP_SYS_NICE`` or an ``RLIMIT_NICE`` of 20 (sched(7)).  A process
that could not leave it never enters it (:func:`can_give_way`) and runs as it always did, as on
systems without ``SCHED_IDLE``.
"""

from __future__ import annotations

import os
import select
import struct
import sys
import threading
import time

BEHIND_AFTER_S = 0.05
"""How long a write may wait for room in the pipe before the export process counts as behind:
one chunk takes it a few milliseconds to read and write out when it gets a CPU."""

_INT = struct.Struct("i")
_SUPPORTED = sys.platform.startswith("linux") and hasattr(os, "SCHED_IDLE")


def can_give_way() -> bool:
    """Whether this process may run its export work under ``SCHED_IDLE`` and come back.

    Tried on a thread of its own (a thread's policy is its own on Linux): one that enters
    ``SCHED_IDLE`` and cannot leave it ends, and takes the policy with it."""
    if not _SUPPORTED:
        return False
    outcome: list[bool] = []

    def attempt() -> None:
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
            outcome.append(True)
        except OSError:
            outcome.append(False)

    probe = threading.Thread(target=attempt, name="wstrace-priority-probe")
    probe.start()
    probe.join()
    return outcome == [True]


def give_way(pid: int = 0) -> None:
    """Run ``pid``'s thread (the calling one for 0) only on a CPU nothing else wants."""
    os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))


def take_turns(pid: int = 0) -> bool:
    """Back to normal priority; False if ``pid`` is gone or may not be changed."""
    try:
        os.sched_setscheduler(pid, os.SCHED_OTHER, os.sched_param(0))
    except OSError:
        return False
    return True


def gives_way(pid: int = 0) -> bool:
    """Whether ``pid``'s thread runs under ``SCHED_IDLE`` now."""
    return _SUPPORTED and os.sched_getscheduler(pid) == os.SCHED_IDLE


def waiting_bytes(fd: int) -> int:
    """Bytes written to the pipe ``fd`` (either end) and not read yet (Linux)."""
    import fcntl  # POSIX only: imported where the policy exists
    import termios

    return int(_INT.unpack(fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0])


def settle(fd: int) -> None:
    """In the export process, before it waits for its next message on ``fd``: caught up (the
    pipe is empty), it gives way again, if it was put back at normal priority.  A system that
    refuses (a sandbox's syscall filter) leaves it at the priority it has: never a reason to
    stop exporting."""
    try:
        if waiting_bytes(fd) == 0 and not gives_way():
            give_way()
    except OSError:
        pass


class ChildPipe:
    """The server's end of the pipe to an export process that gives way (or not: ``pid`` 0).

    A write that waits :data:`BEHIND_AFTER_S` for room puts the export process back at normal
    priority (:meth:`catch_up`) and then waits as long as it takes, as a blocking write would.
    """

    def __init__(self, fd: int, pid: int) -> None:
        self.fd = fd
        self.pid = pid
        """The export process, when it gives way (else 0: writes simply block)."""
        self.fell_behind = 0
        """How many times it fell behind and was put back at normal priority."""
        self._poll: select.poll | None = None
        if pid:
            os.set_blocking(fd, False)
            self._poll = select.poll()  # no limit on the descriptor's number, unlike select()
            self._poll.register(fd, select.POLLOUT)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        waited_since: float | None = None
        behind = False
        while view:
            try:
                view = view[os.write(self.fd, view) :]
                continue
            except BlockingIOError:
                pass
            assert self._poll is not None  # only a non-blocking descriptor gets here
            if behind:
                self._poll.poll()  # as long as it takes (a reader that is gone wakes it too)
                continue
            if waited_since is None:
                waited_since = time.monotonic()
            left = BEHIND_AFTER_S - (time.monotonic() - waited_since)
            if left > 0 and self._poll.poll(left * 1000):
                continue
            behind = True
            if self.catch_up():
                self.fell_behind += 1

    def catch_up(self) -> bool:
        """The export process runs at normal priority until it has read what waits (the
        server waits for it); False if it does not give way, or is gone."""
        return bool(self.pid) and take_turns(self.pid)
