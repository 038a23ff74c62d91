"""What a new user hits first with the real docker CLI (issue 21): piped stdin, `ps` ports,
exec errors, `top`, the built-in networks. One networked daemon for the module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.compat.conftest import IMG, Docker
from tests.vm.support import wait_until

pytestmark = pytest.mark.vm

DAEMON_NETWORKING = True  # `-p`, `--network none` and the bridge's list entries need networks


def test_piped_stdin_reaches_the_process_with_its_eof(dockerd: Docker) -> None:
    """The CLI sends stdin and its EOF on the attach connection before it calls start: the
    daemon must keep both for the process (it used to hang here for ever)."""
    echoed = dockerd.run("run", "-i", "--rm", IMG, "cat", input=b"hi\n", timeout=60)
    assert (echoed.returncode, echoed.stdout) == (0, b"hi\n"), echoed.stderr
    lines = b"".join(b"%d\n" % i for i in range(1, 100001))
    counted = dockerd.run("run", "-i", "--rm", IMG, "wc", "-l", input=lines, timeout=60)
    assert (counted.returncode, counted.stdout.strip()) == (0, b"100000"), counted.stderr
    script = dockerd.run("run", "-i", "--rm", IMG, "sh", input=b"echo from-script\nexit 4\n",
                         timeout=60)
    assert (script.returncode, script.stdout) == (4, b"from-script\n"), script.stderr
    # A stopped container started again with -ai gets the new stdin, EOF included.
    dockerd.out("create", "-i", "--name", "again", IMG, "cat")
    for text in (b"one\n", b"two\n"):
        again = dockerd.run("start", "-ai", "again", input=text, timeout=60)
        assert (again.returncode, again.stdout) == (0, text), again.stderr
    dockerd.out("rm", "again")


def test_ps_shows_ports_networks_and_mounts(dockerd: Docker, tmp_path: Path) -> None:
    """`docker ps` reads Ports, NetworkSettings.Networks and Mounts from the list API."""
    tmp_path.chmod(0o755)  # the container's root is not host root: it needs o+rx to mount it
    dockerd.out("run", "-d", "--name", "web", "-p", "8080:80", "-p", "127.0.0.1:9090:90/udp",
                "--expose", "7000", "-v", f"{tmp_path}:/data", "-v", "listvol:/vol",
                IMG, "sleep", "1000")
    try:
        fmt = "{{.Ports}}|{{.Networks}}|{{.Mounts}}"
        ports, networks, mounts = dockerd.out("ps", "--no-trunc", "--filter", "name=web",
                                              "--format", fmt).strip().split("|")
        assert sorted(ports.split(", ")) == [
            "0.0.0.0:8080->80/tcp", "127.0.0.1:9090->90/udp", "7000/tcp"], ports
        assert networks == "bridge"
        assert sorted(mounts.split(",")) == sorted([str(tmp_path), "listvol"]), mounts
        listed = json.loads(dockerd.out("ps", "--filter", "name=web", "--format",
                                        "{{json .}}"))
        assert listed["Names"] == "web"
        dockerd.out("stop", "-t", "0", "web")
        # dockerd releases a stopped container's ports; its networks and mounts stay listed
        stopped = dockerd.out("ps", "-a", "--filter", "name=web", "--format", fmt).strip()
        assert stopped.split("|")[0] == "" and "bridge" in stopped, stopped
    finally:
        dockerd.run("rm", "-f", "web")
        dockerd.run("volume", "rm", "listvol")


def test_exec_of_a_missing_or_unrunnable_program_says_so_like_dockerd(dockerd: Docker) -> None:
    dockerd.out("run", "-d", "--name", "execd", IMG, "sleep", "1000")
    try:
        missing = dockerd.run("exec", "execd", "nosuchcmd")
        assert missing.returncode == 127, missing
        assert b'exec: "nosuchcmd": executable file not found in $PATH' in missing.stderr + \
            missing.stdout, missing
        nopath = dockerd.run("exec", "execd", "/no/such")
        assert nopath.returncode == 127, nopath
        assert b'exec: "/no/such": stat /no/such: no such file or directory' in \
            nopath.stderr + nopath.stdout, nopath
        unrunnable = dockerd.run("exec", "execd", "/etc/passwd")
        assert unrunnable.returncode == 126, unrunnable
        assert b'exec: "/etc/passwd": permission denied' in \
            unrunnable.stderr + unrunnable.stdout, unrunnable
        # nothing broke: the container and the daemon go on
        assert dockerd.out("exec", "execd", "echo", "alive") == "alive\n"
    finally:
        dockerd.run("rm", "-f", "execd")


def test_network_ls_lists_bridge_host_none_and_host_is_refused_at_create(
    dockerd: Docker,
) -> None:
    listed = dockerd.out("network", "ls", "--format", "{{.Name}} {{.Driver}} {{.Scope}}")
    assert sorted(listed.splitlines()) == [
        "bridge bridge local", "host host local", "none null local"], listed
    assert dockerd.out("network", "inspect", "none", "--format", "{{.Driver}}") == "null\n"
    refused = dockerd.run("network", "rm", "host")
    assert refused.returncode != 0 and b"pre-defined network" in refused.stderr, refused
    # none: a VM with loopback only
    links = dockerd.out("run", "--rm", "--network", "none", IMG, "ls", "/sys/class/net")
    assert links.split() == ["lo"], links
    # host: refused by create itself, so nothing is left behind and `run --rm` ends at once
    before = dockerd.out("ps", "-aq")
    for argv, code in ((("create", "--network", "host", IMG, "true"), 1),
                       (("run", "--rm", "--network", "host", IMG, "true"), 125)):
        result = dockerd.run(*argv, timeout=60)
        assert result.returncode == code, result
        assert b"network mode 'host' is not supported" in result.stderr, result
    assert dockerd.out("ps", "-aq") == before
    assert dockerd.out("run", "--rm", IMG, "echo", "daemon-ok") == "daemon-ok\n"


def test_the_vm_run_dir_is_told_by_the_root_info_and_help(dockerd: Docker) -> None:
    """Two daemons (and what to clean up after one) are told apart without hashing paths: the
    root links to its VM run dir, the API's info names it and `daemon --help` explains it."""
    docker = pytest.importorskip("docker")
    root = dockerd.daemon.root
    run_dir = (root / "vm-run-dir").resolve(strict=True)
    assert run_dir.parent == Path("/run/steelcup") and run_dir.name.startswith("vms-")
    # the running VMs' sockets are there
    dockerd.out("run", "-d", "--name", "rundir", IMG, "sleep", "1000")
    try:
        assert any(p.is_socket() for p in run_dir.rglob("*")), sorted(run_dir.rglob("*"))
    finally:
        dockerd.run("rm", "-f", "rundir")
    client = docker.APIClient(base_url=dockerd.host, version="auto")
    try:
        assert client.info()["Steelcup"]["VmRunDir"] == str(run_dir)
    finally:
        client.close()
    helped = subprocess.run([sys.executable, "-m", "steelcup", "daemon", "--help"],
                            capture_output=True, text=True, check=True, timeout=60).stdout
    assert "/run/steelcup/vms-HASH" in " ".join(helped.split()) and "vm-run-dir" in helped


