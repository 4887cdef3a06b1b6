"""Writing results safely, and telling the user what went wrong in one line.

Everything the package writes for users (prepared datasets, checkpoints, reports, release folders, predictions)
goes through these helpers:

- `atomic_write(path, data)` / `atomic_folder(folder)`: a file or a folder appears complete, or not at all. It is
  written to a temporary sibling `.<name>.tmp-<pid>-<random>` and renamed into place; on an error the temporary
  is removed, and an OSError of the disk (full, read-only, no permission) names the target, not the temporary.
- `clean_stale_temporaries(folder)`: removes the temporaries that an interrupted save (a killed process) left
  behind: only names of the form above whose process is gone, never anything else.
- `OutputFolder`: the one guard of every command that writes an output folder (see its docstring): it refuses an
  output folder that is a file, contains an input or lies inside one, cannot be written, or holds something that
  hf_mmkd did not write; with `--overwrite` it replaces only what hf_mmkd wrote there, which a small manifest
  (`MANIFEST`) in the folder records. `check()` runs before any expensive work.
- `OutputFile`: the same rules for a command's single output file (`hf-mmkd predict --out FILE`): never a folder
  or an input; an existing FILE is replaced only with `--overwrite` and only if hf_mmkd wrote it (listed in the
  manifest of FILE's folder).
- `run_lock(folder)`: a second `train.py` run into a busy output folder is refused at start (an `flock` on the
  folder, which the kernel releases when a run dies, so a killed run never leaves it stuck).
- The provenance record (`write_provenance`, `read_provenance`, `provenance_differences`): what produced a trained
  model (its arguments and a fingerprint of its training data), saved with it as `PROVENANCE_FILE`.
- `USER_ERRORS`, `error_message`, `run_main`: how a command turns a user error into one line on stderr and a
  non-zero exit status instead of a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MANIFEST = ".hf_mmkd_outputs.json"  # {"version": 1, "entries": {name: command}}: what hf_mmkd wrote in a folder
PROVENANCE_FILE = "hf_mmkd_provenance.json"  # saved inside a trained model's folder (not shipped to the Hub)
RUN_INFO = ".hf_mmkd_run.json"  # who holds the run lock of a folder (pid, command); informative only
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)-[A-Za-z0-9_]+$")
# Errors of the disk rather than of the data: reported as "cannot write <target>: <reason>".
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}
_REASONS = {errno.ENOSPC: "no space left on the device (disk full)", errno.EDQUOT: "disk quota exceeded",
            errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
            errno.EPERM: "operation not permitted", errno.EFBIG: "file too large for the file system"}

# The exceptions that mean "bad input or environment" (a ValueError names the input; an OSError the file): the
# commands print them as one line. Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, OSError, KeyError)


class OutputFolderError(ValueError):
    """An output folder that a command must not write (is a file, holds an input or foreign files, read-only)."""


class RunLockError(ValueError):
    """The output folder is in use by another run."""


# ------------------------------------------------------------------------------------------ atomic writes


def _write_error(err: OSError, target: Path) -> OSError:
    """`err` re-raised naming the target (not the temporary) when it is an error of the disk."""
    if err.errno not in _WRITE_ERRNOS:
        return err
    reason = _REASONS.get(err.errno, err.strerror or str(err))
    return OSError(err.errno, f"cannot write {target}: {reason}; nothing was written there")


def atomic_write(path: str | os.PathLike, data: str | bytes | Any) -> Path:
    """Write `data` (text, bytes, or a callable taking a binary file object) to `path` atomically."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-{os.getpid()}-")
    except OSError as err:
        raise _write_error(err, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except OSError as err:
        _remove(Path(tmp))
        raise _write_error(err, path) from None
    except BaseException:
        _remove(Path(tmp))
        raise
    return path


@contextmanager
def atomic_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of `folder` to fill. When the block ends without an error the sibling is
    renamed to `folder` (an older `folder` is replaced only then, and restored if the rename fails); on an error
    it is removed."""
    folder = Path(folder)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-{os.getpid()}-"))
    except OSError as err:
        raise _write_error(err, folder) from None
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        if folder.exists():
            old = folder.parent / f".{folder.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            folder.rename(old)
            try:
                tmp.rename(folder)
            except BaseException:
                old.rename(folder)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(folder)
    except OSError as err:
        raise _write_error(err, folder) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def clean_stale_temporaries(folder: str | os.PathLike, names: Iterable[str] | None = None) -> list[Path]:
    """Remove the temporaries of `atomic_write` / `atomic_folder` in `folder` whose process is gone (a save
    interrupted by a kill), optionally only those of the targets `names`; returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    wanted = None if names is None else set(names)
    removed = []
    for entry in folder.iterdir():
        match = _TEMPORARY.match(entry.name)
        if match is None or (wanted is not None and match["name"] not in wanted):
            continue
        if not _process_alive(int(match["pid"])):
            _remove(entry)
            removed.append(entry)
    return removed


def parse_yaml(text: str, name: str) -> Any:
    """`yaml.safe_load(text)`; invalid YAML raises a one-line ValueError "<name> is not valid YAML: <problem> (line
    L, column C)" (`name` says what the text is: a file, a card's front matter)."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(err, "problem", None) or " ".join(str(err).split())
        raise ValueError(f"{name} is not valid YAML: {problem}{where}") from None


def read_json(path: str | os.PathLike, name: str | None = None) -> Any:
    """The parsed JSON file at `path`; invalid JSON (or text that is not UTF-8) raises a ValueError naming the
    file (`name`, default the path)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{name or path} is not valid JSON: {err}") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{name or path} is not UTF-8 text (a JSON file was expected): {err.reason}") from None


