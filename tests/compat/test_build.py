"""`docker build` with the real docker CLI's classic builder (DOCKER_BUILDKIT=0): every RUN
step runs in a VM, the cache makes an unchanged rebuild instant, and errors read like docker's.
"""

from __future__ import annotations

import functools
import http.server
import io
import json
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from steelcup.daemon import vm_run_dir
from tests.compat.conftest import DOCKER, IMG, Docker
from tests.compat.test_tenant_cloud import Cloud, _ok, cloud  # noqa: F401 - the fixture
from tests.compat.toolchain import PATH_ENV, make_toolchain_tar
from tests.vm.support import BUSYBOX_TAR, our_qemus, wait_pool_ready, wait_until

pytestmark = pytest.mark.vm

MULTI_STAGE = f"""\
# syntax=docker/dockerfile:1
FROM {IMG} AS build
ARG GREETING=hello
WORKDIR /work
COPY msg.txt ./
COPY lib/ ./lib/
RUN echo "$GREETING from $(cat msg.txt) and $(cat lib/part.txt)" > out.txt && echo step-ran
FROM scratch
COPY --from=build /bin/busybox /bin/busybox
COPY --from=build /work/out.txt /out.txt
ENTRYPOINT ["/bin/busybox"]
CMD ["cat", "/out.txt"]
"""


def build(docker: Docker, context: Path | str, *args: str, timeout: float = 600,
          stdin: bytes | None = None) -> tuple[int, str]:
    env = dict(docker.env, DOCKER_BUILDKIT="0")
    result = subprocess.run([DOCKER, "build", *args, str(context)], capture_output=True,
                            timeout=timeout, env=env, input=stdin)
    return result.returncode, (result.stdout + result.stderr).decode()


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    write(ctx / "Dockerfile", MULTI_STAGE)
    write(ctx / "msg.txt", "the context")
    write(ctx / "lib" / "part.txt", "a part")
    return ctx


def test_multi_stage_build_runs_then_is_cached_then_rebuilds_from_the_change(
        dockerd: Docker, context: Path) -> None:
    code, out = build(dockerd, context, "-t", "built:1", "--build-arg", "GREETING=hi")
    assert code == 0, out
    assert "Step 1/11 : FROM steelcup/busybox AS build" in out
    assert "step-ran" in out and "Successfully tagged built:1" in out, out
    assert dockerd.out("run", "--rm", "built:1") == "hi from the context and a part\n"
    history = dockerd.out("history", "--no-trunc", "--format", "{{.CreatedBy}}", "built:1")
    assert history.splitlines()[0] == '/bin/sh -c #(nop)  CMD ["cat", "/out.txt"]', history
    assert len(history.splitlines()) == 4, history  # the last stage's: scratch + 4 steps
    saved = dockerd.run("save", "built:1", check=True).stdout  # an ordinary image
    with tarfile.open(fileobj=io.BytesIO(saved)) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert manifest[0]["RepoTags"] == ["built:1"] and len(manifest[0]["Layers"]) == 2

    code, again = build(dockerd, context, "-t", "built:1", "--build-arg", "GREETING=hi")
    assert code == 0, again
    assert "Running in" not in again and again.count("Using cache") == 9, again
    first_id = dockerd.out("image", "inspect", "-f", "{{.Id}}", "built:1")
    code, uncached = build(dockerd, context, "--no-cache", "-t", "uncached",
                           "--build-arg", "GREETING=hi")
    assert code == 0 and "Using cache" not in uncached and "step-ran" in uncached, uncached

    write(context / "lib" / "part.txt", "a changed part")
    code, changed = build(dockerd, context, "-t", "built:1", "--build-arg", "GREETING=hi")
    assert code == 0, changed
    steps = changed.split("Step ")
    assert all("Using cache" in s for s in steps[2:5]), changed  # ARG, WORKDIR, COPY msg.txt
    assert "Using cache" not in steps[5] and "Running in" in steps[6], changed
    assert dockerd.out("image", "inspect", "-f", "{{.Id}}", "built:1") != first_id
    assert dockerd.out("run", "--rm", "built:1") == "hi from the context and a changed part\n"
    # no step container is left; intermediate images are not listed, the image that lost
    # its tag is (dangling, as docker's)
    assert dockerd.out("ps", "-aq") == ""
    untagged = [line for line in dockerd.out("images").splitlines() if "<none>" in line]
    assert len(untagged) == 1 and first_id[7:19] in untagged[0], untagged
    assert len(dockerd.out("images", "-a", "-q").split()) > 10  # the steps' images too


