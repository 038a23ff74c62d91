"""The builder over a real runtime and image store with the fake VM source: what a RUN's
process writes becomes the step's layer, its output is streamed, the cache skips VMs, and a
failed step leaves no container and no image of the caller. (The real VMs: the compat tier.)"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import http.server
import io
import json
import os
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from steelcup.build.builder import Builder, BuildFailed, BuildRequest
from steelcup.build.context import Context
from steelcup.build.ignore import IgnoreRules
from steelcup.errors import SteelcupError
from steelcup.image import rootfs
from steelcup.image.store import Image, ImageStore
from steelcup.pool.source import VmSource
from steelcup.runtime.containers import Runtime
from steelcup.runtime.events import EventBus
from steelcup.runtime.store import ContainerStore
from steelcup.state.db import open_db
from tests.unit.image.tarutil import make_tar
from tests.unit.runtime.fakevm import FakeProcess, FakeVms
from tests.unit.runtime.test_filesystem import _can_mount

BASE = make_tar([("dir", "bin"), ("dir", "etc"), ("file", "etc/passwd", b"root:x:0:0::/:\n"),
                 ("dir", "usr"), ("sym", "lib", "usr")])


@dataclass
class Env:
    tmp: Path
    images: ImageStore
    runtime: Runtime
    vms: FakeVms


@pytest.fixture
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    if os.geteuid() != 0 or not _can_mount(tmp_path_factory.mktemp("probe")):
        pytest.skip("mounting overlayfs is not permitted here")
    tmp = tmp_path_factory.mktemp("build")
    db = open_db(tmp)
    images = ImageStore(tmp / "images", db)
    images.import_rootfs(io.BytesIO(BASE), "base:1")
    vms = FakeVms()
    runtime = Runtime(tmp / "rt", ContainerStore(db), images, cast(VmSource, vms), EventBus())
    images.in_use = runtime.image_in_use
    yield Env(tmp, images, runtime, vms)
    for cdir in (tmp / "rt" / "containers").iterdir():
        rootfs.release(cdir)


def context(env: Env, dockerfile: str, files: dict[str, str] | None = None) -> Context:
    root = env.tmp / f"ctx-{os.urandom(4).hex()}" / "root"
    root.mkdir(parents=True)
    for name, text in (files or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return Context(root, dockerfile, "Dockerfile", IgnoreRules([]))


Guest = Callable[[FakeProcess, Path], Awaitable[None]]


def build(env: Env, ctx: Context, guest: Guest | None = None,
          **req: Any) -> tuple[Image | BaseException, str]:
    """Run a build; `guest` plays each RUN's process (its rootfs mount to write into)."""
    messages: list[dict[str, Any]] = []

    async def send(msg: dict[str, Any]) -> None:
        messages.append(msg)

    async def play() -> None:
        while True:
            process = await env.vms.next_process(timeout_s=60)
            (record,) = [r for r in env.runtime.list() if ("steelcup.build", "step")
                         in r.config.labels]
            assert guest is not None, f"no RUN expected, {process.spec.args} started"
            await guest(process, env.runtime.container_dir(record.id) / "rootfs")

    async def main() -> Image | BaseException:
        env.vms = FakeVms()  # its queue belongs to this run's loop
        env.runtime.vms = cast(VmSource, env.vms)
        player = asyncio.create_task(play())
        try:
            return await Builder(env.runtime, env.tmp / "spool", send).build(
                ctx, BuildRequest(**req))
        except SteelcupError as exc:
            return exc
        finally:
            player.cancel()

    result = asyncio.run(main())
    return result, "".join(str(m.get("stream", "")) for m in messages)


def layer_files(env: Env, image: Image, index: int = -1) -> dict[str, bytes]:
    layer = env.images.layer_dirs(image)[index]
    out = {}
    for dirpath, _dirs, files in os.walk(layer):
        for name in files:
            full = Path(dirpath) / name
            out[str(full.relative_to(layer))] = full.read_bytes()
    return out


async def writes_file(process: FakeProcess, root: Path) -> None:
    assert process.spec.args[:2] == ("/bin/sh", "-c")
    (root / "made").write_text(dict(e.split("=", 1) for e in process.spec.env)["GREETING"])
    process.write(b"working\n")
    process.exit(0)