# ------------------------------------------------------------------------------------------ the guard


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(os.path.expanduser(str(path))))


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


class OutputFolder:
    """The output folder of one command, and the rules every command follows when it writes there.

    Two kinds of output:
    - `outputs=None`: the folder IS the command's output (a prepared data set, a release folder). It must be
      absent or empty; a non-empty one needs `overwrite`, and then every entry in it must be one that hf_mmkd
      wrote (listed in its `MANIFEST`): the whole folder is replaced atomically by `write()`.
    - `outputs=[names]`: the command writes these entries into a folder that may hold other things (a report
      folder, a training run). An entry that exists must be one that hf_mmkd wrote (in the manifest); it is
      then replaced, and nothing else in the folder is touched. `record(name)` adds an entry to the manifest
      before it is written.

    For both, `check()` (call it before any expensive work; `write()` and `record()` call it again) refuses an
    output path that is a file, is or contains one of `inputs` or lies inside one, or cannot be written (a
    read-only or foreign folder), and removes the temporaries that an interrupted save left behind.
    `command` names the command in messages and in the manifest; `flag` names the output in messages.
    """

    def __init__(self, path: str | os.PathLike, command: str, *, inputs: Iterable[str | os.PathLike | None] = (),
                 outputs: Sequence[str] | None = None, overwrite: bool = False, flag: str = "output folder"):
        self.path = Path(path)
        self.command = command
        self.inputs = [Path(p) for p in inputs if p is not None and str(p) != ""]
        self.outputs = None if outputs is None else list(outputs)
        self.overwrite = overwrite
        self.flag = flag

    # ---- rules
    def check(self) -> Path:
        """Apply the rules (see the class docstring); return the folder's path."""
        out = self.path
        if out.exists() and not out.is_dir():
            raise OutputFolderError(f"{self.flag} {out} exists and is not a folder")
        self._check_inputs()
        self._check_writable()
        if self.outputs is None:  # the temporaries of this folder's own earlier saves, beside it
            clean_stale_temporaries(out.parent, [out.name])
        else:  # every hf_mmkd temporary of a dead process inside the folder
            clean_stale_temporaries(out)
        if self.outputs is None:
            self._check_whole()
        else:
            for name in self.outputs:
                self._check_entry(name)
        return out

    def _check_inputs(self) -> None:
        out = _real(self.path)
        for given in self.inputs:
            if not given.exists():
                continue  # e.g. a Hub id, or "demo"
            inp = _real(given)
            if _inside(inp, out):
                what = "is" if inp == out else "contains"
                raise OutputFolderError(f"{self.flag} {self.path} {what} the input {given}: {self.command} never "
                                        "writes where its inputs are; choose another output folder")
            if inp.is_dir() and _inside(out, inp):
                raise OutputFolderError(f"{self.flag} {self.path} lies inside the input {given}: {self.command} "
                                        "never writes into its inputs; choose another output folder")

    def _check_writable(self) -> None:
        """Create and remove a probe file in the folder (or in its nearest existing parent, without creating the
        folder): `os.access` cannot tell a read-only file system, and root passes every permission check."""
        probe_in = self.path.parent if self.outputs is None else self.path  # where the first write goes
        while not probe_in.exists():
            if probe_in.parent == probe_in:
                break
            probe_in = probe_in.parent
        if not probe_in.is_dir():
            raise OutputFolderError(f"{self.flag} {self.path} cannot be created: {probe_in} is not a folder")
        try:
            fd, probe = tempfile.mkstemp(dir=probe_in, prefix=f".hf_mmkd-probe.tmp-{os.getpid()}-")
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            reason = _REASONS.get(err.errno, err.strerror or str(err))
            raise OutputFolderError(f"{self.flag} {self.path} cannot be written ({probe_in}: {reason})") from None

    def manifest(self) -> dict[str, str]:
        """`{entry name: command}` of what hf_mmkd wrote in the folder (empty when it has no manifest)."""
        path = self.path / MANIFEST
        if not path.is_file():
            return {}
        data = read_json(path, f"the output manifest {path}")
        entries = data.get("entries") if isinstance(data, dict) else None
        if not isinstance(entries, dict):
            raise OutputFolderError(f"the output manifest {path} is not one that hf_mmkd writes (no 'entries')")
        return {str(k): str(v) for k, v in entries.items()}

    def _foreign(self, names: Iterable[str]) -> list[str]:
        own = self.manifest()
        return sorted(n for n in names if n != MANIFEST and n not in own)

    def _check_whole(self) -> None:
        out = self.path
        if not out.is_dir():
            return
        entries = [p.name for p in out.iterdir() if p.name != MANIFEST and not _TEMPORARY.match(p.name)]
        if not entries:
            return
        if not self.overwrite:
            raise OutputFolderError(f"{self.flag} {out} is not empty; pass --overwrite to replace what hf_mmkd "
                                    "wrote there")
        foreign = self._foreign(entries)
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise OutputFolderError(f"{self.flag} {out} holds {shown}, which hf_mmkd did not write (not in its "
                                    f"{MANIFEST}); --overwrite replaces only what hf_mmkd wrote: move them away or "
                                    "choose another folder")

    def _check_entry(self, name: str) -> None:
        target = self.path / name
        if (target.exists() or target.is_symlink()) and self._foreign([name]):
            raise OutputFolderError(f"{target} exists and was not written by hf_mmkd (it is not listed in "
                                    f"{self.path / MANIFEST}); move it away or choose another {self.flag}")

    # ---- writing
    @contextmanager
    def write(self) -> Iterator[Path]:
        """Whole-folder outputs: yield a temporary folder to fill; at the end the manifest is added and the
        folder renamed into place (replacing the old one, which `check()` has just found to be hf_mmkd's)."""
        if self.outputs is not None:
            raise TypeError("write() is for whole-folder outputs (outputs=None); use record() for entries")
        self.check()
        with atomic_folder(self.path) as tmp:
            yield tmp
            entries = {p.name: self.command for p in tmp.iterdir() if p.name != MANIFEST}
            atomic_write(tmp / MANIFEST, json.dumps({"version": 1, "entries": entries}, indent=1) + "\n")
            self.check()  # again: someone may have written there meanwhile

    def record(self, *names: str) -> None:
        """Entries outputs: check `names` and add them to the manifest (before they are written)."""
        for name in names:
            self._check_entry(name)
        entries = {**self.manifest(), **{n: self.command for n in names}}
        atomic_write(self.path / MANIFEST, json.dumps({"version": 1, "entries": entries}, indent=1) + "\n")


