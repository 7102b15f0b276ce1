"""Per-stack file locks so two control-plane workers never run the same Pulumi stack at once.

Pulumi's DIY backends lock a stack during an update, but a second worker would only learn that
from a failed ``up``; holding ``flock(2)`` on ``<lock_dir>/<stack>.lock`` first serialises the
workers on one host (or on a shared filesystem that supports ``flock``).  ``flock`` locks belong to
an open file description, so two threads of one process that open the file separately also
exclude each other.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from control.errors import ProvisioningError

_SAFE = re.compile(r"[^A-Za-z0-9._-]")


class StackLock:
    """Exclusive, per-stack locks under ``lock_dir``.

    Args:
        lock_dir: directory for the lock files (created if missing).
        timeout: how long ``hold`` waits for a busy lock, seconds (a tenant ``pulumi up`` takes
            minutes, so the default is 15 minutes).
        poll: pause between attempts while waiting, seconds.
        sleep, clock: injectable ``time.sleep`` / ``time.monotonic`` (tests).
    """

    def __init__(self, lock_dir: str | os.PathLike, *, timeout: float = 900.0, poll: float = 0.5,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        self.lock_dir = Path(lock_dir)
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        self.timeout = timeout
        self.poll = poll
        self._sleep = sleep
        self._clock = clock

    def path(self, stack: str) -> Path:
        """Return the lock file of ``stack``."""
        return self.lock_dir / f"{_SAFE.sub('_', stack)}.lock"

    @contextlib.contextmanager
    def hold(self, stack: str, timeout: float | None = None) -> Iterator[None]:
        """Hold ``stack``'s lock for the ``with`` block.

        Raises:
            ProvisioningError: the lock stayed busy for ``timeout`` seconds.
        """
        deadline = self._clock() + (self.timeout if timeout is None else timeout)
        fd = os.open(self.path(stack), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if self._clock() >= deadline:
                        raise ProvisioningError(
                            f"stack {stack} is busy: another worker holds its lock"
                        ) from None
                    self._sleep(self.poll)
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def is_held(self, stack: str) -> bool:
        """Return whether some worker currently holds ``stack``'s lock (a non-blocking probe)."""
        path = self.path(stack)
        if not path.exists():
            return False
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)