HELLO_C = """\
#include <stdio.h>
#include "greeting.h"

int main(void)
{
    printf("%s from a static binary\\n", GREETING);
    return 0;
}
"""

TOOLCHAIN_BUILD = """\
FROM toolchain:musl AS toolchain
WORKDIR /src
COPY hello.c ./
COPY greeting.h ./
RUN musl-gcc -static -Os -o hello hello.c && ./hello
FROM scratch
COPY --from=toolchain /src/hello /hello
ENTRYPOINT ["/hello"]
"""


@pytest.fixture(scope="session")
def toolchain_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toolchain image's rootfs, made once per session (tests/compat/toolchain.py)."""
    return make_toolchain_tar(tmp_path_factory.mktemp("toolchain"))


@pytest.fixture(scope="module")
def toolchain(dockerd: Docker, toolchain_tar: Path) -> str:
    dockerd.out("import", "--change", f"ENV {PATH_ENV}", str(toolchain_tar), "toolchain:musl",
                timeout=600)
    return "toolchain:musl"


def explain(docker: Docker, out: str) -> str:
    """A failed build's output with the daemon log's tail (why a step's VM failed)."""
    return f"{out}\n--- daemon log tail:\n{docker.daemon.log.read_text()[-4000:]}"


def container_events(docker: Docker, since: float) -> list[str]:
    """The container events (action and id) the daemon published since `since`."""
    out = docker.out("events", "--since", f"{since:.3f}", "--until", f"{time.time():.3f}",
                     "--filter", "type=container", "--format", "{{.Action}} {{.ID}}")
    return out.splitlines()


def test_static_c_program_compiled_in_a_toolchain_stage_runs_from_scratch(
        dockerd: Docker, toolchain: str, tmp_path: Path) -> None:
    """The issue's headline: musl-gcc runs in a VM in the toolchain stage, the binary is
    copied into a scratch stage, and `docker run` runs it; an unchanged rebuild starts no
    VM; a changed header rebuilds from its COPY on."""
    ctx = tmp_path / "hello"
    write(ctx / "Dockerfile", TOOLCHAIN_BUILD)
    write(ctx / "hello.c", HELLO_C)
    write(ctx / "greeting.h", '#define GREETING "hello"\n')
    since = time.time()
    code, out = build(dockerd, ctx, "-t", "hello:static")
    assert code == 0, explain(dockerd, out)
    assert "Step 8/8 : ENTRYPOINT" in out and "hello from a static binary" in out, out
    assert any(e.startswith("start ") for e in container_events(dockerd, since))
    assert dockerd.out("run", "--rm", "hello:static") == "hello from a static binary\n"
    layers = dockerd.out("image", "inspect", "-f", "{{len .RootFS.Layers}}", "hello:static")
    assert layers.strip() == "1"  # the binary alone: nothing of the toolchain came along
    first_id = dockerd.out("image", "inspect", "-f", "{{.Id}}", "hello:static")

    since = time.time()
    code, again = build(dockerd, ctx, "-t", "hello:static")
    assert code == 0, explain(dockerd, again)
    steps = again.split("Step ")[1:]
    assert len(steps) == 8, again
    for step in steps:
        assert step.startswith(("1/8 : FROM", "6/8 : FROM")) or "Using cache" in step, again
    assert "Running in" not in again
    # no VM: nothing started (COPY --from reads its stage's files through a created, never
    # started, container, as a cache check must checksum them)
    assert {e.split()[0] for e in container_events(dockerd, since)} <= {"create", "destroy"}
    assert dockerd.out("image", "inspect", "-f", "{{.Id}}", "hello:static") == first_id

    write(ctx / "greeting.h", '#define GREETING "bonjour"\n')
    code, changed = build(dockerd, ctx, "-t", "hello:static")
    assert code == 0, explain(dockerd, changed)
    steps = changed.split("Step ")[1:]
    assert "Using cache" in steps[1] and "Using cache" in steps[2], changed  # WORKDIR, hello.c
    assert "Using cache" not in steps[3], changed  # COPY greeting.h: the change
    assert "Running in" in steps[4] and "bonjour from a static binary" in steps[4], changed
    assert "Using cache" not in steps[6], changed  # a new binary to copy
    assert dockerd.out("run", "--rm", "hello:static") == "bonjour from a static binary\n"
    assert dockerd.out("ps", "-aq") == ""


