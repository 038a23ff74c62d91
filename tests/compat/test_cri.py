"""A Kubernetes pod through containerd 1.6's CRI plugin with a `steelcup` runtime handler (the runc
shim, steelcup-runtime as its BinaryName), driven over CRI v1 gRPC as the kubelet would:
RunPodSandbox, PullImage and ImageStatus (the image from a registry of the test's, which a
hosts.toml of containerd's names and reaches over plain HTTP), CreateContainer, StartContainer,
ExecSync, ContainerStatus, StopPodSandbox, RemovePodSandbox. The pod's containers share the
sandbox's VM; one gets the kubelet's mounts (a token dir read-only, a termination log file).
The pod is on a CNI bridge network (containernetworking-plugins' bridge and host-local,
/usr/lib/cni), whose netns gets the VM's NIC (steelcup.net.netnsnic). containerd, its
CNI bridge and the steelcup daemon run in a network namespace of the test's, on the test's own
config, sockets and state dirs, and so does the registry (Debian's docker-registry), which skopeo
fills with busybox and a pause image made from it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from steelcup.cgroups import paths as cgroup_paths
from tests.compat.cri import stream
from tests.compat.podmanutil import write_runtime_wrapper
from tests.compat.test_registry import REGISTRY_BIN, Registry, start_registry, stop
from tests.vm.support import (
    BUSYBOX_TAR,
    Daemon,
    delete_netns,
    in_netns,
    leftovers_of,
    need_assets,
    new_netns,
    start_daemon,
    stop_daemon,
    wait_until,
)

pytestmark = pytest.mark.vm

# The test's registry by a name of the node's: no DNS knows it, only the CRI plugin's hosts.toml
# (containerd would try HTTP by itself for a registry at 127.0.0.1, not for a named host).
REGISTRY = "registry.sct.test"
IMG_REPO, IMG_TAG = "steelcup/busybox", "latest"
IMG = f"{REGISTRY}/{IMG_REPO}:{IMG_TAG}"
PAUSE_NAME = "steelcup/pause:1"
PAUSE = f"{REGISTRY}/{PAUSE_NAME}"
BOOT_ID = "/proc/sys/kernel/random/boot_id"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
CONFIG = """version = 2
root = "{base}/root"
state = "{base}/state"
[grpc]
  address = "{base}/containerd.sock"
[ttrpc]
  address = "{base}/containerd-ttrpc.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{base}/certs.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.steelcup]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.steelcup.options]
        BinaryName = "{runtime}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{base}/cni/conf"
"""
HOSTS_TOML = """server = "{url}"
[host."{url}"]
  capabilities = ["pull", "resolve"]
