"""A podman pod with `--runtime steelcup-runtime`: the pod's containers share one VM (the
infra container's), each in its own PID and mount namespaces with its own exit status, and
reach each other on localhost. One VM boot for the whole pod."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.compat.podmanutil import IMG, Podman, keepers_of, write_runtime_wrapper
from tests.vm.support import BUSYBOX_TAR, leftovers_of, need_assets, start_daemon, stop_daemon

pytestmark = pytest.mark.vm

BOOT_ID = "/proc/sys/kernel/random/boot_id"


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    need_assets()
    if shutil.which("podman") is None:
        pytest.fail("podman is needed (apt-get install podman)")
    base = tmp_path_factory.mktemp("podpods")
    daemon = start_daemon(base / "sc", base / "sc-run" / "steelcup.sock")
    runtime_root = base / "oci"
    wrapper = write_runtime_wrapper(base / "steelcup-runtime", daemon.socket, runtime_root)
    p = Podman(daemon, base, wrapper, runtime_root)
    try:
        p.run("load", "-i", str(BUSYBOX_TAR), check=True)
        yield p
    finally:
        subprocess.run(p.argv("pod", "rm", "-a", "-f", "-t", "0"), capture_output=True,
                       timeout=180)
        subprocess.run(p.argv("rm", "-a", "-f", "-t", "0"), capture_output=True, timeout=120)
        stop_daemon(daemon)
        problems = leftovers_of(base / "sc")
        keepers = keepers_of(runtime_root)
        for pid in keepers:
            os.kill(pid, 9)
        assert not keepers, f"keeper processes left running: {keepers}"
        assert not problems, "after daemon shutdown: " + "\n".join(problems)


def _in_pod(podman: Podman, *args: str, check: bool = False) -> subprocess.CompletedProcess[bytes]:
    return podman.run("run", "--pod", "p1", "--ulimit", "nofile=1024:1024", "--ulimit",
                      "nproc=1024:1024", *args, check=check)


def test_a_pods_containers_share_one_vm_and_localhost(podman: Podman) -> None:
    podman.run("pod", "create", "--name", "p1", "--network", "none", check=True)
    # The server answers one connection with its VM's boot id, then exits 5.
    server = _in_pod(podman, "-d", "--name", "srv", IMG, "sh", "-c",
                     f"echo pong-$(cat {BOOT_ID}) | nc -l -p 7000; exit 5", check=True)
    server_id = server.stdout.decode().strip()
    sleeper = _in_pod(podman, "-d", "--name", "idle", IMG, "sleep", "1000", check=True)
    sleeper_id = sleeper.stdout.decode().strip()
    client = _in_pod(podman, "--name", "cli", IMG, "sh", "-c",
                     f"echo own-$(cat {BOOT_ID}); "
                     "for i in $(seq 100); do nc 127.0.0.1 7000 </dev/null && exit 3; "
                     "sleep 0.2; done; exit 9")
    out = client.stdout.decode().split()
    assert client.returncode == 3, (client.stdout, client.stderr,
                                    podman.daemon.log.read_text()[-3000:])
    own = [w[len("own-"):] for w in out if w.startswith("own-")]
    pong = [w[len("pong-"):] for w in out if w.startswith("pong-")]
    assert own and pong and own == pong, out  # one VM: the same boot id, over localhost
    host_boot_id = open(BOOT_ID).read().strip()
    assert own[0] != host_boot_id
    waited = podman.run("wait", server_id, check=True, timeout=120)
    assert waited.stdout.strip() == b"5"  # its own exit status
    # each container is PID 1 of its own namespace, in the same VM
    ps = podman.run("exec", sleeper_id, "sh", "-c", f"cat /proc/1/cmdline; echo; cat {BOOT_ID}",
                    check=True).stdout.decode().split()
    assert ps == ["sleep\x001000\x00", own[0]], ps
    # podman deletes the ended ones: the infra container and idle are left, both running
    assert len(podman.daemon.out("ps", "-q").split()) == 2
    podman.run("pod", "stop", "-t", "0", "p1", check=True, timeout=180)
    assert podman.run("inspect", "--format", "{{.State.Status}}", sleeper_id,
                      check=True).stdout.strip() == b"exited"
    podman.run("pod", "rm", "p1", check=True, timeout=180)
    assert podman.daemon.out("ps", "-a", "-q").strip() == ""  # every member's root freed too
