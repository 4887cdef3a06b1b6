"""Writing results safely, and telling the user what went wrong in one line.

Everything the package writes for users (prepared datasets, checkpoints, reports, release folders, predictions)
goes through these helpers:

- `atomic_write(path, data)` / `atomic_folder(folder)`: a file or a folder appears complete, or not at all. It is
  written to a temporary sibling `.<name>.hf_mmkd-tmp-<pid>-<token>` and renamed into place; on an error the
  temporary is removed, and an OSError of the disk (full, read-only, no permission) names the target, not the
  temporary. `atomic_write_all({path: data})`: several files that appear all together or none of them (a report).
- `clean_stale_temporaries(folder)`: removes the temporaries that an interrupted save (a killed process) left
  behind. Only names that hf_mmkd provably made are removed: the `<token>` is 8 random hex digits plus 8 hex
  digits of a SHA-256 over the target's name, the pid and the random part (`_token`), so a user's
  `.zshrc.old-2019-backup` or `.photos.tmp-4242-summer` never matches, whatever process 4242 does.
- `atomic_folder` replaces an existing folder only when hf_mmkd wrote every file in it: each folder it writes
  records its files in its own `MANIFEST` (`files`), and a file that is not listed there (a user's notes put
  into `student/` or `OUT_DIR/data/`) makes it refuse, naming the file. It never replaces a symbolic link or a file.
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
import hashlib
import shutil
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MANIFEST = ".hf_mmkd_outputs.json"  # {"version": 1, "entries": {name: command}, "files": [relative paths]}
MANIFEST_LOCK = ".hf_mmkd_outputs.lock"  # exists while a command updates a folder's MANIFEST (`manifest_lock`)
PROVENANCE_FILE = "hf_mmkd_provenance.json"  # saved inside a trained model's folder (not shipped to the Hub)
RUN_INFO = ".hf_mmkd_run.json"  # who holds the run lock of a folder (pid, command); informative only
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.hf_mmkd-(?P<kind>tmp|old)-(?P<pid>\d{1,10})-(?P<rand>[0-9a-f]{8})"
                        r"(?P<check>[0-9a-f]{8})$")
_OWN_FILES = {MANIFEST, MANIFEST_LOCK}  # bookkeeping of hf_mmkd in a folder, never a user's file
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
    tmp = _write_temporary(path, data)
    try:
        os.replace(tmp, path)
    except OSError as err:
        _remove(tmp)
        raise _write_error(err, path) from None
    return path


def _write_temporary(path: Path, data: str | bytes | Any) -> Path:
    """`data` written and synced to a new temporary sibling of `path` (removed again on an error)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_name(path)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
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
    except OSError as err:
        _remove(tmp)
        raise _write_error(err, path) from None
    except BaseException:
        _remove(tmp)
        raise
    return tmp


def atomic_write_all(files: Mapping[str | os.PathLike, str | bytes | Any]) -> list[Path]:
    """Write several files (`{path: data}`, data as for `atomic_write`) so that they appear together or not at
    all: every one is written to its temporary first (a full disk fails here, before any target changes), then
    all are renamed into place."""
    written: list[Path] = []
    try:
        for path, data in files.items():
            written.append(_write_temporary(Path(path), data))
        for tmp, path in zip(written, files):
            os.replace(tmp, path)
    except BaseException:
        for tmp in written:
            _remove(tmp)
        raise
    return [Path(p) for p in files]


@contextmanager
def atomic_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of `folder` to fill. When the block ends without an error the sibling is
    renamed to `folder` (an older `folder` is replaced only then, and restored if the rename fails); on an error
    it is removed."""
    folder = Path(folder)
    check_replaceable(folder)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_name(folder)
        tmp.mkdir(mode=0o700)
    except OSError as err:
        raise _write_error(err, folder) from None
    try:
        yield tmp
        _record_files(tmp)
        os.chmod(tmp, 0o755)
        check_replaceable(folder)  # again: the user may have put a file there meanwhile
        if folder.exists():
            old = temporary_name(folder, "old")
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


def _token(name: str, pid: int, rand: str) -> str:
    """The 8 hex digits that prove a temporary's name was made by `temporary_name` (not picked by a user)."""
    return hashlib.sha256(f"hf_mmkd temporary\0{name}\0{pid}\0{rand}".encode()).hexdigest()[:8]


