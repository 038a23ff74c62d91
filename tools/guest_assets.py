"""Build tool for the guest assets: kernel module load order and the initrd (newc cpio).

The ordering logic is pure (`load_order`); `main` wires it to a Debian kernel package extracted
with `dpkg -x` and writes `build/guest/initrd.img`, or with `--no-modules` (the source-built
kernel, everything built in) writes an initrd with an empty module list. Standard library only.
"""

from __future__ import annotations

import argparse
import gzip
import io
import lzma
import subprocess
import sys
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

MODULE_SUFFIXES = (".ko.xz", ".ko.zst", ".ko.gz", ".ko")


class ModuleError(Exception):
    """A wanted module is neither in modules.dep nor built in, or the graph is broken."""


def module_name(path: str) -> str:
    """`kernel/drivers/char/hw_random/virtio-rng.ko.xz` -> `virtio_rng` (the kernel's spelling)."""
    base = path.rsplit("/", 1)[-1]
    for suffix in MODULE_SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def parse_modules_dep(text: str) -> dict[str, list[str]]:
    """modules.dep lines `path: dep dep ...` -> {path: [deps]} in file order."""
    deps: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        path, sep, rest = line.partition(":")
        if not sep:
            raise ModuleError(f"malformed modules.dep line: {line!r}")
        deps[path.strip()] = rest.split()
    return deps


def parse_builtin(text: str) -> set[str]:
    """modules.builtin (one path per line) -> set of module names."""
    return {module_name(line.strip()) for line in text.splitlines() if line.strip()}


@dataclass(frozen=True)
class ModulePlan:
    """Paths to load in order (dependencies first) and wanted names that need no loading."""

    order: tuple[str, ...]
    builtin: tuple[str, ...]
    missing_optional: tuple[str, ...]


def load_order(
    deps: Mapping[str, list[str]],
    builtin: set[str],
    wanted: Iterable[str],
    optional: Iterable[str] = (),
) -> ModulePlan:
    """Orders the wanted modules and their dependencies so every module follows its deps.

    Wanted modules keep their given order where the dependencies allow it. A wanted module that is
    built in is skipped; an optional one that exists nowhere is skipped; a required one that exists
    nowhere raises ModuleError.
    """
    by_name: dict[str, str] = {}
    for path in deps:
        by_name.setdefault(module_name(path), path)
    order: list[str] = []
    done: set[str] = set()
    visiting: set[str] = set()
    skipped_builtin: list[str] = []
    missing: list[str] = []

    def visit(path: str, chain: tuple[str, ...]) -> None:
        if path in done:
            return
        if path in visiting:
            raise ModuleError("dependency cycle: " + " -> ".join((*chain, path)))
        if path not in deps:
            raise ModuleError(f"{chain[-1] if chain else '?'} depends on unknown module {path}")
        visiting.add(path)
        for dep in deps[path]:
            visit(dep, (*chain, path))
        visiting.discard(path)
        done.add(path)
        order.append(path)

    optional_list = [n.replace("-", "_") for n in optional]
    optional_names = set(optional_list)
    names = [n.replace("-", "_") for n in wanted]
    names += [n for n in optional_list if n not in names]
    for name in names:
        if name in by_name:
            visit(by_name[name], ())
        elif name in builtin:
            skipped_builtin.append(name)
        elif name in optional_names:
            missing.append(name)
        else:
            raise ModuleError(f"module {name} is neither in modules.dep nor built in")
    return ModulePlan(tuple(order), tuple(skipped_builtin), tuple(missing))


def read_module(path: Path) -> bytes:
    """Module bytes, decompressed: finit_module is given a plain ELF."""
    data = path.read_bytes()
    name = path.name
    if name.endswith(".xz"):
        return lzma.decompress(data)
    if name.endswith(".gz"):
        return gzip.decompress(data)
    if name.endswith(".zst"):
        return subprocess.run(["zstd", "-dc", str(path)], check=True, capture_output=True).stdout
    return data


