"""Issue 20, the image, volume, network and system calls: where real clients (docker CLI,
docker-py) found steelcup answering differently from dockerd. One networked daemon."""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.compat.conftest import IMG, Docker
from tests.vm.support import BUSYBOX_TAR, wait_until

docker = pytest.importorskip("docker")
pytestmark = pytest.mark.vm

DAEMON_NETWORKING = True  # volumes and networks need it


@pytest.fixture(scope="module")
def client(dockerd: Docker) -> Iterator[docker.DockerClient]:
    c = docker.DockerClient(base_url=dockerd.host, version="auto", timeout=180)
    yield c
    c.close()


def _rootfs_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        data = b"hi\n"
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_load_streams_lines_reports_the_archives_tags_and_errors_in_band(
    dockerd: Docker, client: docker.DockerClient, tmp_path: Path
) -> None:
    dockerd.out("tag", IMG, "conf/other:1")
    # docker-py reads a chunked body line by line; a fixed-length one it cannot parse
    loaded = client.api.load_image(BUSYBOX_TAR.read_bytes())
    messages = list(loaded)
    assert messages == [{"stream": f"Loaded image: {IMG}:latest\n"}], messages
    assert "conf/other:1" not in dockerd.out("load", "-i", str(BUSYBOX_TAR))
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"not an image archive\n" * 40)
    with pytest.raises(docker.errors.ImageLoadError, match="invalid image archive"):
        client.images.load(bad.read_bytes())
    result = dockerd.run("load", "-i", str(bad))
    assert result.returncode == 1 and b"invalid image archive" in result.stderr
    assert client.ping()  # the daemon keeps running


def test_image_list_honours_filters(dockerd: Docker, client: docker.DockerClient) -> None:
    dockerd.out("tag", IMG, "conf/filtered:1")
    dangling_id = json.loads(client.api.import_image_from_data(_rootfs_tar()))["status"]
    labelled = "conf/labelled:1"
    dockerd.out("import", "-c", "LABEL tier=gold", "-", labelled, input=_rootfs_tar())

    def names(*args: str) -> set[str]:
        return set(dockerd.out("images", "--format", "{{.Repository}}:{{.Tag}}", *args).split())

    assert names("--filter", "reference=conf/filtered") == {"conf/filtered:1"}
    assert names("--filter", "reference=conf/*:1") >= {"conf/filtered:1", labelled}
    assert IMG + ":latest" not in names("--filter", "reference=conf/*")
    assert names("--filter", "dangling=true") == {"<none>:<none>"}
    assert "<none>:<none>" not in names("--filter", "dangling=false")
    assert names("--filter", "label=tier=gold") == {labelled}
    assert names("--filter", "label=tier=silver") == set()
    assert IMG + ":latest" in names("--filter", f"before={labelled}")
    assert labelled not in names("--filter", f"before={labelled}")
    assert names("--filter", f"since={IMG}") >= {labelled}
    assert IMG + ":latest" not in names("--filter", f"since={IMG}")
    ids = {i.id for i in client.images.list(filters={"dangling": True})}
    assert ids == {dangling_id}
    bad = dockerd.run("images", "--filter", "dangling=maybe")
    assert bad.returncode != 0 and b"Invalid filter 'dangling=maybe'" in bad.stderr
    bad = dockerd.run("images", "--filter", "colour=red")
    assert bad.returncode != 0 and b"invalid filter 'colour'" in bad.stderr


def test_import_applies_changes_to_the_image_config(
    dockerd: Docker, client: docker.DockerClient
) -> None:
    dockerd.out("import", "-c", 'CMD ["/hello", "world"]', "-c", "ENV A=b C=d",
                "-c", "WORKDIR /srv", "-c", "EXPOSE 8080", "-", "conf/imported:1",
                input=_rootfs_tar())
    config = client.api.inspect_image("conf/imported:1")["Config"]
    assert config["Cmd"] == ["/hello", "world"]
    assert config["Env"] == ["A=b", "C=d"]
    assert config["WorkingDir"] == "/srv"
    assert config["ExposedPorts"] == {"8080/tcp": {}}
    plain_id = dockerd.out("import", "-", input=_rootfs_tar()).strip()
    plain = client.api.inspect_image(plain_id)["Config"]
    assert "Cmd" in plain and plain["Cmd"] is None and plain["Entrypoint"] is None
    bad = dockerd.run("import", "-c", "FROB x", "-", input=_rootfs_tar())
    assert bad.returncode != 0 and b"FROB is not a valid change command" in bad.stderr


