"""Copying directory trees with their owners and modes (a volume's copy-up, a snapshot)."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def copy_owners(src: Path, dest: Path) -> None:
    """Give every entry below `dest` the owner (and set-id bits, which chown drops) of its
    namesake below `src`; the root too."""
    def one(rel: str) -> None:
        st = os.lstat(os.path.join(src, rel))
        target = os.path.join(dest, rel)
        os.chown(target, st.st_uid, st.st_gid, follow_symlinks=False)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(target, stat.S_IMODE(st.st_mode))

    one("")
    for top, dirs, files in os.walk(src):
        rel_top = os.path.relpath(top, src)
        for name in (*dirs, *files):
            one(os.path.normpath(os.path.join(rel_top, name)))