"""
CNI_BIN = Path("/usr/lib/cni")
SUBNET, GATEWAY = "10.77.0.0/24", "10.77.0.1"
CNI_CONF = {
    "cniVersion": "0.4.0", "name": "sct-cri",
    "plugins": [{"type": "bridge", "bridge": "cricni0", "isGateway": True, "ipMasq": False,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": SUBNET,
                                                             "gateway": GATEWAY}]],
                          "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "{base}/cni/ipam"}}],
}
FETCH = ("import sys, urllib.request\n"
         "print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode(), end='')\n")


@dataclass
class Cri:
    daemon: Daemon
    base: Path
    pb: ModuleType
    rt: Any  # RuntimeServiceStub
    images: Any  # ImageServiceStub
    netns: str  # the test's, where containerd, its CNI bridge and the registry live
    cgroup_root: str  # the test's kubepods: the pods' cgroups, as the kubelet's cgroupfs ones

    def pod_cgroup(self, name: str) -> str:
        return f"{self.cgroup_root}/besteffort/poduid-{name}"

    def sandbox_config(self, name: str = "web") -> Any:
        pb = self.pb
        return pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="default"),
            hostname=name, log_directory=str(self.base / "pods" / name),
            linux=pb.LinuxPodSandboxConfig(
                cgroup_parent=self.pod_cgroup(name),
                security_context=pb.LinuxSandboxSecurityContext(
                    namespace_options=pb.NamespaceOption(network=pb.POD, pid=pb.CONTAINER))))

    def container(self, sandbox_id: str, name: str, script: str,
                  mounts: tuple[Any, ...] = (), pod: str = "web") -> str:
        pb = self.pb
        config = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name), image=pb.ImageSpec(image=IMG),
            command=["sh", "-c", script], log_path=f"{name}.log", mounts=mounts,
            linux=pb.LinuxContainerConfig(security_context=pb.LinuxContainerSecurityContext(
                namespace_options=pb.NamespaceOption(network=pb.POD, pid=pb.CONTAINER))))
        created = self.rt.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=sandbox_id, config=config, sandbox_config=self.sandbox_config(pod)),
            timeout=120)
        self.rt.StartContainer(pb.StartContainerRequest(container_id=created.container_id),
                               timeout=120)
        return str(created.container_id)

    def exec_sync(self, container_id: str, *cmd: str) -> Any:
        return self.rt.ExecSync(self.pb.ExecSyncRequest(container_id=container_id, cmd=cmd,
                                                        timeout=60), timeout=90)

    def status(self, container_id: str) -> Any:
        return self.rt.ContainerStatus(
            self.pb.ContainerStatusRequest(container_id=container_id), timeout=30).status

    def wait_state(self, container_id: str, state: int, timeout_s: float = 60) -> Any:
        deadline = time.monotonic() + timeout_s
        while (status := self.status(container_id)).state != state:
            assert time.monotonic() < deadline, f"{container_id}: still {status.state}"
            time.sleep(0.2)
        return status


def pause_image(busybox_tar: Path, out: Path) -> Path:
    """A pause image of the busybox layer: a sandbox's process must run until it is killed."""
    with tarfile.open(busybox_tar) as src:
        members = {m.name: src.extractfile(m).read() for m in src.getmembers()  # type: ignore[union-attr]
                   if m.isfile()}
    (manifest,) = json.loads(members["manifest.json"])
    config = json.loads(members[manifest["Config"]])
    config["config"]["Cmd"] = ["sleep", "2147483647"]
    raw = json.dumps(config).encode()
    name = hashlib.sha256(raw).hexdigest() + ".json"
    files = {layer: members[layer] for layer in manifest["Layers"]}
    files[name] = raw
    files["manifest.json"] = json.dumps([{"Config": name, "RepoTags": ["steelcup/pause:1"],
                                          "Layers": manifest["Layers"]}]).encode()
    with tarfile.open(out, "w") as dst:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    return out


def config_digest(image_tar: Path) -> str:
    """The image ID of a docker-archive: the digest of its config, which a push keeps."""
    with tarfile.open(image_tar) as tar:
        (manifest,) = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        config = tar.extractfile(manifest["Config"]).read()  # type: ignore[union-attr]
    return "sha256:" + hashlib.sha256(config).hexdigest()


def push(enter: list[str], image_tar: Path, ref: str) -> None:
    copied = subprocess.run([*enter, "skopeo", "copy", "--dest-tls-verify=false",
                             f"docker-archive:{image_tar}", f"docker://{ref}"],
                            capture_output=True, timeout=120)
    assert copied.returncode == 0, copied.stderr