def test_an_unnamed_volume_is_anonymous_and_prune_removes_it(
    dockerd: Docker, client: docker.DockerClient
) -> None:
    name = dockerd.out("volume", "create").strip()
    named = dockerd.out("volume", "create", "conf-named").strip()
    labels = client.volumes.get(name).attrs["Labels"]
    assert labels == {"com.docker.volume.anonymous": ""}
    pruned = dockerd.out("volume", "prune", "-f")
    assert name in pruned and named not in pruned
    listed = dockerd.out("volume", "ls", "-q").split()
    assert name not in listed and named in listed


def test_disconnect_of_a_container_not_on_the_network_errors_even_forced(
    dockerd: Docker
) -> None:
    dockerd.out("network", "create", "conf-net")
    cid = dockerd.out("create", "--name", "conf-nonet", IMG, "true").strip()
    try:
        for args in (("-f",), ()):
            result = dockerd.run("network", "disconnect", *args, "conf-net", "conf-nonet")
            assert result.returncode == 1, result
            assert (f"container {cid} is not connected to the network conf-net".encode()
                    in result.stderr), result.stderr
    finally:
        dockerd.run("rm", "-f", "conf-nonet")
        dockerd.run("network", "rm", "conf-net")


SCHEMA_1_43_INFO_KEYS = {
    "ID", "Containers", "ContainersRunning", "ContainersPaused", "ContainersStopped", "Images",
    "Driver", "DriverStatus", "DockerRootDir", "Plugins", "MemoryLimit", "SwapLimit",
    "KernelMemoryTCP", "CpuCfsPeriod", "CpuCfsQuota", "CPUShares", "CPUSet", "PidsLimit",
    "OomKillDisable", "IPv4Forwarding", "BridgeNfIptables", "BridgeNfIp6tables", "Debug", "NFd",
    "NGoroutines", "SystemTime", "LoggingDriver", "CgroupDriver", "CgroupVersion",
    "NEventsListener", "KernelVersion", "OperatingSystem", "OSVersion", "OSType", "Architecture",
    "NCPU", "MemTotal", "IndexServerAddress", "RegistryConfig", "GenericResources", "HttpProxy",
    "HttpsProxy", "NoProxy", "Name", "Labels", "ExperimentalBuild", "ServerVersion", "Runtimes",
    "DefaultRuntime", "Swarm", "LiveRestoreEnabled", "Isolation", "InitBinary",
    "ContainerdCommit", "RuncCommit", "InitCommit", "SecurityOptions", "ProductLicense",
    "DefaultAddressPools", "Warnings",
}


def test_info_has_the_whole_schema_and_swarm_leave_is_503(
    dockerd: Docker, client: docker.DockerClient
) -> None:
    info = client.info()
    assert SCHEMA_1_43_INFO_KEYS <= set(info), SCHEMA_1_43_INFO_KEYS - set(info)
    assert info["Debug"] is False and info["ExperimentalBuild"] is False
    assert info["Swarm"]["LocalNodeState"] == "inactive"
    assert info["LoggingDriver"] == "json-file" and info["MemoryLimit"] is True
    assert info["NFd"] > 0 and info["NGoroutines"] > 0
    # the CLI's own rendering of those keys works
    assert dockerd.out("info", "-f", "{{.Debug}} {{.Swarm.LocalNodeState}}").split() == [
        "false", "inactive"]
    with pytest.raises(docker.errors.APIError) as caught:
        client.swarm.leave()
    assert caught.value.response.status_code == 503
    assert "This node is not part of a swarm" in str(caught.value)
    result = dockerd.run("swarm", "leave")
    assert b"This node is not part of a swarm" in result.stderr


