#!/usr/bin/env python3
"""Build the `steelcup/busybox:latest` image (docker-archive tarball) from the host busybox.

Deterministic: fixed mtimes, owners and entry order, so the same busybox gives the same image id.
Usage: mkbusybox.py [--busybox /bin/busybox] [--tag steelcup/busybox:latest] OUTPUT.tar
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

MTIME = 946684800  # 2000-01-01T00:00:00Z
CREATED = "2000-01-01T00:00:00Z"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = b"root:x:0:\nnobody:x:65534:\n"
DIRS = {
    "bin": 0o755, "etc": 0o755, "root": 0o700, "sbin": 0o755, "tmp": 0o1777,
    "usr": 0o755, "usr/bin": 0o755, "usr/sbin": 0o755, "var": 0o755,
}


def _info(name: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.linkname = kind, mode, size, link
    info.mtime, info.uid, info.gid, info.uname, info.gname = MTIME, 0, 0, "root", "root"
    return info


def build_layer(busybox: Path) -> bytes:
    applets = subprocess.run(
        [str(busybox), "--list-full"], capture_output=True, text=True, check=True
    ).stdout.split()
    binary = busybox.read_bytes()
    dirs = dict(DIRS)
    for applet in applets:
        parent = os.path.dirname(applet)
        while parent and parent not in dirs:
            dirs[parent] = 0o755
            parent = os.path.dirname(parent)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for d in sorted(dirs):
            tar.addfile(_info(d + "/", tarfile.DIRTYPE, dirs[d]))
        tar.addfile(_info("bin/busybox", tarfile.REGTYPE, 0o755, len(binary)), io.BytesIO(binary))
        for path, data in (("etc/group", GROUP), ("etc/passwd", PASSWD)):
            tar.addfile(_info(path, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
        for applet in sorted(set(applets)):
            if applet != "bin/busybox":
                tar.addfile(_info(applet, tarfile.SYMTYPE, 0o777, link="/bin/busybox"))
    return buf.getvalue()


def build_archive(busybox: Path, tag: str) -> bytes:
    layer = build_layer(busybox)
    layer_hex = hashlib.sha256(layer).hexdigest()
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    config = {
        "architecture": arch,
        "os": "linux",
        "created": CREATED,
        "config": {"Cmd": ["sh"], "Env": [PATH_ENV]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + layer_hex]},
        "history": [{"created": CREATED, "created_by": "tools/mkbusybox.py"}],
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_hex = hashlib.sha256(config_bytes).hexdigest()
    manifest = [
        {"Config": f"{config_hex}.json", "RepoTags": [tag], "Layers": [f"{layer_hex}/layer.tar"]}
    ]
    files = [
        (f"{layer_hex}/layer.tar", layer),
        (f"{config_hex}.json", config_bytes),
        ("manifest.json", json.dumps(manifest, separators=(",", ":")).encode()),
    ]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(_info(f"{layer_hex}/", tarfile.DIRTYPE, 0o755))
        for name, data in files:
            tar.addfile(_info(name, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
    return buf.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("output", type=Path)
    parser.add_argument("--busybox", type=Path, default=Path("/bin/busybox"))
    parser.add_argument("--tag", default="steelcup/busybox:latest")
    args = parser.parse_args()
    if not args.busybox.is_file():
        print(f"mkbusybox: {args.busybox} not found (apt-get install busybox-static)",
              file=sys.stderr)
        return 1
    data = build_archive(args.busybox, args.tag)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=args.output.parent, prefix=".busybox-")
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