def test_top_lists_the_containers_processes_and_honours_ps_arguments(dockerd: Docker) -> None:
    """Every process of the container (a child too, as nginx's worker), none of the VM's
    (its init, kernel threads) nor the ps itself; ps arguments reach ps, as with dockerd."""
    dockerd.out("run", "-d", "--name", "tops", IMG, "sh", "-c",
                "sleep 1000 & sleep 1001 & wait")
    try:
        wait_until(lambda: len(dockerd.out("top", "tops").splitlines()) == 4, "both sleeps")
        titles, *rows = dockerd.out("top", "tops").splitlines()
        assert titles.split()[:3] == ["USER", "PID", "PPID"], titles
        by_pid = {row.split()[1]: row.split(None, 4) for row in rows}
        assert by_pid["1"][4].startswith("sh -c sleep 1000"), rows
        assert sorted(r[4] for r in by_pid.values() if r[2] == "1") == [
            "sleep 1000", "sleep 1001"], rows
        assert dockerd.out("top", "tops", "-ef").splitlines()[1:] == rows
        chosen = dockerd.out("top", "tops", "-o", "pid,args").splitlines()
        assert chosen[0].split() == ["PID", "COMMAND"] and len(chosen) == 4, chosen
        # dockerd's answer when ps prints no PIDs (the ps itself would be listed)
        no_pid = dockerd.run("top", "tops", "-o", "args")
        assert no_pid.returncode != 0, no_pid
        assert b"Couldn't find PID field in ps output" in no_pid.stderr, no_pid
        bad = dockerd.run("top", "tops", "-x")
        assert bad.returncode != 0 and b"invalid option" in bad.stderr, bad
    finally:
        dockerd.run("rm", "-f", "tops")


