"""Benchmark: steelcup's registry pull (store level, fresh store) vs `skopeo copy ... dir:`.

Builds a multi-layer image of >= 100 MB (half random, half compressible data), pushes it to a
local docker-registry on a free port, then times both pulls of the same image in this run.
Run as root (layer extraction stores whiteouts): `.venv/bin/python bench/pull.py`.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from steelcup.image import registry  # noqa: E402
from steelcup.image.store import ImageStore  # noqa: E402
from tests.compat.test_registry import start_registry, stop  # noqa: E402


def layer_tar(index: int, size: int, rng: random.Random) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        written = 0
        n = 0
        while written < size:
            chunk = min(4 << 20, size - written)
            if n % 2:
                data = os.urandom(chunk)  # incompressible
            else:
                words = [b"steelcup", b"layer", b"%d" % index, b"registry", b"pull"]
                data = b" ".join(rng.choice(words) for _ in range(chunk // 6))[:chunk]
            info = tarfile.TarInfo(f"layer{index}/file{n:03d}.bin")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            written += len(data)
            n += 1
    return buf.getvalue()


def store_at(path: Path) -> ImageStore:
    path.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path / "state.db", isolation_level=None, check_same_thread=False)
    return ImageStore(path / "images", db)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=120, help="total uncompressed image size")
    parser.add_argument("--layers", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="steelcup-bench-"))
    (work / "registry").mkdir()
    reg = start_registry(work / "registry")
    try:
        rng = random.Random(7)
        src = store_at(work / "src")
        per_layer = args.mib * (1 << 20) // args.layers
        image = None
        for i in range(args.layers):  # import each layer as an image, stitch the last config
            image = src.import_rootfs(io.BytesIO(layer_tar(i, per_layer, rng)), f"layer{i}:x")
        assert image is not None
        # one multi-layer image: a docker-archive with all layers
        layers = [src.get(f"layer{i}:x").diff_ids[0] for i in range(args.layers)]
        archive = work / "image.tar"
        _write_multilayer(src, layers, archive)
        with open(archive, "rb") as f:
            (big,) = src.load(f)
        ref = f"{reg.host}/bench/big:1"
        src.tag(big.id, ref)
        registry.push(ref, src)
        compressed = sum(lb.size for lb in src.push_layers(src.get(ref)))

        t0 = time.monotonic()
        result = registry.pull(ref, store_at(work / "dst"))
        ours = time.monotonic() - t0
        assert result.image.id == big.id

        t0 = time.monotonic()
        subprocess.run(
            [
                "skopeo",
                "copy",
                "-q",
                "--src-tls-verify=false",
                f"docker://{ref}",
                f"dir:{work / 'skopeo'}",
            ],
            check=True,
        )
        theirs = time.monotonic() - t0
        mib = compressed / (1 << 20)
        print(
            f"image: {args.layers} layers, {args.mib} MiB uncompressed, {mib:.1f} MiB compressed\n"
        )
        print("| client | what | time (s) | throughput (MiB/s, compressed) |")
        print("|---|---|---|---|")
        print(f"| steelcup pull | download + verify + unpack | {ours:.2f} | {mib / ours:.1f} |")
        print(f"| skopeo copy dir: | download + verify only | {theirs:.2f} | {mib / theirs:.1f} |")
        print(f"\nratio steelcup/skopeo time: {ours / theirs:.2f}")
    finally:
        stop(reg)
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _write_multilayer(store: ImageStore, diff_ids: list[str], out: Path) -> None:
    import hashlib
    import json

    files: dict[str, Path | bytes] = {}
    for d in diff_ids:
        row = store._db.execute(
            "SELECT blob_digest FROM image_layers WHERE diff_id = ?", (d,)
        ).fetchone()
        files[f"{d[7:]}.tar"] = store.blob_path(row[0])
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "2024-01-01T00:00:00Z",
            "config": {"Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
    ).encode()
    cname = hashlib.sha256(config).hexdigest() + ".json"
    files[cname] = config
    files["manifest.json"] = json.dumps(
        [
            {
                "Config": cname,
                "RepoTags": ["bench/big:1"],
                "Layers": [f"{d[7:]}.tar" for d in diff_ids],
            }
        ]
    ).encode()
    with tarfile.open(out, "w") as tar:
        for name, content in files.items():
            if isinstance(content, Path):
                tar.add(content, arcname=name)
            else:
                info = tarfile.TarInfo(name)
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))


if __name__ == "__main__":
    raise SystemExit(main())
