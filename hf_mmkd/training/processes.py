"""Several processes (DDP, several machines): a user error found by any one process stops all of them."""

from __future__ import annotations

from hf_mmkd.io import (
    USER_ERRORS,
    RunLockError,
    error_message,
)
from hf_mmkd.trainer import MMKDTrainingArguments


def agree(args: MMKDTrainingArguments, error: str | Exception | None) -> None:
    """Raise `error` on every process, so that no rank trains alone and none waits for the others for ever: a busy
    folder (a string, found by the main process) as a RunLockError, a user error found by any one process (a data
    set or backbone one machine cannot read) as that error, named by the process that found it on the others."""
    if args.world_size > 1:
        from accelerate.utils import gather_object

        lock = isinstance(error, str)
        mine = None if error is None else (lock, error if lock else error_message(error))
        found = [(i, e) for i, e in enumerate(gather_object([mine])) if e is not None]
        if found and error is None:
            i, (lock, message) = found[0]
            error = message if lock else ValueError(f"process {i} of {args.world_size}: {message}")
    if isinstance(error, str):
        raise RunLockError(error)
    if error is not None:
        raise error


def on_every_process(args: MMKDTrainingArguments, fn, *fn_args):
    """`fn(*fn_args)`, where a user error on any one process stops every process (`agree`): what each machine reads
    from its own disk (the data set, the backbones) may be missing on one of them."""
    try:
        result, error = fn(*fn_args), None
    except USER_ERRORS as err:
        result, error = None, err
    agree(args, error)
    return result
