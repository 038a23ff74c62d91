"""The baseline every benchmark times: podman + runc, as leadership's `../shared/tools/peer-run`
sets it up (same busybox binary as steelcup/busybox)."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

PEER_RUN = Path(__file__).resolve().parents[2] / "shared" / "tools" / "peer-run"


def peer_argv(*cmd: str) -> list[str]:
    """The podman command `peer-run --print` gives (it ends with the image), then `cmd`."""
    out = subprocess.run([str(PEER_RUN), "--print"], capture_output=True, text=True, check=True)
    return shlex.split(out.stdout.strip().splitlines()[-1]) + list(cmd)
