"""A C toolchain image for build tests, made from the host: the static busybox plus the files
`musl-gcc` needs (gcc's driver, cc1, collect2, as, ld, their shared libraries and loader,
gcc's headers and crt/libgcc files, musl's headers, libc and specs). `musl-gcc -v` shows
what runs: the driver, cc1, as and collect2 (which runs ld); each is asked for by name here
(`-print-prog-name`, `-print-file-name`) and `ldd` names their libraries.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

MUSL_GCC = Path("/usr/bin/musl-gcc")
DRIVER = "x86_64-linux-gnu-gcc"  # what /usr/bin/musl-gcc execs
MUSL_DIRS = (Path("/usr/lib/x86_64-linux-musl"), Path("/usr/include/x86_64-linux-musl"))
GCC_FILES = ("libgcc.a", "libgcc_eh.a", "crtbegin.o", "crtbeginS.o", "crtbeginT.o", "crtend.o",
             "crtendS.o", "liblto_plugin.so", "include")
APPLETS = ("sh", "cat", "echo", "ls", "mkdir", "rm", "cp", "mv", "env", "true", "test")
PATH_ENV = "PATH=/usr/bin:/bin"


def _ask(driver: str, flag: str) -> Path:
    out = subprocess.run([driver, flag], capture_output=True, text=True, check=True).stdout
    return Path(out.strip())


def _libraries(elf: Path) -> set[Path]:
    """The shared libraries (and loader) `elf` loads, as ldd names them."""
    out = subprocess.run(["ldd", str(elf)], capture_output=True, text=True).stdout
    found: set[Path] = set()
    for line in out.splitlines():
        words = line.split()
        if "=>" in words and len(words) > words.index("=>") + 1:
            path = words[words.index("=>") + 1]
        elif words and words[0].startswith("/"):
            path = words[0]
        else:
            continue
        if path.startswith("/"):
            found.add(Path(path))
    return found


def toolchain_files() -> dict[Path, Path]:
    """Where each host file goes in the image (image path -> host path)."""
    driver = shutil.which(DRIVER)
    assembler, linker = shutil.which("as"), shutil.which("ld")
    if not MUSL_GCC.exists() or driver is None or assembler is None or linker is None:
        pytest.skip("musl-gcc (musl-tools), gcc and binutils are needed for the toolchain image")
    placed: dict[Path, Path] = {
        Path("/usr/bin") / DRIVER: Path(driver).resolve(),
        Path("/usr/bin/as"): Path(assembler).resolve(),
        Path("/usr/bin/ld"): Path(linker).resolve(),
        MUSL_GCC: MUSL_GCC,
    }
    for prog in ("cc1", "collect2", "lto-wrapper"):
        path = _ask(driver, f"-print-prog-name={prog}")
        placed[path] = path
    for name in GCC_FILES:
        path = _ask(driver, f"-print-file-name={name}")
        placed[path] = path
    for top in MUSL_DIRS:
        placed[top] = top
    for host in list(placed.values()):
        if (host.is_file() and os.access(host, os.X_OK)) or host.suffix == ".so":
            for lib in _libraries(host):
                placed[lib] = lib.resolve()
    return placed


def make_toolchain_tar(work: Path) -> Path:
    """A rootfs tar for `docker import`: busybox in /bin, the toolchain under /usr and /lib."""
    root = work / "rootfs"
    (root / "bin").mkdir(parents=True)
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        pytest.skip("/bin/busybox (busybox-static) is needed for the toolchain image")
    shutil.copy2(busybox, root / "bin" / "busybox")
    for applet in APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    for name, mode in (("tmp", 0o1777), ("etc", 0o755)):
        (root / name).mkdir()
        (root / name).chmod(mode)
    for inside, host in toolchain_files().items():
        target = root / inside.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if host.is_dir():
            shutil.copytree(host, target, symlinks=True, dirs_exist_ok=True)
        else:
            shutil.copy2(host, target)
    tar_path = work / "toolchain.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(root, arcname=".")
    shutil.rmtree(root)
    return tar_path