def temporary_name(target: str | os.PathLike, kind: str = "tmp", pid: int | None = None) -> Path:
    """A fresh temporary sibling of `target`: `.<name>.hf_mmkd-<kind>-<pid>-<random><check>` (see `_token`)."""
    target = Path(target)
    pid = os.getpid() if pid is None else pid
    rand = uuid.uuid4().hex[:8]
    return target.parent / f".{target.name}.hf_mmkd-{kind}-{pid}-{rand}{_token(target.name, pid, rand)}"


def _own_temporary(name: str) -> re.Match | None:
    """The match of `name` if it is a temporary that hf_mmkd made (its check digits agree), else None."""
    match = _TEMPORARY.match(name)
    if match is None or _token(match["name"], int(match["pid"]), match["rand"]) != match["check"]:
        return None
    return match


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):  # another user's process; a pid no kernel gives out
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
        match = _own_temporary(entry.name)
        if match is None or (wanted is not None and match["name"] not in wanted):
            continue
        if not _process_alive(int(match["pid"])):
            _remove(entry)
            removed.append(entry)
    return removed


def _listed_files(folder: Path) -> set[str] | None:
    """The files (relative paths) that the `MANIFEST` of `folder` says hf_mmkd wrote there; None without a list."""
    path = folder / MANIFEST
    if not path.is_file():
        return None
    data = read_json(path, f"the output manifest {path}")
    files = data.get("files") if isinstance(data, dict) else None
    return {str(f) for f in files} if isinstance(files, list) else None


def _unlisted(folder: Path, listed: set[str] | None, prefix: str = "") -> list[str]:
    """The files and links under `folder` (paths relative to it, after `prefix`) that hf_mmkd did not write: not in
    `listed`, nor in the `MANIFEST` of a subfolder that hf_mmkd saved on its own (`atomic_folder` records one in
    every folder it writes). hf_mmkd's bookkeeping and its own temporaries are not counted."""
    out = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        name, rel = entry.name, f"{prefix}{entry.name}"
        if (name in _OWN_FILES and not prefix) or _own_temporary(name) is not None:
            continue
        if entry.is_dir() and not entry.is_symlink():
            own = _listed_files(entry)
            out += ([f"{rel}/{f}" for f in _unlisted(entry, own)] if own is not None
                    else _unlisted(entry, listed, f"{rel}/"))
        elif listed is None or rel not in listed:
            out.append(rel)
    return out


def check_replaceable(folder: str | os.PathLike) -> None:
    """Refuse to replace `folder` unless hf_mmkd wrote every file in it (its `MANIFEST` lists them): a symbolic
    link, a file, or a folder holding a file hf_mmkd did not write is never replaced (the error names it)."""
    folder = Path(folder)
    if folder.is_symlink():
        raise OutputFolderError(f"{folder} is a symbolic link; hf_mmkd never replaces it: remove the link or choose "
                                "another folder")
    if not folder.exists():
        return
    if not folder.is_dir():
        raise OutputFolderError(f"{folder} exists and is not a folder; hf_mmkd never replaces it")
    foreign = _unlisted(folder, _listed_files(folder))
    if foreign:
        shown = ", ".join(str(folder / f) for f in foreign[:3]) + (f" and {len(foreign) - 3} more"
                                                                   if len(foreign) > 3 else "")
        raise OutputFolderError(f"{folder} holds {shown}, which hf_mmkd did not write (not listed in "
                                f"{folder / MANIFEST}); hf_mmkd replaces a folder only when it wrote everything in "
                                "it: move the file(s) away or choose another folder")