def test_dockerignore_and_build_args_and_labels(dockerd: Docker, tmp_path: Path) -> None:
    ctx = tmp_path / "ign"
    write(ctx / "Dockerfile", f"FROM {IMG}\nARG WHO\nCOPY . /src/\n"
          'RUN echo "who=$WHO" && find /src | sort\n')
    write(ctx / ".dockerignore", "secret*\n**/*.log\nkeep/\n!keep/this.txt\n")
    write(ctx / "secret.key", "no")
    write(ctx / "a.txt", "yes")
    write(ctx / "deep" / "x.log", "no")
    write(ctx / "keep" / "this.txt", "yes")
    write(ctx / "keep" / "not.txt", "no")
    code, out = build(dockerd, ctx, "-t", "ign", "--build-arg", "WHO=tester",
                      "--label", "made.by=test")
    assert code == 0, out
    assert "who=tester" in out
    listed = [line for line in out.splitlines() if line.startswith("/src")]
    assert "/src/a.txt" in listed and "/src/keep/this.txt" in listed, out
    for gone in ("/src/secret.key", "/src/deep/x.log", "/src/keep/not.txt"):
        assert gone not in listed, out
    labels = json.loads(dockerd.out("image", "inspect", "-f", "{{json .Config.Labels}}", "ign"))
    assert labels == {"made.by": "test"}
    # the Dockerfile from STDIN (-f -): the CLI puts it into the context under its own name
    code, out = build(dockerd, ctx, "-f", "-", "-t", "stdin-df",
                      stdin=f"FROM {IMG}\nCOPY a.txt /\nCMD [\"cat\", \"/a.txt\"]\n".encode())
    assert code == 0, out
    assert dockerd.out("run", "--rm", "stdin-df") == "yes"


def qemu_count(docker: Docker) -> int:
    root = docker.daemon.root
    markers = (str(root), str(vm_run_dir(root)))
    return len({q for marker in markers for q in our_qemus(marker)})


def container_mounts(docker: Docker) -> list[str]:
    where = str(docker.daemon.root / "containers")
    with open("/proc/mounts") as f:
        return [line for line in f.read().splitlines() if where in line]


