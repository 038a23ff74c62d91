"""A QEMU process's memory by what holds it, from /proc/PID/smaps (kB), for the benchmarks.

Private (clean + dirty) pages are split into the TCG translation cache (QEMU's only anonymous
RWX memory: one `tb-size` mapping, or several 2 MiB regions of it), guest RAM it holds
privately (a clone's copy-on-write copies of its template's pages; a plain VM's anonymous RAM)
and the rest (heap, per-thread malloc arenas, the soft TLB, the translated-block hash table,
relocated data of QEMU and its libraries). A clone's template RAM file is reported apart: its
pages are shared by every clone of the template, and counted once per host.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

RAM_FILE_NAME = "ram"  # a template's RAM file (steelcup.pool.template)
BIG_ANON_KIB = 64 * 1024  # anonymous RW mappings this large are a plain VM's guest RAM


@dataclass
class QemuMemory:
    private_kib: int = 0
    tcg_kib: int = 0
    guest_ram_kib: int = 0  # private guest RAM pages
    pss_kib: int = 0
    ram_files: set[str] = field(default_factory=set)  # template RAM files it maps

    @property
    def rest_kib(self) -> int:
        return self.private_kib - self.tcg_kib - self.guest_ram_kib


def _kind(head: str, size_kib: int) -> str:
    parts = head.split()
    perms, path = parts[1], (parts[5] if len(parts) >= 6 else "")
    if path and Path(path).name == RAM_FILE_NAME:
        return "ram_file"
    if not path and perms.startswith("rwx"):
        return "tcg"
    if not path and perms.startswith("rw") and size_kib >= BIG_ANON_KIB:
        return "ram_anon"
    return "rest"


def parse(text: str) -> QemuMemory:
    """`text` is one process's smaps."""
    out = QemuMemory()
    head = ""
    size_kib = 0
    for line in text.splitlines():
        first = line.split(maxsplit=1)[0] if line else ""
        if not first.endswith(":"):  # a mapping's header line
            head, size_kib = line, 0
            continue
        value = int(line.split()[1]) if first in ("Size:", "Pss:", "Private_Clean:",
                                                  "Private_Dirty:") else 0
        if first == "Size:":
            size_kib = value
            kind = _kind(head, size_kib)
            if kind == "ram_file":
                out.ram_files.add(head.split()[5])
        elif first == "Pss:":
            out.pss_kib += value
        elif first in ("Private_Clean:", "Private_Dirty:"):
            out.private_kib += value
            kind = _kind(head, size_kib)
            if kind == "tcg":
                out.tcg_kib += value
            elif kind in ("ram_file", "ram_anon"):
                out.guest_ram_kib += value
    return out


def qemu_memory(pid: int) -> QemuMemory:
    return parse(Path(f"/proc/{pid}/smaps").read_text())


def file_kib(path: str) -> int:
    """Allocated kB of a (sparse) file: what its pages cost the host once, 0 if it is gone."""
    try:
        return os.stat(path).st_blocks // 2
    except OSError:
        return 0
