"""`docker export` and `docker commit`: a container's root as one tar, or its upper dir as a
new image layer, with a config from the container and `--change` instructions.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import tempfile
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import IO

from steelcup.errors import ImageError, InvalidArgument
from steelcup.idmap import IdRange
from steelcup.image import rootfs as rootfs_module
from steelcup.image.config import ImageConfig
from steelcup.image.store import Image
from steelcup.runtime.containers import Runtime
from steelcup.runtime.fs_paths import DIR_FLAGS, RUNTIME_PATHS, writable_layer
from steelcup.runtime.fs_tar import TreeWriter, open_tar
from steelcup.runtime.lifecycle import Op
from steelcup.runtime.model import ContainerRecord
from steelcup.untrusted_json import decode_json

# the contents of these are the guest kernel's, never the container's
EXPORT_SKIP_CONTENTS = frozenset({("proc",), ("sys",), ("dev",)})


def write_export(root_fd: int, out: IO[bytes], ids: IdRange | None = None) -> None:
    """The whole root filesystem, without what is under /proc, /sys and /dev; the /etc files
    steelcup wrote for the run are empty, as the mount points of dockerd's export (`ids`: the
    range its ids are stored with)."""
    with open_tar(out) as tar:
        TreeWriter(tar, ids=ids).add_dir_fd(
            root_fd, "", include_self=False,
            skip_contents=lambda rel: rel in EXPORT_SKIP_CONTENTS,
            blank=lambda rel: rel in RUNTIME_PATHS,
        )


def write_layer(upper: Path, out: IO[bytes], ids: IdRange | None = None) -> None:
    """An OCI layer tar from an overlay upper dir (whiteouts converted to `.wh.` entries;
    `ids`: the range its ids are stored with), without what steelcup made for the run."""
    with open_tar(out) as tar:
        if not upper.is_dir():
            return
        fd = os.open(upper, DIR_FLAGS)
        try:
            TreeWriter(tar, overlay_whiteouts=True, ids=ids).add_dir_fd(
                fd, "", include_self=False, exclude=lambda rel: rel in RUNTIME_PATHS)
        finally:
            os.close(fd)


async def commit(
    runtime: Runtime,
    ref: str,
    *,
    repo_tag: str | None,
    comment: str = "",
    author: str = "",
    changes: Iterable[str] = (),
    spool_dir: Path,
    tenant: str | None = None,
) -> Image:
    """`docker commit`: the container's image plus its upper dir as a new layer; the new image
    and its tag are `tenant`'s (None: the operator's)."""
    record = runtime.check(ref, Op.COMMIT)
    image = await asyncio.to_thread(runtime.images.get, record.config.image_id)
    config = apply_changes(commit_config(record, image), changes)
    spool_dir.mkdir(parents=True, exist_ok=True)

    def run(upper: Path) -> Image:
        with tempfile.TemporaryFile(dir=spool_dir) as spool:
            write_layer(upper, spool, ids)
            spool.seek(0)
            created_by = " ".join(shlex.quote(a) for a in (record.path, *record.args))
            return runtime.images.commit(
                record.config.image_id, spool, config=config, ref=repo_tag, comment=comment,
                author=author, created_by=created_by, tenant=tenant,
            )

    async with writable_layer(runtime, record.id, Op.COMMIT) as upper:
        ids = rootfs_module.ids_of(runtime.container_dir(record.id))
        new = await asyncio.to_thread(run, upper)
    runtime.events.publish("container", "commit", record.id, {
        "name": record.name, "comment": comment, "imageID": new.id,
        "imageRef": repo_tag or "", "author": author,
    }, record.config.tenant)
    return new


def commit_config(record: ContainerRecord, image: Image) -> ImageConfig:
    """The run-time config a committed image gets: the container's, over the image's."""
    c = record.config
    labels = {**image.config.labels, **dict(c.labels)}
    return replace(
        image.config,
        entrypoint=c.entrypoint,
        cmd=c.cmd,
        env=c.env,
        working_dir=c.working_dir if c.working_dir != "/" or image.config.working_dir else "",
        user=c.user,
        labels=labels,
        stop_signal=image.config.stop_signal,
    )


def apply_changes(config: ImageConfig, changes: Iterable[str]) -> ImageConfig:
    """Apply `docker commit --change` Dockerfile instructions to an image config."""
    cmd_set = False
    for raw_line in changes:
        for line in raw_line.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            word, _, rest = line.partition(" ")
            word, rest = word.upper(), rest.strip()
            if word not in _CHANGE_WORDS:
                raise InvalidArgument(f"{word} is not a valid change command")
            if word == "CMD":
                config = replace(config, cmd=_json_or_shell(rest))
                cmd_set = True
            elif word == "ENTRYPOINT":
                config = replace(config, entrypoint=_json_or_shell(rest) if rest else None,
                                 cmd=config.cmd if cmd_set else None)
            elif word == "ENV":
                env = config.env_dict()
                for key, value in _pairs(rest, word):
                    env[key] = value
                config = replace(config, env=tuple(f"{k}={v}" for k, v in env.items()))
            elif word == "LABEL":
                labels = dict(config.labels)
                labels.update(_pairs(rest, word))
                config = replace(config, labels=labels)
            elif word == "USER":
                config = replace(config, user=rest)
            elif word == "WORKDIR":
                config = replace(config, working_dir=os.path.normpath(
                    os.path.join(config.working_dir or "/", rest)))
            elif word == "STOPSIGNAL":
                config = replace(config, stop_signal=rest)
            elif word == "EXPOSE":
                ports = set(config.exposed_ports)
                for port in rest.split():
                    ports.add(port if "/" in port else f"{port}/tcp")
                config = replace(config, exposed_ports=tuple(sorted(ports)))
            elif word == "VOLUME":
                vols = set(config.volumes) | set(
                    _json_or_shell(rest) if rest.startswith("[") else rest.split())
                config = replace(config, volumes=tuple(sorted(vols)))
            else:  # ONBUILD: steelcup does not build images
                raise InvalidArgument("ONBUILD is not supported by steelcup commit")
    try:
        return ImageConfig.from_dict(config.to_dict())  # validate (ports, env)
    except ImageError as exc:
        raise InvalidArgument(str(exc)) from exc


_CHANGE_WORDS = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "USER", "VOLUME",
                 "WORKDIR", "STOPSIGNAL")


def _json_or_shell(text: str) -> tuple[str, ...]:
    if text.startswith("["):
        try:
            value = decode_json(text, "commit change")
        except InvalidArgument:
            value = None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
    return ("/bin/sh", "-c", text)


def _pairs(text: str, word: str) -> list[tuple[str, str]]:
    """`K=V K2="v 2"` or the legacy `K V` form of ENV/LABEL."""
    try:
        tokens = shlex.split(text)
    except ValueError as exc:
        raise InvalidArgument(f"{word}: {exc}") from None
    if not tokens:
        raise InvalidArgument(f"{word} requires at least one argument")
    if "=" not in tokens[0]:
        key, _, value = text.strip().partition(" ")
        return [(key, value.strip())]
    out = []
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"{word} names can not be blank: {token!r}")
        out.append((key, value))
    return out