def test_stats_no_stream_is_quick_and_shows_the_hosts_cost(dockerd: Docker) -> None:
    """CPU is what QEMU costs the host (so online_cpus are the host's, not the VM's one vCPU),
    PIDs are the container's processes, and a single answer does not wait a second reading
    of the guest (the docker CLI itself waits 0.5 s before it prints)."""
    docker = pytest.importorskip("docker")
    dockerd.out("run", "-d", "--name", "statsd", IMG, "sh", "-c",
                "sleep 1000 & sleep 1001 & wait")
    dockerd.out("run", "-d", "--name", "spin", IMG, "sh", "-c", "while :; do :; done")
    try:
        wait_until(lambda: len(dockerd.out("top", "statsd").splitlines()) == 4, "both sleeps")
        # (how quickly it answers is a benchmark's business, not a test's)
        out = dockerd.out("stats", "--no-stream", "--format",
                          "{{.Name}} {{.CPUPerc}} {{.PIDs}}", "statsd", "spin")
        rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()}
        assert rows["statsd"][1] == "3" and rows["spin"][1] == "1", out
        idle_pct, busy_pct = (float(rows[n][0].rstrip("%")) for n in ("statsd", "spin"))
        assert idle_pct < 30 and busy_pct > 50, out
        client = docker.APIClient(base_url=dockerd.host, version="auto")
        try:
            doc = client.stats("spin", stream=False)
        finally:
            client.close()
        assert doc["cpu_stats"]["online_cpus"] == os.cpu_count(), doc["cpu_stats"]
        assert doc["pids_stats"]["current"] == 1
    finally:
        dockerd.run("rm", "-f", "statsd", "spin")


def test_add_host_and_dns_flags_reach_the_guests_etc_files(dockerd: Docker) -> None:
    """--add-host, --dns, --dns-search, --dns-option (compose's extra_hosts, dns, dns_search)
    were refused or dropped; they are lines of the guest's /etc/hosts and resolv.conf, and
    inspect shows them."""
    out = dockerd.out("run", "--rm", "--name", "etcs", "--add-host", "db:192.0.2.9",
                      "--add-host", "v6=[2001:db8::7]", "--dns", "192.0.2.53",
                      "--dns-search", "example.org", "--dns-option", "ndots:2", IMG, "sh", "-c",
                      "cat /etc/hosts; echo ---; cat /etc/resolv.conf")
    hosts, resolv = out.split("---")
    assert "192.0.2.9\tdb" in hosts and "2001:db8::7\tv6" in hosts, hosts
    assert "nameserver 192.0.2.53" in resolv and "search example.org" in resolv, resolv
    assert "ndots:2" in resolv and "ndots:0" not in resolv, resolv
    dockerd.out("create", "--name", "shown", "--add-host", "db:192.0.2.9", "--dns",
                "192.0.2.53", IMG, "true")
    try:
        host = json.loads(dockerd.out("inspect", "shown"))[0]["HostConfig"]
        assert host["ExtraHosts"] == ["db:192.0.2.9"] and host["Dns"] == ["192.0.2.53"]
    finally:
        dockerd.run("rm", "-f", "shown")


def test_group_add_gives_the_containers_processes_the_groups(dockerd: Docker) -> None:
    """--group-add was refused; its gids (or names of the image's /etc/group) are
    supplementary groups of the container's process and of its execs, as with dockerd."""
    cid = dockerd.out("run", "-d", "--group-add", "1234", "--group-add", "4321", IMG,
                      "sh", "-c", "id -G; sleep 1000").strip()
    try:
        wait_until(lambda: "1234" in dockerd.out("logs", cid), "the main process's groups")
        assert {"1234", "4321"} <= set(dockerd.out("logs", cid).split())
        assert {"1234", "4321"} <= set(dockerd.out("exec", cid, "id", "-G").split())
        missing = dockerd.run("run", "--rm", "--group-add", "nosuchgroup", IMG, "true")
        assert missing.returncode != 0
        assert b"Unable to find group nosuchgroup" in missing.stderr, missing
    finally:
        dockerd.run("rm", "-f", cid)


def test_a_container_without_m_has_the_memory_it_needs_and_m_still_limits(
        dockerd: Docker) -> None:
    """300 MiB of tmpfs data in a container that asked for no memory: it grows past its 256 MiB
    start instead of being OOM-killed; with -m 200m the guest's OOM killer stops it part way
    (the writer, or the shell too), as dockerd's does; `docker info` says what the default
    is."""
    fill = ("dd if=/dev/zero of=/big/x bs=1M count=300 2>/dev/null; "
            "ls -l /big/x | awk '{print $5}'")
    grown = dockerd.run("run", "--rm", "--tmpfs", "/big:size=1g", IMG, "sh", "-c", fill,
                        timeout=120)
    assert grown.returncode == 0 and grown.stdout.decode().split() == [str(300 << 20)], grown
    limited = dockerd.run("run", "--rm", "-m", "200m", "--tmpfs", "/big:size=1g", IMG, "sh",
                          "-c", fill, timeout=120)
    assert limited.stdout.decode().split() != [str(300 << 20)], limited
    labels = dockerd.out("info", "--format", "{{json .Labels}}")
    assert "sh.steelcup.default-memory=256 MiB, growing on demand up to" in labels