@pytest.fixture(scope="module")
def cri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cri]:
    need_assets()
    if shutil.which("containerd") is None:
        pytest.fail("containerd is needed (apt-get install --no-install-recommends containerd)")
    if shutil.which("skopeo") is None or not Path(REGISTRY_BIN).exists():
        pytest.fail("skopeo and docker-registry are needed (apt-get install skopeo "
                    "docker-registry)")
    try:
        import grpc
    except ImportError:
        pytest.fail("grpcio and grpcio-tools are needed (pip install -e '.[dev]')")
    from tests.compat.cri import compile_api

    base = tmp_path_factory.mktemp("cri")
    cgroup_root = f"/sct-{os.getpid()}-kubepods"
    pb, stubs = compile_api(base / "proto")
    if not (CNI_BIN / "bridge").exists():
        pytest.fail("the CNI plugins are needed (apt-get install containernetworking-plugins)")
    netns = new_netns("cri")
    # nsenter, not `ip netns exec`: containerd's netns files and roots must be in the host's
    # mounts, where the daemon sees them
    enter = ["nsenter", f"--net=/run/netns/{netns}"]
    daemon = start_daemon(base / "sc", base / "sc-run" / "steelcup.sock", netns,
                          host_mounts=True)
    (base / "registry").mkdir()
    registry: Registry | None = None
    try:
        registry = start_registry(base / "registry", enter=enter)
        push(enter, BUSYBOX_TAR, f"{registry.host}/{IMG_REPO}:{IMG_TAG}")
        push(enter, pause_image(BUSYBOX_TAR, base / "pause.tar"),
             f"{registry.host}/{PAUSE_NAME}")
    except BaseException:
        if registry is not None:
            stop(registry)
        stop_daemon(daemon)
        delete_netns(netns)
        raise
    # the CRI plugin's registry hosts: REGISTRY is the test's, over plain HTTP (containerd 1.6
    # rejects a hosts.toml without a [host] table: "invalid `host` tree")
    hosts = base / "certs.d" / REGISTRY
    hosts.mkdir(parents=True)
    (hosts / "hosts.toml").write_text(HOSTS_TOML.format(url=f"http://{registry.host}"))
    wrapper = write_runtime_wrapper(base / "steelcup-runtime", daemon.socket, base / "oci")
    (base / "config.toml").write_text(CONFIG.format(
        base=base, pause=PAUSE, runtime=wrapper, cni_bin=CNI_BIN))
    (base / "cni" / "conf").mkdir(parents=True)
    (base / "cni" / "conf" / "10-sct.conflist").write_text(
        json.dumps(CNI_CONF).replace("{base}", str(base)))
    with open(base / "containerd.log", "wb") as log:
        proc = subprocess.Popen([*enter, "containerd", "--config", str(base / "config.toml")],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    channel = None
    try:
        deadline = time.monotonic() + 30
        while not (base / "containerd.sock").exists():
            assert proc.poll() is None, (base / "containerd.log").read_text()
            assert time.monotonic() < deadline, "containerd did not come up"
            time.sleep(0.1)
        channel = grpc.insecure_channel(f"unix://{base / 'containerd.sock'}")
        yield Cri(daemon, base, pb, stubs.RuntimeServiceStub(channel),
                  stubs.ImageServiceStub(channel), netns, cgroup_root)
    finally:
        if channel is not None:
            channel.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        stop(registry)
        stop_daemon(daemon)
        problems = leftovers_of(base / "sc", netns=netns)
        subprocess.run(["umount", "-R", str(base / "state")], capture_output=True)
        subprocess.run(["umount", "-R", str(base / "root")], capture_output=True)
        delete_netns(netns)
        cgroups_left = remove_cgroup_tree(cgroup_root)
        assert not problems, "after daemon shutdown: " + "\n".join(problems)
        assert not cgroups_left, cgroups_left


def remove_cgroup_tree(path: str) -> list[str]:
    """Remove the test's cgroups (what the kubelet removes on a node: the pod cgroups and
    their parents; the containers' own are gone with them); what could not be."""
    left = []
    for hierarchy in cgroup_paths.hierarchies(Path("/proc/self/mountinfo").read_text()):
        top = Path(cgroup_paths.directory(hierarchy, path))
        if not top.is_dir():
            continue
        for directory, _subdirs, _files in os.walk(top, topdown=False):
            try:
                os.rmdir(directory)
            except OSError as exc:
                left.append(f"{directory}: {exc}")
    return left


def cgroup_dir(cgroup: str, controller: str) -> Path:
    """The cgroup's directory in the hierarchy with `controller` (v1), else the unified one."""
    found = cgroup_paths.hierarchies(Path("/proc/self/mountinfo").read_text())
    hierarchy = next((h for h in found if controller in h.controllers),
                     next(h for h in found if h.version == 2))
    return Path(cgroup_paths.directory(hierarchy, cgroup))


def kubelet_mounts(cri: Cri) -> tuple[Any, ...]:
    """What the kubelet mounts into a pod's container: its projected service account token (a
    directory, read-only) and a file for its termination message."""
    node = cri.base / "kubelet"
    (node / "token").mkdir(parents=True, mode=0o755)
    (node / "token" / "token").write_text("tok-123\n")
    (node / "token" / "token").chmod(0o644)
    log = node / "termination-log"
    log.write_text("")
    # a user's (the kubelet's own, host root's, cannot be truncated through a VM in user
    # namespaces: docs/kubernetes.md)
    os.chown(log, 1000, 1000)
    node.chmod(0o755)
    return (cri.pb.Mount(container_path=SA_DIR, host_path=str(node / "token"), readonly=True),
            cri.pb.Mount(container_path="/dev/termination-log", host_path=str(log)))


def _fetch(netns: str, url: str) -> str:
    result = in_netns(netns, sys.executable, "-c", FETCH, url, timeout=30)
    return result.stdout.decode() if result.returncode == 0 else ""


def test_a_cri_pod_runs_in_one_vm(cri: Cri) -> None:
    pb = cri.pb
    version = cri.rt.Version(pb.VersionRequest(version="v1"), timeout=30)
    assert version.runtime_name == "containerd"
    sandbox_id = cri.rt.RunPodSandbox(pb.RunPodSandboxRequest(
        config=cri.sandbox_config(), runtime_handler="steelcup"), timeout=180).pod_sandbox_id
    try:
        # the CRI plugin pulled the sandbox image itself; the kubelet pulls the containers'
        pause = cri.images.ImageStatus(pb.ImageStatusRequest(
            image=pb.ImageSpec(image=PAUSE)), timeout=30).image
        assert pause.repo_tags == [PAUSE], pause
        pulled = cri.images.PullImage(pb.PullImageRequest(
            image=pb.ImageSpec(image=IMG), sandbox_config=cri.sandbox_config()),
            timeout=180)
        assert pulled.image_ref == config_digest(BUSYBOX_TAR), pulled
        image = cri.images.ImageStatus(pb.ImageStatusRequest(
            image=pb.ImageSpec(image=IMG)), timeout=30).image
        assert (image.id, list(image.repo_tags)) == (pulled.image_ref, [IMG]), image
        assert [d.split("@")[0] for d in image.repo_digests] == [f"{REGISTRY}/{IMG_REPO}"], image
        assert image.size > 0, image
        app = cri.container(sandbox_id, "app", "sleep 1000")
        server = cri.container(sandbox_id, "server", "echo pong | nc -l -p 7000; exit 3")
        assert cri.status(app).state == pb.CONTAINER_RUNNING
        boot_ids = {cri.exec_sync(c, "cat", BOOT_ID).stdout for c in (app, server)}
        assert len(boot_ids) == 1, boot_ids  # one VM for the pod
        assert boot_ids != {Path(BOOT_ID).read_bytes()}
        # localhost is the pod's; each container has its own exit status
        reached = cri.exec_sync(app, "sh", "-c", "for i in $(seq 100); do "
                                "nc 127.0.0.1 7000 </dev/null && exit 0; sleep 0.2; done; exit 9")
        assert (reached.exit_code, reached.stdout) == (0, b"pong\n"), reached.stderr
        assert cri.wait_state(server, pb.CONTAINER_EXITED).exit_code == 3
        failed = cri.exec_sync(app, "sh", "-c", "echo err >&2; exit 4")
        assert (failed.exit_code, failed.stderr) == (4, b"err\n")
        assert cri.status(app).state == pb.CONTAINER_RUNNING
        # the pod's CNI address is the VM's, and the node reaches a server in the pod there
        pod_ip = cri.rt.PodSandboxStatus(pb.PodSandboxStatusRequest(
            pod_sandbox_id=sandbox_id), timeout=30).status.network.ip
        assert pod_ip.startswith("10.77.0."), pod_ip
        shown = cri.exec_sync(app, "sh", "-c", "ip -4 addr show eth0; ip route")
        assert f"inet {pod_ip}/24" in shown.stdout.decode(), shown
        assert f"default via {GATEWAY}" in shown.stdout.decode(), shown
        cri.container(sandbox_id, "web", "mkdir -p /www && echo hello-from-the-pod > "
                      "/www/index.html && exec httpd -f -p 80 -h /www")
        wait_until(lambda: _fetch(cri.netns, f"http://{pod_ip}/") == "hello-from-the-pod\n",
                   f"the pod's httpd at {pod_ip}", timeout_s=60)
        # the kubelet's mounts: the service account token dir read-only, the termination log
        # the container writes and the kubelet reads on the node after it exited
        kube = cri.container(sandbox_id, "kube", (
            f"{{ cat {SA_DIR}/token; touch {SA_DIR}/x 2>/dev/null || echo ro; }} "
            "> /dev/termination-log; exit 5"), mounts=kubelet_mounts(cri))
        assert cri.wait_state(kube, pb.CONTAINER_EXITED).exit_code == 5
        assert (cri.base / "kubelet" / "termination-log").read_text() == "tok-123\nro\n"
        assert not (cri.base / "kubelet" / "token" / "x").exists()
        cri.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=180)
        assert cri.wait_state(app, pb.CONTAINER_EXITED).state == pb.CONTAINER_EXITED
    finally:
        cri.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=180)
        cri.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id),
                                timeout=180)
    assert cri.daemon.out("ps", "-aq").strip() == ""