def test_errors_name_the_line_and_the_exit_code(dockerd: Docker, tmp_path: Path) -> None:
    images_before = dockerd.out("images", "-q")
    all_before = set(dockerd.out("images", "-a", "-q", "--no-trunc").split())
    wait_pool_ready(dockerd.daemon)
    vms_before = qemu_count(dockerd)
    ctx = tmp_path / "bad"
    write(ctx / "Dockerfile", f"FROM {IMG}\nRUN echo before\nRUN echo failing; exit 3\n")
    code, out = build(dockerd, ctx)
    assert code == 3, out
    assert "The command '/bin/sh -c echo failing; exit 3' returned a non-zero code: 3" in out
    step = out.split("Step 3/3")[1].split("Running in ")[1][:12]
    # the failed step left no VM (the warm cache refills to what it was), no mount, no
    # container directory, and no image: the one new image is the cached step before it
    wait_pool_ready(dockerd.daemon)
    wait_until(lambda: qemu_count(dockerd) == vms_before,
               f"QEMU processes back to {vms_before} (now {qemu_count(dockerd)})", 60)
    assert container_mounts(dockerd) == []
    assert not [d for d in (dockerd.daemon.root / "containers").iterdir()
                if d.name.startswith(step)]
    new = set(dockerd.out("images", "-a", "-q", "--no-trunc").split()) - all_before
    assert len(new) == 1, new
    made_by = dockerd.out("history", "--no-trunc", "--format", "{{.CreatedBy}}", new.pop())
    assert made_by.splitlines()[0] == "/bin/sh -c echo before", made_by

    write(ctx / "Dockerfile", f"FROM {IMG}\nFROBNICATE x\n")
    code, out = build(dockerd, ctx)
    assert code != 0 and "line 2: unknown instruction: FROBNICATE" in out, out

    write(ctx / "Dockerfile", f"FROM {IMG}\nCOPY ../outside /x\n")
    code, out = build(dockerd, ctx)
    assert code != 0 and "forbidden path outside the build context" in out, out

    write(ctx / "Dockerfile", f"FROM {IMG}\nCOPY --from=nostage /x /x\n")
    code, out = build(dockerd, ctx)
    assert code != 0 and "nostage" in out, out

    code, out = build(dockerd, ctx, "--target", "nope")
    assert code != 0 and "failed to reach build target nope" in out, out
    # nothing half-made is left: no container, no new image listed
    assert dockerd.out("ps", "-aq") == ""
    assert dockerd.out("images", "-q") == images_before


def test_docker_py_build_from_a_fileobj(dockerd: Docker) -> None:
    docker = pytest.importorskip("docker")
    client = docker.DockerClient(base_url=dockerd.host, version="1.43")
    data = f"FROM {IMG}\nRUN echo made-by-docker-py > /made\nCMD [\"cat\", \"/made\"]\n"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data.encode()))
    buf.seek(0)
    image, logs = client.images.build(fileobj=buf, custom_context=True, tag="frompy:1",
                                      timeout=600)
    assert "frompy:1" in image.tags
    assert any("made-by-docker-py" in str(chunk.get("stream", "")) for chunk in logs)
    assert dockerd.out("run", "--rm", "frompy:1") == "made-by-docker-py\n"
    client.close()


def test_docker_py_build_from_a_path_honours_dockerignore(dockerd: Docker,
                                                           tmp_path: Path) -> None:
    docker = pytest.importorskip("docker")
    ctx = tmp_path / "pyctx"
    write(ctx / "Dockerfile", f"FROM {IMG}\nARG STAMP\nCOPY . /ctx/\n"
          'RUN echo "stamp=$STAMP" && ls -a /ctx | sort | tr "\\n" " "\n')
    write(ctx / ".dockerignore", "*.secret\nbuild/\n")
    write(ctx / "kept.txt", "kept")
    write(ctx / "token.secret", "never sent")
    write(ctx / "build" / "artifact.o", "never sent")
    client = docker.DockerClient(base_url=dockerd.host, version="1.43")
    try:
        image, logs = client.images.build(path=str(ctx), tag="frompath:1",
                                          buildargs={"STAMP": "py"}, timeout=600)
        text = "".join(str(chunk.get("stream", "")) for chunk in logs)
        assert "frompath:1" in image.tags
        assert "stamp=py" in text, text
        assert "kept.txt" in text and "Dockerfile" in text, text
        assert "token.secret" not in text and "build" not in text.split("stamp=py")[1], text
        with pytest.raises(docker.errors.BuildError) as failed:
            client.images.build(fileobj=io.BytesIO(f"FROM {IMG}\nRUN exit 5\n".encode()),
                                timeout=600)
        assert "returned a non-zero code: 5" in str(failed.value)
    finally:
        client.close()