def _record_files(folder: Path) -> None:
    """List every file under `folder` in its `MANIFEST` (`files`), keeping what the manifest already holds."""
    path = folder / MANIFEST
    data = read_json(path, f"the output manifest {path}") if path.is_file() else {"version": 1}
    data["files"] = _all_files(folder)
    atomic_write(path, json.dumps(data, indent=1) + "\n")


def _all_files(folder: Path, prefix: str = "") -> list[str]:
    """Every file and link under `folder` (relative paths), hf_mmkd's bookkeeping and temporaries aside."""
    out = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if (entry.name in _OWN_FILES and not prefix) or _own_temporary(entry.name) is not None:
            continue
        if entry.is_dir() and not entry.is_symlink():
            out += _all_files(entry, f"{prefix}{entry.name}/")
        else:
            out.append(f"{prefix}{entry.name}")
    return out


def record_written(folder: str | os.PathLike, *names: str) -> None:
    """Add files written into an hf_mmkd folder after it was saved (a card, a summary) to its `MANIFEST`, so that a
    later replacement of the folder knows them as hf_mmkd's. (No `manifest_lock`: the one writer of such a folder
    holds its run lock.)"""
    path = Path(folder) / MANIFEST
    data = read_json(path, f"the output manifest {path}") if path.is_file() else {"version": 1}
    data["files"] = sorted(set(data.get("files") or []) | set(names))
    atomic_write(path, json.dumps(data, indent=1) + "\n")


@contextmanager
def manifest_lock(folder: Path) -> Iterator[None]:
    """An exclusive `flock` on `folder/MANIFEST_LOCK` around a read-modify-write of the folder's manifest, so that
    concurrent commands writing into one folder (six `predict --out DIR/pN.json`) never lose an entry. The lock file
    is removed on release (nothing is left in the user's folder); a waiter that then holds the lock of a removed
    file sees that the path names another file, or none, and tries again."""
    path = folder / MANIFEST_LOCK
    while True:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise _write_error(err, folder / MANIFEST) from None
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            break
        os.close(fd)  # the holder before us removed that file: lock the one there now
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


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
        if self.outputs is None and out.is_symlink():
            raise OutputFolderError(f"{self.flag} {out} is a symbolic link; {self.command} never replaces it by a "
                                    "folder: give the folder it points to, or another path")
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
            probe = temporary_name(probe_in / "hf_mmkd-probe")
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
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
        return sorted(n for n in names if n not in _OWN_FILES and n not in own)

    def _check_whole(self) -> None:
        out = self.path
        if not out.is_dir():
            return
        if out.is_symlink():
            check_replaceable(out)  # refuses: a link is never replaced by a folder
        entries = [p.name for p in out.iterdir() if p.name not in _OWN_FILES and not _own_temporary(p.name)]
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
        check_replaceable(out)  # and every file below those entries (OUT_DIR/data/my_notes.txt) is hf_mmkd's

    def _check_entry(self, name: str) -> None:
        target = self.path / name
        if (target.exists() or target.is_symlink()) and self._foreign([name]):
            raise OutputFolderError(f"{target} exists and was not written by hf_mmkd (it is not listed in "
                                    f"{self.path / MANIFEST}); move it away or choose another {self.flag}")
        if target.is_dir() and not target.is_symlink() and _listed_files(target) is not None:
            check_replaceable(target)  # a folder hf_mmkd saved whole (RUN/student): every file in it is hf_mmkd's

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
        with manifest_lock(self.path):
            for name in names:
                self._check_entry(name)
            path = self.path / MANIFEST
            data = read_json(path, f"the output manifest {path}") if path.is_file() else {"version": 1}
            data["entries"] = {**self.manifest(), **{n: self.command for n in names}}
            atomic_write(path, json.dumps(data, indent=1) + "\n")


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