def test_a_cri_pods_streams_stats_and_logs(cri: Cri) -> None:
    """What the kubelet does besides running containers: `kubectl exec` and `kubectl attach`
    through containerd's streaming server, stats, and the container logs it reads and
    rotates."""
    pb = cri.pb
    sandbox_id = cri.rt.RunPodSandbox(pb.RunPodSandboxRequest(
        config=cri.sandbox_config("streams"), runtime_handler="steelcup"),
        timeout=180).pod_sandbox_id
    try:
        cri.images.PullImage(pb.PullImageRequest(
            image=pb.ImageSpec(image=IMG), sandbox_config=cri.sandbox_config("streams")),
            timeout=180)
        busy = cri.container(sandbox_id, "busy", "echo started; echo warn >&2; "
                             "while :; do :; done", pod="streams")
        ticker = cri.container(sandbox_id, "ticker", "while :; do echo tick; sleep 0.3; done",
                               pod="streams")

        def exec_stream(*cmd: str, tty: bool = False) -> stream.StreamResult:
            url = cri.rt.Exec(pb.ExecRequest(container_id=busy, cmd=cmd, stdout=True,
                                             stderr=not tty, tty=tty, stdin=tty),
                              timeout=30).url
            return stream.run(url, cri.netns)

        said = exec_stream("echo", "hi")
        assert (said.stdout, said.exit_code) == (b"hi\n", 0), said
        failed = exec_stream("sh", "-c", "echo oops >&2; exit 3")
        assert (failed.stdout, failed.stderr, failed.exit_code) == (b"", b"oops\n", 3), failed
        # with a terminal and stdin (`kubectl exec -it`): steelcup-runtime exec
        # --console-socket (a TTY exec without stdin: docs/kubernetes.md)
        termed = exec_stream("sh", "-c", "test -t 0 && test -t 1 && echo tty; exit 2",
                             tty=True)
        assert (termed.stdout, termed.exit_code) == (b"tty\r\n", 2), termed
        url = cri.rt.Attach(pb.AttachRequest(container_id=ticker, stdout=True, stderr=True),
                            timeout=30).url
        attached = stream.run(url, cri.netns, until=lambda out: out.count(b"tick\n") >= 2)
        assert attached.stdout.startswith(b"tick\n"), attached
        # The pod's VM (its QEMU) is in the sandbox's cgroup, below the pod's cgroup (the
        # sandbox config's cgroup_parent), and each container's keeper in the container's
        sandbox_cg = f"{cri.pod_cgroup('streams')}/{sandbox_id}"
        qemus = [int(p) for p in (cgroup_dir(sandbox_cg, "cpuacct") / "cgroup.procs"
                                  ).read_text().split()
                 if Path(f"/proc/{p}/comm").read_text().startswith("qemu")]
        assert len(qemus) == 1, qemus
        assert (cgroup_dir(f"{cri.pod_cgroup('streams')}/{busy}", "cpuacct") / "cgroup.procs"
                ).read_text().split(), "the busy container's keeper"
        # so the pod's figures, which containerd reads from the pod's cgroup, are the VM's:
        # the busy loop's CPU grows them, and the VM's memory is there
        def pod_stats() -> Any:
            return cri.rt.PodSandboxStats(pb.PodSandboxStatsRequest(
                pod_sandbox_id=sandbox_id), timeout=30).stats

        first = pod_stats()
        time.sleep(2)
        second = pod_stats()
        assert second.attributes.id == sandbox_id, second
        cpu_ns = (first.linux.cpu.usage_core_nano_seconds.value,
                  second.linux.cpu.usage_core_nano_seconds.value)
        assert cpu_ns[1] - cpu_ns[0] > 200_000_000, cpu_ns  # > 0.2 s of 2 s: the busy loop
        # the sandbox's VM booted in its cgroup: its whole memory, not a keeper's kilobytes
        assert second.linux.memory.working_set_bytes.value > 32 << 20, second.linux.memory
        (listed_pod,) = cri.rt.ListPodSandboxStats(pb.ListPodSandboxStatsRequest(
            filter=pb.PodSandboxStatsFilter(id=sandbox_id)), timeout=30).stats
        assert listed_pod.linux.cpu.usage_core_nano_seconds.value >= cpu_ns[1], listed_pod
        # a container's own figures are its cgroup's: a member's VM is the sandbox's, so only
        # its keeper is there (docs/kubernetes.md, "Container stats")
        stats = cri.rt.ContainerStats(pb.ContainerStatsRequest(container_id=busy),
                                      timeout=30).stats
        assert stats.attributes.id == busy and stats.attributes.metadata.name == "busy", stats
        assert stats.cpu.usage_core_nano_seconds.value < cpu_ns[1], stats.cpu
        listed = cri.rt.ListContainerStats(pb.ListContainerStatsRequest(
            filter=pb.ContainerStatsFilter(pod_sandbox_id=sandbox_id)), timeout=30).stats
        assert {s.attributes.id for s in listed} == {busy, ticker}, listed
        # the log files containerd writes in the CRI format (the kubelet's `kubectl logs`)
        log_path = Path(cri.status(busy).log_path)
        assert log_path == cri.base / "pods" / "streams" / "busy.log"
        lines = {line.split(" ", 1)[1] for line in log_path.read_text().splitlines()}
        assert lines == {"stdout F started", "stderr F warn"}, lines
        stamp = log_path.read_text().split(" ", 1)[0]
        assert stamp.endswith("Z") and "T" in stamp, stamp
        # the kubelet rotates a log by renaming it and asking for a new one
        ticks = cri.base / "pods" / "streams" / "ticker.log"
        ticks.rename(ticks.with_name("ticker.log.1"))
        cri.rt.ReopenContainerLog(pb.ReopenContainerLogRequest(container_id=ticker),
                                  timeout=30)
        wait_until(lambda: ticks.exists() and "stdout F tick" in ticks.read_text(),
                   "ticks in the reopened log", timeout_s=30)
        assert "stdout F tick" in ticks.with_name("ticker.log.1").read_text()
    finally:
        cri.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=180)
        cri.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id),
                                timeout=180)
    assert cri.daemon.out("ps", "-aq").strip() == ""
