"""Exceptions that end a run with a documented exit code and one clear line instead of a traceback.

Exit codes: 0 finished, 1 internal error (with traceback), 2 user error, 3 training diverged (non-finite loss or
gradient), 4 an exported file does not compute what its checkpoint does (export.py), 74 the disk is full (what is on
disk is intact), 75 preempted (a checkpoint was saved: re-run the same command to continue), 130 interrupted (Ctrl-C).
"""


class RunStopped(Exception):
    """Base: the CLI prints `<prefix>: <message>` on stderr and exits with `exit_code`, no traceback."""

    exit_code = 1
    prefix = "error"


class UserError(RunStopped):
    """A bad override, value or file given by the user. The message names the key, the value and what is valid."""

    exit_code = 2


class TrainingDiverged(RunStopped):
    """The loss or the gradients became NaN/inf; the checkpoints already written are the last good ones."""

    exit_code = 3


class DiskFull(RunStopped):
    """A write failed for want of space (a full disk, a quota): what was already on disk is intact (every file is
    written whole or not at all), so the same command continues once there is space."""

    exit_code = 74  # EX_IOERR


class Preempted(RunStopped):
    """SIGTERM/SIGUSR1 arrived: a checkpoint was saved, and re-running the same command continues from it."""

    exit_code = 75  # EX_TEMPFAIL: "try again later"
    prefix = "preempted"


class Interrupted(RunStopped):
    """Ctrl-C (SIGINT) during training or testing; the message says how to continue from the checkpoints on disk."""

    exit_code = 130  # 128 + SIGINT, what a shell reports for a program Ctrl-C stopped
    prefix = "interrupted"


def choices_message(key: str, value: object, valid: object) -> str:
    """The house wording for a value outside a fixed set of choices."""
    valid_list = ", ".join(str(v) for v in valid)
    return f"{key}={value!r} is not valid. Choose one of: {valid_list}"