@pytest.mark.parametrize(("flags", "named"), [
    (("--cgroup-parent", "/mine"), "HostConfig.CgroupParent"),
    (("--pid", "host"), "HostConfig.PidMode"),
    (("--uts", "host"), "HostConfig.UTSMode"),
    (("--oom-score-adj", "500"), "HostConfig.OomScoreAdj"),
    (("--volumes-from", "other"), "HostConfig.VolumesFrom"),
    (("--cpuset-cpus", "0"), "HostConfig.CpusetCpus"),
    (("-m", "64m", "--memory-swap", "-1"), "HostConfig.MemorySwap"),
    (("--runtime", "runc"), "HostConfig.Runtime"),
    (("--cgroupns", "host"), "HostConfig.CgroupnsMode"),
    (("--device-cgroup-rule", "c 10:229 rwm"), "HostConfig.DeviceCgroupRules"),
    (("--log-opt", "tag=web"), "log opt 'tag'"),
    (("-v", "/tmp:/t:rshared"), "propagation mode 'rshared'"),
    (("--mount", "type=bind,src=/tmp,dst=/t,bind-propagation=rslave"),
     "BindOptions.Propagation"),
])
def test_a_setting_steelcup_would_ignore_is_refused_naming_it(
    dockerd: Docker, flags: tuple[str, ...], named: str
) -> None:
    result = dockerd.run("create", *flags, IMG, "true")
    assert result.returncode != 0, result
    assert named.encode() in result.stderr, result.stderr
    assert b"Error response from daemon" in result.stderr


def test_settings_a_vm_has_anyway_are_accepted(dockerd: Docker) -> None:
    for flags in (("--init",), ("--ipc", "private"), ("-m", "64m", "--memory-swap", "64m"),
                  ("-v", "/tmp:/t:ro,rprivate")):
        cid = dockerd.out("create", *flags, IMG, "true").strip()
        dockerd.out("rm", cid)


def test_docker_py_settings_and_ipam_refusals(
    dockerd: Docker, client: docker.DockerClient
) -> None:
    with pytest.raises(docker.errors.APIError) as caught:
        client.containers.create(IMG, "true", mac_address="02:42:ac:11:00:02")
    assert caught.value.response.status_code == 400 and "MacAddress" in str(caught.value)
    with pytest.raises(docker.errors.APIError) as caught:
        client.containers.create(IMG, "true", cpuset_cpus="0")
    assert caught.value.response.status_code == 400 and "HostConfig.CpusetCpus" in str(caught.value)
    for flag in ("--ip-range=10.77.0.0/25", "--aux-address=a=10.77.0.5"):
        result = dockerd.run("network", "create", "--subnet", "10.77.0.0/24", flag, "conf-ipam")
        assert result.returncode != 0 and b"is not supported by steelcup" in result.stderr
    assert client.ping()