def steelcup(docker: Docker, *args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    result = subprocess.run([sys.executable, "-m", "steelcup", "-H", docker.host, *args],
                            input=stdin, capture_output=True, timeout=600,
                            env=dict(docker.env, STEELCUP_NO_AUTOSTART="1"))
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def test_steelcup_cli_build_with_dockerfile_outside_and_quiet(
        dockerd: Docker, tmp_path: Path) -> None:
    ctx = tmp_path / "cli"
    write(ctx / "data.txt", "from-cli")
    write(ctx / "skip.me", "no")
    write(ctx / ".dockerignore", "*.me\n")
    outside = tmp_path / "elsewhere.Dockerfile"
    write(outside, f"FROM {IMG}\nARG N\nCOPY . /c/\nRUN ls /c && echo n=$N\n"
          "LABEL via=cli\n")
    code, out, err = steelcup(dockerd, "build", "-t", "cli:1", "-t", "cli:2", "-f", str(outside),
                              "--build-arg", "N=7", "--label", "extra=yes", str(ctx))
    assert code == 0, err
    assert "data.txt" in out and "skip.me" not in out and "n=7" in out, out
    assert "Successfully tagged cli:1" in out and "Successfully tagged cli:2" in out, out
    labels = json.loads(dockerd.out("image", "inspect", "-f", "{{json .Config.Labels}}",
                                    "cli:2"))
    assert labels == {"via": "cli", "extra": "yes"}
    code, out, err = steelcup(dockerd, "build", "-q", "-f", "-", str(ctx),
                              stdin=f"FROM {IMG}\nRUN exit 7\n".encode())
    assert code == 7 and "returned a non-zero code: 7" in err, (out, err)
    code, out, err = steelcup(dockerd, "build", "-q", "-f", str(outside), str(ctx))
    assert code == 0 and out.startswith("sha256:") and len(out.split()) == 1, (out, err)


def test_onbuild_add_tar_chown_chmod(dockerd: Docker, tmp_path: Path) -> None:
    base = tmp_path / "base"
    write(base / "Dockerfile", f"FROM {IMG}\nONBUILD COPY trigger.txt /from-trigger\n"
          "ONBUILD RUN echo trigger-ran\n")
    code, out = build(dockerd, base, "-t", "onbuild-base")
    assert code == 0, out
    child = tmp_path / "child"
    write(child / "trigger.txt", "triggered")
    write(child / "f.txt", "owned")
    for kind, data in (("gz", b"unpacked"), ("bz2", b"-bz2"), ("xz", b"-xz")):
        with tarfile.open(child / f"bundle.tar.{kind}", f"w:{kind}") as tar:
            info = tarfile.TarInfo(f"inner/{kind}.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    write(child / "Dockerfile", "FROM onbuild-base\nADD bundle.tar.gz /opt/\n"
          "ADD bundle.tar.bz2 bundle.tar.xz /opt/\n"
          "COPY --chown=1:2 --chmod=640 f.txt /owned/\n"
          "RUN cat /from-trigger /opt/inner/gz.txt /opt/inner/bz2.txt /opt/inner/xz.txt && "
          "stat -c '%u:%g %a' /owned/f.txt\n")
    code, out = build(dockerd, child, "-t", "onbuild-child")
    assert code == 0, out
    assert "# Executing 2 build triggers" in out and "trigger-ran" in out, out
    assert "triggeredunpacked-bz2-xz" in out and "1:2 640" in out, out  # every kind unpacked
    onbuild = dockerd.out("image", "inspect", "-f", "{{json .Config.OnBuild}}", "onbuild-child")
    assert onbuild.strip() in ("null", "[]")  # triggers run once, in the child only


def test_a_tenants_build_is_its_own(cloud: Cloud, tmp_path: Path) -> None:  # noqa: F811
    """Over TLS as two tenants: alice's build makes alice's image; bob sees neither it nor
    its steps, and the same Dockerfile built by bob runs its steps again (caches are per
    tenant)."""
    alice, bob = cloud.alice, cloud.bob
    ctx = tmp_path / "tenant"
    write(ctx / "Dockerfile", f"FROM {IMG}\nRUN echo built-by-$(hostname | wc -c) > /who\n")
    for tenant in (alice, bob):
        loaded = tenant.docker("load", "-i", str(BUSYBOX_TAR))
        assert loaded.returncode == 0, loaded.stderr
    env = dict(alice.env, DOCKER_BUILDKIT="0")
    built = subprocess.run([DOCKER, "build", "-t", "mine", str(ctx)], capture_output=True,
                           timeout=600, env=env)
    assert built.returncode == 0, built.stderr
    image_id = _ok(alice.docker("image", "inspect", "-f", "{{.Id}}", "mine")).strip()
    assert _ok(bob.docker("images", "-q", "mine")) == ""
    assert bob.docker("image", "inspect", image_id).returncode != 0
    write(ctx / "Dockerfile", f"FROM {image_id}\n")
    stolen = subprocess.run([DOCKER, "build", str(ctx)], capture_output=True, timeout=600,
                            env=dict(bob.env, DOCKER_BUILDKIT="0"))
    assert stolen.returncode != 0 and b"No such image" in stolen.stdout + stolen.stderr
    # the builder fetches ADD's URLs on the host: a tenant's may not reach its loopback
    write(ctx / "Dockerfile", f"FROM {IMG}\nADD http://127.0.0.1:2375/info /info\n")
    probe = subprocess.run([DOCKER, "build", str(ctx)], capture_output=True, timeout=600,
                           env=dict(bob.env, DOCKER_BUILDKIT="0"))
    assert probe.returncode != 0, probe.stdout
    assert b"which a tenant's build may not reach" in probe.stdout + probe.stderr
    write(ctx / "Dockerfile", f"FROM {IMG}\nRUN echo built-by-$(hostname | wc -c) > /who\n")
    again = subprocess.run([DOCKER, "build", "-t", "mine", str(ctx)], capture_output=True,
                           timeout=600, env=dict(bob.env, DOCKER_BUILDKIT="0"))
    assert again.returncode == 0 and b"Running in" in again.stdout, again.stdout
    assert b"Using cache" not in again.stdout


def test_add_of_a_url_served_on_loopback(dockerd: Docker, tmp_path: Path) -> None:
    """The operator's build fetches what the host reaches (here a server on 127.0.0.1), as
    dockerd's: the file lands with mode 0600 and its checksum decides the cache."""
    served = tmp_path / "served"
    served.mkdir()
    (served / "notes.txt").write_text("fetched over http")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        ctx = tmp_path / "addurl"
        write(ctx / "Dockerfile", f"FROM {IMG}\nADD {url}/notes.txt /got/\n"
              "RUN stat -c '%a %u' /got/notes.txt && cat /got/notes.txt\n")
        code, out = build(dockerd, ctx, "-t", "addurl")
        assert code == 0, out
        assert "600 0\nfetched over http" in out, out
        code, out = build(dockerd, ctx, "-t", "addurl")
        assert code == 0 and out.count("Using cache") == 2, out
        (served / "notes.txt").write_text("changed on the server")
        code, out = build(dockerd, ctx, "-t", "addurl")
        assert code == 0 and "Using cache" not in out and "changed on the server" in out, out
        write(ctx / "Dockerfile", f"FROM {IMG}\nADD {url}/absent /x\n")
        code, out = build(dockerd, ctx)
        assert code != 0 and "line 2: ADD failed" in out and "404" in out, out
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def tar_of(files: dict[str, str], mode: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:  # type: ignore[call-overload]
        for name, text in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    return buf.getvalue()


def test_remote_contexts_from_a_loopback_server(dockerd: Docker, tmp_path: Path) -> None:
    """`docker build http://.../ctx.tar.gz` (the CLI downloads it and sends the body) and
    docker-py's `images.build(path=URL)` (it sends `remote=URL`: the daemon fetches, here as the
    operator, who may reach loopback): a compressed tar context whose image runs, a URL that is
    the Dockerfile itself, and a git URL refused by name."""
    docker = pytest.importorskip("docker")
    served = tmp_path / "served"
    served.mkdir()
    files = {"Dockerfile": f"FROM {IMG}\nCOPY greeting.txt /greeting.txt\n"
                           'CMD ["cat", "/greeting.txt"]\n',
             "greeting.txt": "hello from a remote context\n"}
    (served / "ctx.tar.gz").write_bytes(tar_of(files, "w:gz"))
    (served / "ctx.tar.bz2").write_bytes(tar_of(files, "w:bz2"))
    (served / "ctx.tar.xz").write_bytes(tar_of(
        dict(files, Dockerfile=files["Dockerfile"] + "RUN echo ran-$(cat /greeting.txt)\n"),
        "w:xz"))
    (served / "Dockerfile").write_text(f"FROM {IMG}\nLABEL from.remote=dockerfile\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client = docker.DockerClient(base_url=dockerd.host, version="1.43")
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        code, out = build(dockerd, f"{url}/ctx.tar.gz", "-t", "remotecli:gz")
        assert code == 0, out
        assert dockerd.out("run", "--rm", "remotecli:gz") == "hello from a remote context\n"
        code, out = build(dockerd, f"{url}/ctx.tar.bz2", "-t", "remotecli:bz2")
        assert code == 0 and "Using cache" in out, out  # same steps as the gzip one
        image, logs = client.images.build(path=f"{url}/ctx.tar.xz", tag="remotepy:xz",
                                          timeout=600)
        text = "".join(str(chunk.get("stream", "")) for chunk in logs)
        assert "remotepy:xz" in image.tags and "ran-hello from a remote context" in text, text
        image, _ = client.images.build(path=f"{url}/Dockerfile", tag="remotepy:df",
                                       timeout=600)
        assert image.labels.get("from.remote") == "dockerfile"
        with pytest.raises(docker.errors.DockerException,
                           match="git build contexts are not supported"):
            client.images.build(path="https://github.com/owner/repo.git", timeout=60)
    finally:
        client.close()
        server.shutdown()
        server.server_close()
        thread.join()


def test_builder_prune_empties_the_cache(dockerd: Docker, tmp_path: Path) -> None:
    ctx = tmp_path / "prune"
    write(ctx / "Dockerfile", f"FROM {IMG}\nRUN echo é-split-safe > /f\n")
    code, out = build(dockerd, ctx, "-t", "prunable")
    assert code == 0 and "Running in" in out, out
    code, out = build(dockerd, ctx, "-t", "prunable")
    assert "Using cache" in out, out
    pruned = dockerd.out("builder", "prune", "-f")
    assert "Total reclaimed space" in pruned, pruned
    code, out = build(dockerd, ctx, "-t", "prunable")
    assert code == 0 and "Running in" in out and "Using cache" not in out, out
    assert dockerd.out("run", "--rm", "prunable", "cat", "/f") == "é-split-safe\n"


def test_docker_compose_build_section(dockerd: Docker, tmp_path: Path) -> None:
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.skip("docker-compose not installed")
    project = tmp_path / "composed"
    write(project / "app" / "Dockerfile",
          f"FROM {IMG}\nARG FLAVOUR\nRUN echo compose-$FLAVOUR > /flavour\n"
          'CMD ["cat", "/flavour"]\n')
    write(project / "docker-compose.yml",
          'version: "3.7"\nservices:\n  app:\n    image: composebuilt:1\n'
          "    build:\n      context: ./app\n      args:\n        FLAVOUR: vanilla\n")
    env = dict(dockerd.env, COMPOSE_PROJECT_NAME="cb")
    result = subprocess.run([compose, "build"], cwd=project, capture_output=True, timeout=600,
                            env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert dockerd.out("run", "--rm", "composebuilt:1") == "compose-vanilla\n"
    # `up` builds a service's missing image (named for the project) before running it
    write(project / "greeter" / "Dockerfile",
          f"FROM {IMG}\nARG WORD\nRUN echo compose-up-$WORD > /said\nCMD [\"cat\", \"/said\"]\n")
    write(project / "docker-compose.yml",
          'version: "3.7"\nservices:\n  greeter:\n    build:\n      context: ./greeter\n'
          "      args:\n        WORD: built\n    network_mode: none\n")  # this daemon: no networks
    result = subprocess.run([compose, "up", "--no-color", "--abort-on-container-exit"],
                            cwd=project, capture_output=True, timeout=600, env=env)
    said = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, said
    assert "Running in" in said and "compose-up-built" in said, said
    assert dockerd.out("images", "-q", "cb_greeter") != ""
    down = subprocess.run([compose, "down"], cwd=project, capture_output=True, timeout=300,
                          env=env)
    assert down.returncode == 0, down.stdout + down.stderr