class CpioWriter:
    """Minimal deterministic newc writer (mtime 0, root-owned)."""

    def __init__(self) -> None:
        self._buf = io.BytesIO()
        self._ino = 1

    def _entry(
        self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)
    ) -> None:
        encoded = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        self._ino += 1
        self._buf.write(b"070701" + b"".join(b"%08X" % f for f in fields) + encoded)
        self._pad()
        self._buf.write(data)
        self._pad()

    def _pad(self) -> None:
        self._buf.write(b"\0" * (-self._buf.tell() % 4))

    def directory(self, name: str, perm: int = 0o755) -> None:
        self._entry(name, 0o040000 | perm)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._entry(name, 0o100000 | perm, data)

    def char_device(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        self._entry(name, 0o020000 | perm, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self._buf.getvalue()


def build_initrd(init: bytes, modules: list[tuple[str, bytes]]) -> bytes:
    """The initrd archive: /init, /dev/console, mount points, /modules/*.ko and /modules.list."""
    cpio = CpioWriter()
    for d in ("dev", "proc", "sys", "run", "modules"):
        cpio.directory(d)
    cpio.char_device("dev/console", 5, 1)
    cpio.file("init", init, 0o755)
    for name, data in modules:
        cpio.file(f"modules/{name}", data)
    cpio.file("modules.list", "".join(f"{name}\n" for name, _ in modules).encode())
    return cpio.finish()


# Magic numbers of the payload compressors a Debian bzImage may use; stdlib can undo xz and gzip.
_KERNEL_PAYLOADS = (
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x1f\x8b\x08", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The uncompressed ELF kernel inside a bzImage.

    Booting the ELF (PVH entry, CONFIG_PVH=y) skips the in-guest decompression, which takes ~9 s
    for Debian's xz kernel under TCG. Raises ModuleError if no payload decompresses to an ELF.
    """
    for magic, kind in _KERNEL_PAYLOADS:
        start = 0
        while (pos := bzimage.find(magic, start)) >= 0:
            start = pos + 1
            try:
                if kind == "xz":
                    out = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(bzimage[pos:])
                elif kind == "gzip":
                    out = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(bzimage[pos:])
                else:
                    out = subprocess.run(
                        ["zstd", "-dc"], input=bzimage[pos:], capture_output=True, check=False
                    ).stdout
            except (lzma.LZMAError, zlib.error):
                continue
            if out.startswith(b"\x7fELF"):
                return out
    raise ModuleError("no ELF kernel found in the bzImage (lz4 payloads are not supported)")


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["vmlinux"]:
        vparser = argparse.ArgumentParser(prog="guest_assets.py vmlinux")
        vparser.add_argument("bzimage", type=Path)
        vparser.add_argument("out", type=Path)
        vargs = vparser.parse_args(argv[1:])
        try:
            elf = extract_vmlinux(vargs.bzimage.read_bytes())
        except ModuleError as exc:
            print(f"guest_assets: {exc}", file=sys.stderr)
            return 1
        tmp = vargs.out.with_suffix(vargs.out.suffix + ".tmp")
        tmp.write_bytes(elf)
        tmp.replace(vargs.out)
        return 0
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--moddir", type=Path, help="lib/modules/<release> dir")
    parser.add_argument("--modules", default="", help="comma-separated required modules")
    parser.add_argument("--no-modules", action="store_true",
                        help="kernel with everything built in: an initrd without modules")
    parser.add_argument("--optional", default="", help="comma-separated optional modules")
    parser.add_argument("--init", type=Path, help="static init binary (omit to print the order)")
    parser.add_argument("--out", type=Path, help="initrd to write")
    parser.add_argument("--compress", choices=("none", "gzip"), default="none")
    args = parser.parse_args(argv)
    if args.no_modules:
        if args.moddir or args.modules or args.optional:
            parser.error("--no-modules takes no --moddir, --modules or --optional")
        if args.init is None or args.out is None:
            parser.error("--no-modules needs --init and --out")
        return write_initrd(args.out, build_initrd(args.init.read_bytes(), []), args.compress, 0)
    if args.moddir is None or not args.modules:
        parser.error("--moddir and --modules are required (or --no-modules)")

    deps = parse_modules_dep((args.moddir / "modules.dep").read_text())
    builtin_file = args.moddir / "modules.builtin"
    builtin = parse_builtin(builtin_file.read_text()) if builtin_file.exists() else set()
    split = [m for m in args.modules.split(",") if m]
    optional = [m for m in args.optional.split(",") if m]
    try:
        plan = load_order(deps, builtin, split, optional)
    except ModuleError as exc:
        print(f"guest_assets: {exc}", file=sys.stderr)
        return 1
    for name in plan.builtin:
        print(f"guest_assets: {name} is built in", file=sys.stderr)
    for name in plan.missing_optional:
        print(f"guest_assets: optional module {name} not available", file=sys.stderr)
    if args.init is None or args.out is None:
        print("\n".join(plan.order))
        return 0
    modules = []
    for path in plan.order:
        data = read_module(args.moddir / path)
        modules.append((module_name(path) + ".ko", data))
    return write_initrd(
        args.out, build_initrd(args.init.read_bytes(), modules), args.compress, len(modules)
    )


def write_initrd(out: Path, image: bytes, compress: str, module_count: int) -> int:
    """Writes the (optionally gzipped) initrd atomically and says what went in."""
    if compress == "gzip":
        image = gzip.compress(image, compresslevel=9, mtime=0)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_bytes(image)
    tmp.replace(out)
    print(f"guest_assets: {out} ({len(image)} bytes, {module_count} modules)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