def test_read_only_rootfs_refuses_writes_but_not_to_mounts(dockerd: Docker) -> None:
    """--read-only as dockerd: the root and its /etc files are read-only, /tmp too; a volume
    and a tmpfs at paths the image lacks (their mount points are made on the host), /dev and
    /dev/shm are writable; docker cp into the root is refused, into the volume it works."""
    script = ("for p in /new /tmp/t /etc/hosts /scratch/a /data/b /dev/shm/c; do "
              "if touch $p 2>/dev/null; then echo $p=rw; else echo $p=ro; fi; done; "
              "touch /x 2>&1; grep ' / ' /proc/mounts")
    out = dockerd.out("run", "--rm", "--read-only", "--tmpfs", "/scratch", "-v",
                      "conf-ro-data:/data", IMG, "sh", "-c", script)
    assert "/new=ro\n/tmp/t=ro\n/etc/hosts=ro\n/scratch/a=rw\n/data/b=rw\n/dev/shm/c=rw" in out
    assert "Read-only file system" in out
    assert any(line.split()[1:2] == ["/"] and " ro," in line for line in out.splitlines())
    cid = dockerd.out("create", "--read-only", "-v", "conf-ro-data:/data", IMG, "true").strip()
    try:
        assert dockerd.out("inspect", "-f", "{{.HostConfig.ReadonlyRootfs}}", cid).strip() == "true"
        refused = dockerd.run("cp", str(BUSYBOX_TAR), f"{cid}:/")
        assert refused.returncode != 0
        assert b"container rootfs is marked read-only" in refused.stderr
        dockerd.out("cp", str(BUSYBOX_TAR), f"{cid}:/data/")
    finally:
        dockerd.run("rm", "-f", cid)
        dockerd.run("volume", "rm", "conf-ro-data")
    # without --read-only the root stays writable
    assert dockerd.out("run", "--rm", IMG, "sh", "-c", "touch /new && echo rw").strip() == "rw"


def test_shm_size_sizes_dev_shm(dockerd: Docker, client: docker.DockerClient) -> None:
    out = dockerd.out("run", "--rm", "--shm-size", "16m", IMG, "df", "-k", "/dev/shm")
    assert out.splitlines()[-1].split()[1] == "16384", out
    container = client.containers.create(IMG, "true", shm_size="8m")
    try:
        assert container.attrs["HostConfig"]["ShmSize"] == 8 << 20
    finally:
        container.remove()