class OutputFile:
    """The output file of one command (`hf-mmkd predict --out FILE`): `OutputFolder`'s rules for a single file.

    FILE must not be a folder, nor be or lie inside one of `inputs`. An existing FILE is replaced only when hf_mmkd
    wrote it (it is listed in the `MANIFEST` of its folder, as `OutputFolder` records entries) and `overwrite` is
    set; a file that hf_mmkd did not write is never replaced, `overwrite` or not. The folder of FILE must be
    writable. `check()` applies the rules (call it before any expensive work); `write(data)` checks again, records
    FILE in the manifest and writes it atomically.
    """

    def __init__(self, path: str | os.PathLike, command: str, *, inputs: Iterable[str | os.PathLike | None] = (),
                 overwrite: bool = False, flag: str = "output file"):
        self.path = Path(path)
        self.command = command
        self.inputs = [Path(p) for p in inputs if p is not None and str(p) != ""]
        self.overwrite = overwrite
        self.flag = flag
        # The folder holding FILE: its problems (a file, read-only) are reported as the folder of `flag FILE`.
        self.folder = OutputFolder(self.path.parent, command, outputs=[self.path.name],
                                   flag=f"{flag} {self.path}: its folder")

    def check(self) -> Path:
        """Apply the rules (see the class docstring); return the file's path."""
        path, flag = self.path, self.flag
        if path.is_dir():
            raise OutputFolderError(f"{flag} {path} is a folder; give the path of the file to write")
        for given in self.inputs:
            if given.exists() and _inside(_real(path), _real(given)):
                what = "is" if _real(path) == _real(given) else "lies inside"
                raise OutputFolderError(f"{flag} {path} {what} the input {given}: {self.command} never writes over "
                                        "or into its inputs; choose another file")
        if path.exists() or path.is_symlink():
            writer = self.folder.manifest().get(path.name)
            if writer is None:
                raise OutputFolderError(f"{flag} {path} exists and was not written by hf_mmkd (it is not listed in "
                                        f"{path.parent / MANIFEST}); hf_mmkd never replaces it, even with "
                                        "--overwrite: move it away or choose another file")
            if not self.overwrite:
                raise OutputFolderError(f"{flag} {path} exists (written by {writer}); pass --overwrite to replace it")
        self.folder.check()  # the folder: not a file, writable; stale temporaries of hf_mmkd removed
        return path

    def write(self, data: str | bytes | Any) -> Path:
        """Check again, record FILE in its folder's manifest, then `atomic_write(FILE, data)`."""
        self.check()
        self.folder.record(self.path.name)
        return atomic_write(self.path, data)