DOCKERFILE = ("FROM base:1\nARG GREETING=hi\nENV A=1\nWORKDIR /app\nCOPY src/ ./\n"
              "RUN make-it\nCMD [\"run\"]\n")


def test_run_copy_workdir_layers_and_the_cache(env: Env) -> None:
    files = {"src/a.txt": "A", "src/sub/b.txt": "B"}
    image, out = build(env, context(env, DOCKERFILE, files), writes_file, tags=("app:1",),
                       build_args={"GREETING": "hello"})
    assert isinstance(image, Image), out
    assert "Step 6/7 : RUN make-it" in out and "working\n" in out
    assert "Successfully tagged app:1" in out
    assert layer_files(env, image) == {"made": b"hello"}  # the RUN's layer: what it wrote
    assert layer_files(env, image, -2) == {"app/a.txt": b"A", "app/sub/b.txt": b"B"}
    assert image.config.cmd == ("run",) and image.config.working_dir == "/app"
    assert image.config.env_dict()["A"] == "1" and "GREETING" not in image.config.env_dict()
    history = [h.created_by for h in env.images.history("app:1")]
    assert history[-2] == "|1 GREETING=hello /bin/sh -c make-it"
    assert not env.runtime.list()  # every step container is gone

    again, out = build(env, context(env, DOCKERFILE, files), None, tags=("app:1",),
                       build_args={"GREETING": "hello"})
    assert isinstance(again, Image) and again.id == image.id, out
    assert out.count("Using cache") == 6 and "Running in" not in out

    files["src/sub/b.txt"] = "changed"
    changed, out = build(env, context(env, DOCKERFILE, files), writes_file,
                         build_args={"GREETING": "hello"})
    assert isinstance(changed, Image) and changed.id != image.id
    assert out.count("Using cache") == 3 and "Running in" in out  # ARG, ENV, WORKDIR


def test_a_failing_run_leaves_no_container_and_no_image(env: Env) -> None:
    async def fails(process: FakeProcess, root: Path) -> None:
        process.write(b"about to fail\n")
        process.exit(3)

    before = [i.id for i in env.images.list()]
    failed, out = build(env, context(env, 'FROM base:1\nRUN ["false", "x"]\n'), fails,
                        tags=("never:1",))
    assert isinstance(failed, BuildFailed) and failed.code == 3
    assert str(failed) == """The command '["false", "x"]' returned a non-zero code: 3"""
    assert "about to fail" in out
    assert not env.runtime.list()
    assert [i.id for i in env.images.list()] == before


def test_copy_from_a_stage_into_scratch_and_chown(env: Env) -> None:
    async def writes(process: FakeProcess, root: Path) -> None:
        (root / "usr" / "tool").write_text("binary")
        process.exit(0)

    dockerfile = ("FROM base:1 AS build\nRUN build\nFROM scratch\n"
                  "COPY --from=build --chown=7:8 /lib/tool /bin/\n")
    image, out = build(env, context(env, dockerfile), writes, tags=("small:1",))
    assert isinstance(image, Image), out
    assert len(image.diff_ids) == 1  # scratch + one COPY layer
    layer = env.images.layer_dirs(image)[0]
    st = (layer / "bin" / "tool").stat()
    assert (layer / "bin" / "tool").read_text() == "binary"  # /lib was a symlink to usr
    assert (st.st_uid, st.st_gid) == (7, 8)


def test_errors_name_the_line(env: Env) -> None:
    for dockerfile, message in [
        ("FROM base:1\nCOPY ../x /x\n", "forbidden path outside the build context: ../x"),
        ("FROM base:1\nCOPY missing /x\n", "file not found in build context"),
        ("FROM base:1\nADD git@example.invalid:r.git /r\n",
         "line 2: ADD: source git@example.invalid:r.git: git sources are not supported"),
        ("FROM base:1\nCOPY http://example.invalid/f /f\n",
         "line 2: COPY: source can't be a URL for COPY"),
        ("FROM base:1\nADD --checksum=sha256:00 f /f\n",
         "--checksum can only be used with an HTTP(S) source"),
        (f"FROM base:1\nADD --checksum=sha256:{'g' * 64} http://h/f /f\n",
         "sha256:<64 hex digits> expected"),
        ("FROM nope:1\n", "line 1: No such image: nope:1"),
        ("FROM base:1 AS a\nCOPY --from=b /x /x\nFROM base:1 AS b\n",
         "line 2: COPY: --from=b: the stage 'b' comes after this one"),
    ]:
        failed, _ = build(env, context(env, dockerfile))
        assert isinstance(failed, Exception) and message in str(failed), (dockerfile, failed)
        assert not env.runtime.list()