def test_links_name_a_running_container_in_etc_hosts(dockerd: Docker) -> None:
    db = dockerd.out("run", "-d", "--name", "conf-db", IMG, "sleep", "600").strip()
    try:
        address = dockerd.out("inspect", "-f",
                              "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                              db).strip()
        hosts = dockerd.out("run", "--rm", "--link", "conf-db:database", IMG, "sh", "-c",
                            "cat /etc/hosts; ping -c 1 -W 10 database >/dev/null && "
                            "echo reached")
        assert f"{address}\tdatabase {db[:12]} conf-db" in hosts, hosts
        assert hosts.strip().endswith("reached")
        cid = dockerd.out("create", "--link", "conf-db", IMG, "true").strip()
        links, name = dockerd.out("inspect", "-f", "{{json .HostConfig.Links}} {{.Name}}",
                                  cid).split()
        dockerd.out("rm", cid)
        assert json.loads(links) == [f"/conf-db:{name}/conf-db"]
    finally:
        dockerd.run("rm", "-f", db)
    missing = dockerd.run("create", "--link", "conf-nope:db", IMG, "true")
    assert missing.returncode != 0
    assert b"could not get container for conf-nope" in missing.stderr
    dockerd.out("create", "--name", "conf-stopped", IMG, "true")
    try:
        stopped = dockerd.run("run", "--rm", "--link", "conf-stopped:db", IMG, "true")
        assert stopped.returncode != 0
        assert b"Cannot link to a non running container: /conf-stopped AS /" in stopped.stderr
    finally:
        dockerd.run("rm", "-f", "conf-stopped")


def test_sysctls_are_written_in_the_guest_and_others_refused(
    dockerd: Docker, client: docker.DockerClient
) -> None:
    out = dockerd.out("run", "--rm", "--sysctl", "net.core.somaxconn=1234", "--sysctl",
                      "kernel.shmmni=4000", IMG, "sh", "-c",
                      "cat /proc/sys/net/core/somaxconn /proc/sys/kernel/shmmni")
    assert out.split() == ["1234", "4000"]
    # the docker CLI refuses it itself; the daemon does too
    with pytest.raises(docker.errors.APIError) as caught:
        client.containers.create(IMG, "true", sysctls={"kernel.panic": "1"})
    assert caught.value.response.status_code == 400
    assert "sysctl 'kernel.panic' is not allowed" in str(caught.value)
    missing = dockerd.run("run", "--rm", "--sysctl", "net.core.no_such_thing=1", IMG, "true")
    assert missing.returncode != 0 and b"net/core/no_such_thing" in missing.stderr


def test_ulimits_apply_to_the_process_and_execs(
    dockerd: Docker, client: docker.DockerClient
) -> None:
    cid = dockerd.out("run", "-d", "--ulimit", "nofile=512:1024", "--ulimit", "core=-1",
                      IMG, "sh", "-c", "ulimit -n -H; ulimit -n; ulimit -c; sleep 600").strip()
    try:
        deadline = time.monotonic() + 60
        while len(dockerd.out("logs", cid).split()) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert dockerd.out("logs", cid).split() == ["1024", "512", "unlimited"]
        assert dockerd.out("exec", cid, "sh", "-c", "ulimit -n").strip() == "512"
        ulimits = client.containers.get(cid).attrs["HostConfig"]["Ulimits"]
        assert {u["Name"]: (u["Soft"], u["Hard"]) for u in ulimits} == {
            "nofile": (512, 1024), "core": (-1, -1)}
    finally:
        dockerd.run("rm", "-f", cid)


def test_pids_limit_stops_a_fork_bomb_at_the_limit(
    dockerd: Docker, client: docker.DockerClient
) -> None:
    # the shell counts the sleepers it started until a fork fails (busybox sh then gives up)
    script = "for i in $(seq 20); do sleep 30 & echo $i; done; echo all"
    out = dockerd.run("run", "--rm", "--pids-limit", "10", IMG, "sh", "-c", script)
    assert out.returncode != 0
    assert b"can't fork: Resource temporarily unavailable" in out.stderr, out
    assert out.stdout.split()[-1] == b"9", out  # the shell and 9 sleepers are 10 tasks
    free = dockerd.out("run", "--rm", "--pids-limit", "30", IMG, "sh", "-c", script)
    assert free.split()[-1] == "all"
    container = client.containers.create(IMG, "true", pids_limit=10)
    try:
        assert container.attrs["HostConfig"]["PidsLimit"] == 10
    finally:
        container.remove()


def test_a_health_check_goes_from_starting_to_healthy(dockerd: Docker) -> None:
    """Issue 13's first item through the real CLI: --health-cmd probes in the guest, the
    container is starting until /tmp/ok exists, then healthy in inspect, `ps` and its filter,
    with health_status events."""
    since = str(int(time.time()))
    dockerd.out("run", "-d", "--name", "hc", "--health-cmd", "test -f /tmp/ok",
                "--health-interval", "1s", IMG, "sh", "-c",
                "sleep 2; touch /tmp/ok; exec sleep 100")
    try:
        def health() -> dict[str, Any]:
            return json.loads(dockerd.out("inspect", "-f", "{{json .State.Health}}", "hc"))

        assert health()["Status"] == "starting"
        configured = json.loads(dockerd.out("inspect", "-f", "{{json .Config.Healthcheck}}",
                                            "hc"))
        assert configured == {"Test": ["CMD-SHELL", "test -f /tmp/ok"],
                              "Interval": 1_000_000_000}
        wait_until(lambda: health()["Status"] == "healthy", "the container turns healthy",
                   timeout_s=60)
        log = health()["Log"]
        assert log[0]["ExitCode"] == 1 and log[-1]["ExitCode"] == 0, log
        assert health()["FailingStreak"] == 0
        status = dockerd.out("ps", "--filter", "name=hc", "--format", "{{.Status}}").strip()
        assert status.endswith("(healthy)"), status
        names = dockerd.out("ps", "--filter", "health=healthy", "--format", "{{.Names}}")
        assert names.split() == ["hc"]
        assert dockerd.out("ps", "-q", "--filter", "health=starting").strip() == ""
        events = dockerd.out("events", "--since", since, "--until", str(int(time.time()) + 1),
                             "--filter", "event=health_status", "--format", "{{.Action}}")
        assert "health_status: healthy" in events.splitlines(), events
    finally:
        dockerd.run("rm", "-f", "hc")
