"""Compare generated files with what is on disk, and write them only when allowed.

A file that exists and differs is shown as a unified diff and left alone
unless the caller allows overwriting (``--yes``); then nothing at all is
written (:class:`SetupRefused`), so a run never leaves half of a new config.
"""

from __future__ import annotations

import difflib
import os
import tempfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from bgcore.errors import BgcoreError, SetupRefused


class Change(str, Enum):
    NEW = "new"
    SAME = "unchanged"
    DIFFERS = "differs"


@dataclass(frozen=True)
class PlannedFile:
    """One file ``bgcore setup`` writes, and how it compares with the one on disk."""

    path: Path
    text: str
    change: Change
    diff: str  # unified diff from the file on disk to ``text`` ("" unless it differs)


def compare(files: dict[Path, str]) -> list[PlannedFile]:
    """Each file with its :class:`Change` against the disk, in the given order."""
    planned = []
    for path, text in files.items():
        try:
            old = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            planned.append(PlannedFile(path, text, Change.NEW, ""))
            continue
        except (OSError, UnicodeDecodeError) as exc:
            raise BgcoreError(f"cannot read {path} to compare it with the new config ({exc}); "
                              "fix its permissions or pass another --output") from None
        if old == text:
            planned.append(PlannedFile(path, text, Change.SAME, ""))
        else:
            diff = "".join(difflib.unified_diff(old.splitlines(keepends=True), text.splitlines(keepends=True),
                                                fromfile=f"{path} (on disk)", tofile=f"{path} (bgcore setup)"))
            planned.append(PlannedFile(path, text, Change.DIFFERS, diff))
    return planned


def write(planned: list[PlannedFile], *, overwrite: bool) -> None:
    """Write the new and changed files (atomically, one rename each); :class:`SetupRefused` first if a file
    differs and ``overwrite`` is false."""
    differing = [p for p in planned if p.change == Change.DIFFERS]
    if differing and not overwrite:
        names = ", ".join(str(p.path) for p in differing)
        raise SetupRefused(f"{names} differ{'s' if len(differing) == 1 else ''} from what bgcore setup would write "
                           "(diff above); nothing was changed; run it again with --yes to overwrite")
    for item in planned:
        if item.change != Change.SAME:
            _write_atomic(item.path, item.text)


def _write_atomic(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        raise BgcoreError(f"cannot write {path} ({exc}); check the directory's permissions or pass another "
                          "--output") from None
