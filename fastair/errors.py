"""The errors fastair raises about files, run directories, training and empty batches, each a
sentence that names the file or setting and says what to do. The command line prints
``str(err)`` and exits with ``err.exit_code``; a library user can catch :class:`FastairError`."""

__all__ = ["FastairError", "RunDirBusy", "RunDirError", "RunMismatch", "CheckpointError",
           "WriteError", "TrainingDiverged", "EmptyBatch", "DataFileError"]


class FastairError(Exception):
    """Base class; ``exit_code`` is what the command line exits with."""

    exit_code = 1


class RunDirBusy(FastairError):
    """Another process holds the run directory's lock (its pid is in the message)."""


class RunDirError(FastairError, FileExistsError):
    """The directory holds files of another run, or nothing to resume."""

    exit_code = 2


class RunMismatch(FastairError, ValueError):
    """Resuming or evaluating with other data or model settings than the run was made with."""

    exit_code = 2


class CheckpointError(FastairError):
    """A checkpoint (or JSON file of a run) that cannot be read: truncated, garbage, edited."""


class WriteError(FastairError, OSError):
    """A file could not be written (disk full, permissions); the previous version is intact.

    ``WriteError(errno, message)`` keeps ``errno`` as an attribute but prints the message alone
    (no ``[Errno N]`` prefix: the message names the path and the remedy itself)."""

    def __init__(self, *args):
        if len(args) == 2 and isinstance(args[0], int):
            super().__init__(args[1])
            self.errno = args[0]
        else:
            super().__init__(*args)


class TrainingDiverged(FastairError, FloatingPointError):
    """The bound became non-finite; ``last_good_epoch`` is what ``last.pt`` holds."""

    def __init__(self, message, epoch, last_good_epoch):
        super().__init__(message)
        self.epoch, self.last_good_epoch = epoch, last_good_epoch


class EmptyBatch(FastairError, ValueError):
    """A loss asked of a batch without examples (``B = 0``), whose mean would be NaN."""

    exit_code = 2


class DataFileError(FastairError, ValueError):
    """A data file shipped inside fastair (e.g. ``fastair/data/mnist5k.npz``) whose bytes are not
    the ones released: truncated, edited or damaged; the message gives both SHA-256 digests and
    how to restore the file."""