def test_labels_and_quiet(env: Env) -> None:
    image, out = build(env, context(env, "FROM base:1\nLABEL a=1\n"), labels={"b": "2"},
                       quiet=True, tags=("q:1",))
    assert isinstance(image, Image)
    assert out == image.id + "\n"
    assert json.loads(image.raw_config)["config"]["Labels"] == {"a": "1", "b": "2"}


def test_a_cancelled_build_removes_its_running_step(env: Env) -> None:
    """The client going away cancels the build: the RUN's container (and so its VM) goes."""
    async def main() -> None:
        env.vms = FakeVms()
        env.runtime.vms = cast(VmSource, env.vms)

        async def send(msg: dict[str, Any]) -> None:
            pass

        ctx = context(env, "FROM base:1\nRUN sleep forever\n")
        task = asyncio.create_task(
            Builder(env.runtime, env.tmp / "spool", send).build(ctx, BuildRequest()))
        process = await env.vms.next_process(timeout_s=60)
        assert len(env.runtime.list()) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert process.signals  # killed, not left running
        assert env.runtime.list() == []
        assert all(m.closed for m in env.vms.machines)

    asyncio.run(main())


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory served over HTTP on 127.0.0.1, and its base URL."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_add_of_a_url_fetches_it_and_its_checksum_keys_the_cache(
        env: Env, served: tuple[Path, str]) -> None:
    root, base = served
    (root / "tool.tar").write_bytes(make_tar([("file", "inner", b"x")]))  # never unpacked
    (root / "f.txt").write_text("first")
    dockerfile = f"FROM base:1\nADD {base}/f.txt {base}/tool.tar /got/\nADD {base}/f.txt /one\n"
    image, out = build(env, context(env, dockerfile), tags=("fetched:1",))
    assert isinstance(image, Image), out
    got = layer_files(env, image, -2)
    assert got["got/f.txt"] == b"first" and got["got/tool.tar"].startswith(b"inner")
    assert layer_files(env, image) == {"one": b"first"}
    assert (env.images.layer_dirs(image)[-1] / "one").stat().st_mode & 0o777 == 0o600

    again, out = build(env, context(env, dockerfile))
    assert isinstance(again, Image) and again.id == image.id and out.count("Using cache") == 2
    (root / "f.txt").write_text("second")
    changed, out = build(env, context(env, dockerfile))
    assert isinstance(changed, Image) and "Using cache" not in out, out
    assert layer_files(env, changed) == {"one": b"second"}

    digest = "sha256:" + hashlib.sha256(b"second").hexdigest()
    pinned, out = build(env, context(env, f"FROM base:1\nADD --checksum={digest} "
                                     f"{base}/f.txt /p\n"))
    assert isinstance(pinned, Image), out
    wrong, _ = build(env, context(env, f"FROM base:1\nADD --checksum=sha256:{'0' * 64} "
                                  f"{base}/f.txt /p\n"))
    assert isinstance(wrong, BuildFailed) and "checksum mismatch" in str(wrong)
    missing, _ = build(env, context(env, f"FROM base:1\nADD {base}/nothing /n\n"))
    assert isinstance(missing, BuildFailed) and "line 2: ADD failed" in str(missing)
    assert "404" in str(missing)
    assert not env.runtime.list()


def test_a_tenants_add_may_not_reach_the_hosts_loopback(
        env: Env, served: tuple[Path, str]) -> None:
    """The attack: a tenant's Dockerfile asks the builder, which runs on the host, for a
    URL on the host's loopback (the daemon's own API, a metadata service...)."""
    root, base = served
    (root / "secret").write_text("host-only")
    failed, _ = build(env, context(env, f"FROM scratch\nADD {base}/secret /s\n"),
                      tenant="mallory")
    assert isinstance(failed, BuildFailed), failed
    assert "127.0.0.1, which a tenant's build may not reach" in str(failed)
    assert not env.runtime.list()
