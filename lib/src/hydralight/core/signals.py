"""The signals that stop a run, each with its line and its documented exit code, at any moment of the run.

Inside Lightning's stages (fit, test) Lightning turns SIGTERM into a stop at the next batch, where Preemption saves a
checkpoint: exit 75, and the same command continues. Outside them (start-up, between training and its test)
Lightning has no handler installed and SIGTERM would kill the process with no line (exit 143). While a run lives
(`stops_cleanly`), SIGTERM and SIGHUP (the terminal that started it closed) are handled here: inside a stage they are
left to Lightning (SIGHUP as the SIGTERM Lightning listens for); outside one they stop the run at once with the
same exit 75 and a line saying what is on disk. SIGKILL cannot be caught: a run killed -9 exits 137 with no line
(resume=auto continues it), and so do the other ranks of a DDP run whose rank died (Lightning's launcher kills them).
"""

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from types import FrameType

from hydralight.core.errors import Preempted

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextlib.contextmanager
def stops_cleanly(what_is_saved: Callable[[], str]) -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP end the run with Preempted (exit 75) whatever it is doing;
    `what_is_saved()` says in the line what the next run of the same command continues from."""

    def stop(signum: int, frame: FrameType | None) -> None:
        if signal.getsignal(signal.SIGTERM) is not stop:  # a Lightning stage: its handler stops at the next batch
            if signum != signal.SIGTERM:
                os.kill(os.getpid(), signal.SIGTERM)  # Lightning listens for SIGTERM only
            return
        raise Preempted(f"stopped by {signal.Signals(signum).name}. {what_is_saved()}")

    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    for signum in STOP_SIGNALS:
        signal.signal(signum, stop)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