# ------------------------------------------------------------------------------------------ the run lock


@contextmanager
def run_lock(folder: str | os.PathLike, command: str = "train.py") -> Iterator[Path]:
    """Hold an exclusive lock on `folder` (created if needed) for the duration of the block.

    The lock is `flock` on the folder itself: a second run into the same folder is refused at once
    (`RunLockError` naming the holder's pid), and the kernel releases it when the holder exits or is killed,
    so a killed run never leaves the folder locked.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY)
    except OSError as err:
        raise _write_error(err, folder) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = ""
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                info = json.loads((folder / RUN_INFO).read_text(encoding="utf-8"))
                holder = f" (process {int(info['pid'])}, {info['command']})"
            raise RunLockError(f"{folder} is in use by another run{holder}: wait for it to finish, or write to "
                               f"another output folder") from None
        with contextlib.suppress(OSError):
            atomic_write(folder / RUN_INFO, json.dumps({"pid": os.getpid(), "command": command}) + "\n")
        try:
            yield folder
        finally:
            with contextlib.suppress(OSError):
                (folder / RUN_INFO).unlink()
    finally:
        os.close(fd)  # releases the lock


# ------------------------------------------------------------------------------------------ provenance


def write_provenance(folder: str | os.PathLike, record: Mapping[str, Any]) -> Path:
    """Save `record` (JSON-able: what produced the model in `folder`) as `folder/PROVENANCE_FILE`."""
    return atomic_write(Path(folder) / PROVENANCE_FILE, json.dumps(record, indent=2, sort_keys=True) + "\n")


def read_provenance(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The provenance record saved with the model in `folder`, or None when it has none."""
    path = Path(folder) / PROVENANCE_FILE
    if not path.is_file():
        return None
    data = read_json(path, f"the provenance record {path}")
    if not isinstance(data, dict):
        raise ValueError(f"the provenance record {path} is not a JSON object")
    return data


def provenance_differences(recorded: Mapping[str, Any], wanted: Mapping[str, Any],
                           sections: Sequence[str]) -> list[str]:
    """`"<section>.<key>: <recorded> -> <wanted>"` for each value of `sections` that differs between a saved
    record and the one a run would write (compared as JSON, so 1 and 1.0 are equal)."""
    wanted = json.loads(json.dumps(wanted))
    out = []
    for section in sections:
        old, new = recorded.get(section) or {}, wanted.get(section) or {}
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                out.append(f"{section}.{key}: {_short(old.get(key))} -> {_short(new.get(key))}")
    return out


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ------------------------------------------------------------------------------------------ user errors


def error_message(err: BaseException) -> str:
    """One line for a user error: the exception's text (a KeyError's message without its quotes, an OSError's
    reason and file), newlines folded."""
    if isinstance(err, KeyError) and err.args:
        text = str(err.args[0])
    elif isinstance(err, OSError) and err.strerror and err.filename is not None:
        reason = _REASONS.get(err.errno, err.strerror)
        text = f"{err.filename}: {reason}"
    elif isinstance(err, OSError) and err.strerror:
        text = err.strerror
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


def run_main(prog: str, main: Callable[..., int | None], *args: Any) -> int:
    """`main(*args)`, with a user error (`USER_ERRORS`) printed as `<prog>: error: <message>` on stderr and exit
    status 1 instead of a traceback; the exit status otherwise."""
    try:
        return int(main(*args) or 0)
    except USER_ERRORS as err:
        print(f"{prog}: error: {error_message(err)}", file=sys.stderr)
        return 1
