"""Container filesystem commands: diff, cp, export, commit, rename, container prune."""

from __future__ import annotations

import argparse
import base64
import json
import os
import posixpath
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Callable
from typing import IO, Any

from steelcup.cli.client import ApiClient, StreamedResponse, _Reader, path_quote
from steelcup.cli.context import Context, report
from steelcup.errors import InvalidArgument, NotFound, SteelcupError

TAR = "application/x-tar"
STAT_HEADER = "x-docker-container-path-stat"
_GO_DIR = 1 << 31
_GO_SYMLINK = 1 << 27
_CHUNK = 1 << 20


def register(sub: Any, name: str, help_text: str) -> None:
    """Add the parser of command `name` (one of this module's rows in `commands.COMMANDS`)."""
    if name == "diff":
        p = sub.add_parser(name, help=help_text)
        p.add_argument("container", metavar="CONTAINER")
        p.set_defaults(func=cmd_diff)
    elif name == "cp":
        p = sub.add_parser(
            name, help=help_text,
            description="steelcup cp [OPTIONS] CONTAINER:SRC_PATH DEST_PATH|-\n"
            "steelcup cp [OPTIONS] SRC_PATH|- CONTAINER:DEST_PATH\n"
            "'-' reads or writes a tar archive on stdin/stdout; SRC_PATH/. copies the contents.",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("-a", "--archive", action="store_true", help="keep uid/gid of the files")
        p.add_argument("-L", "--follow-link", action="store_true",
                       help="always follow a symbolic link in SRC_PATH")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
        p.add_argument("src", metavar="SRC")
        p.add_argument("dest", metavar="DEST")
        p.set_defaults(func=cmd_cp)
    elif name == "export":
        p = sub.add_parser(name, help=help_text)
        p.add_argument("-o", "--output", default=None, help="write to a file instead of STDOUT")
        p.add_argument("container", metavar="CONTAINER")
        p.set_defaults(func=cmd_export)
    elif name == "commit":
        p = sub.add_parser(name, help=help_text)
        p.add_argument("-a", "--author", default="", help='author (e.g. "Jane <jane@example.com>")')
        p.add_argument("-c", "--change", action="append", default=[],
                       help="apply a Dockerfile instruction to the image (CMD, ENV, ...)")
        p.add_argument("-m", "--message", default="", help="commit message")
        p.add_argument("-p", "--pause", action=argparse.BooleanOptionalAction, default=True,
                       help="accepted for docker compatibility (a VM is not paused)")
        p.add_argument("container", metavar="CONTAINER")
        p.add_argument("reference", nargs="?", default="", metavar="REPOSITORY[:TAG]")
        p.set_defaults(func=cmd_commit)
    elif name == "rename":
        p = sub.add_parser(name, help=help_text)
        p.add_argument("container", metavar="CONTAINER")
        p.add_argument("new_name", metavar="NEW_NAME")
        p.set_defaults(func=cmd_rename)
    elif name == "container":
        container = sub.add_parser(name, help=help_text)
        csub = container.add_subparsers(dest="container_command", metavar="COMMAND")
        p = csub.add_parser("prune", help="remove all stopped containers")
        p.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")
        p.add_argument("--filter", action="append", default=[],
                       help='filter values (e.g. "until=24h", "label=k=v")')
        p.set_defaults(func=cmd_container_prune)
    else:
        raise ValueError(f"{__name__} has no command {name!r}")


def _c(name: str) -> str:
    return f"/containers/{path_quote(name)}"


# ----------------------------------------------------------------------- diff, rename, prune


def cmd_diff(ctx: Context, args: argparse.Namespace) -> int:
    try:
        changes = ctx.client().get_json(f"{_c(args.container)}/changes")
    except SteelcupError as exc:
        report(exc)
        return 1
    for change in changes or []:
        print(f"{'CAD'[int(change.get('Kind', 0))]} {change.get('Path', '')}")
    return 0


def cmd_rename(ctx: Context, args: argparse.Namespace) -> int:
    try:
        ctx.client().post(f"{_c(args.container)}/rename", {"name": args.new_name})
    except SteelcupError as exc:
        report(exc)
        return 1
    return 0


def cmd_container_prune(ctx: Context, args: argparse.Namespace) -> int:
    from steelcup.cli.commands.containers import filters_json
    from steelcup.cli.format import human_size

    if not args.force:
        answer = input("WARNING! This will remove all stopped containers.\n"
                       "Are you sure you want to continue? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            return 0
    try:
        reply = ctx.client().post_json("/containers/prune",
                                       {"filters": filters_json(args.filter)})
    except SteelcupError as exc:
        report(exc)
        return 1
    deleted = reply.get("ContainersDeleted") or []
    if deleted:
        print("Deleted Containers:")
        for cid in deleted:
            print(cid)
        print()
    print(f"Total reclaimed space: {human_size(reply.get('SpaceReclaimed', 0))}")
    return 0


# ----------------------------------------------------------------------- commit, export


def cmd_commit(ctx: Context, args: argparse.Namespace) -> int:
    from steelcup.cli.commands.images import split_reference

    repo, tag = split_reference(args.reference) if args.reference else ("", "")
    query = {
        "container": args.container, "repo": repo or None, "tag": tag or None,
        "comment": args.message or None, "author": args.author or None,
        # one value, one instruction per line: the query encoder keeps one value per key
        "changes": "\n".join(args.change) or None, "pause": args.pause,
    }
    try:
        reply = ctx.client().post_json("/commit", query)
    except SteelcupError as exc:
        report(exc)
        return 1
    print(reply.get("Id", ""))
    return 0


def cmd_export(ctx: Context, args: argparse.Namespace) -> int:
    if args.output is None and sys.stdout.isatty():
        print("cowardly refusing to save to a terminal. Use the -o flag or redirect",
              file=sys.stderr)
        return 1
    try:
        response = ctx.client().open("GET", f"{_c(args.container)}/export")
    except SteelcupError as exc:
        report(exc)
        return 1
    with response:
        if args.output is None:
            return _to_stream(response, sys.stdout.buffer)
        tmp = f"{args.output}.steelcup-tmp"
        try:
            with open(tmp, "wb") as out:
                status = _to_stream(response, out)
            if status == 0:
                os.replace(tmp, args.output)
            return status
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _to_stream(response: StreamedResponse, out: IO[bytes]) -> int:
    try:
        for chunk in response.iter_chunks():
            out.write(chunk)
        out.flush()
    except SteelcupError as exc:
        report(exc)
        return 1
    return 0


# ----------------------------------------------------------------------- cp


def split_cp_arg(arg: str) -> tuple[str | None, str]:
    """docker's rule: `CONTAINER:PATH`, unless the argument is absolute or starts with '.'."""
    if arg == "-" or arg.startswith(("/", ".")):
        return None, arg
    name, sep, path = arg.partition(":")
    if not sep or not name:
        return None, arg
    return name, path


def wants_contents(path: str) -> bool:
    return path == "." or path.endswith("/.")


def rebase(name: str, old: str, new: str) -> str:
    """Rename the leading path component `old` of a tar entry to `new`."""
    trimmed = name.rstrip("/")
    if old != "." and trimmed.startswith("./"):
        trimmed = trimmed[2:]
    if trimmed == old:
        return new
    if trimmed.startswith(old + "/"):
        return new + trimmed[len(old):]
    return name


def cmd_cp(ctx: Context, args: argparse.Namespace) -> int:
    src_c, src = split_cp_arg(args.src)
    dst_c, dst = split_cp_arg(args.dest)
    try:
        if src_c is not None and dst_c is not None:
            raise InvalidArgument("copying between containers is not supported")
        if src_c is None and dst_c is None:
            raise InvalidArgument("must specify at least one container source")
        if src_c is not None:
            return copy_from(ctx.client(), src_c, src, dst, follow=args.follow_link)
        assert dst_c is not None
        return copy_to(ctx.client(), src, dst_c, dst, follow=args.follow_link,
                       keep_owner=args.archive)
    except NotFound as exc:
        if "http_status" in vars(exc):
            report(exc)
        else:
            print(str(exc), file=sys.stderr)
        return 1
    except (SteelcupError, OSError, tarfile.TarError) as exc:
        if isinstance(exc, SteelcupError):
            report(exc)
        else:
            print(f"steelcup cp: {exc}", file=sys.stderr)
        return 1


def stat_path(client: ApiClient, container: str, path: str) -> dict[str, Any] | None:
    """The container path's stat (HEAD archive); None if it does not exist."""
    # a HEAD answer has no body, whatever its Content-Length says: never read one
    response = client.open("HEAD", f"{_c(container)}/archive", {"path": path}, check=False)
    response.close()
    if response.status == 404:
        return None
    if response.status >= 400:
        # a HEAD answer carries no message: the same GET says why (raising it)
        client.open("GET", f"{_c(container)}/archive", {"path": path}).close()
        raise SteelcupError(f"Error response from daemon: HTTP {response.status} for "
                            f"{container}:{path}")
    return decode_stat(response.headers.get(STAT_HEADER, ""))


def decode_stat(value: str) -> dict[str, Any]:
    try:
        doc = json.loads(base64.b64decode(value))
    except ValueError as exc:
        raise SteelcupError(f"daemon sent an invalid path stat header: {exc}") from None
    if not isinstance(doc, dict):
        raise SteelcupError("daemon sent an invalid path stat header")
    return doc


def copy_from(client: ApiClient, container: str, src: str, dst: str, *, follow: bool) -> int:
    path = src
    if follow:
        info = stat_path(client, container, path)
        if info is not None and int(info.get("mode", 0)) & _GO_SYMLINK and info["linkTarget"]:
            path = str(info["linkTarget"])
    response = client.open("GET", f"{_c(container)}/archive", {"path": path})
    with response:
        info = decode_stat(response.headers.get(STAT_HEADER, ""))
        if dst == "-":
            return _to_stream(response, sys.stdout.buffer)
        with tempfile.TemporaryFile() as spool:
            for chunk in response.iter_chunks():
                spool.write(chunk)
            spool.seek(0)
            return _extract_local(spool, info, dst)


def _extract_local(spool: IO[bytes], info: dict[str, Any], dst: str) -> int:
    src_is_dir = bool(int(info.get("mode", 0)) & _GO_DIR)
    with tarfile.open(fileobj=spool, mode="r:") as tar:
        members = tar.getmembers()
        if not members:
            return 0
        first = members[0].name
        src_base = "." if first in (".", "./") or first.startswith("./") else (
            first.split("/", 1)[0])
        if os.path.isdir(dst):
            target, new_base = dst, None
        else:
            exists = os.path.lexists(dst)
            if exists and src_is_dir:
                raise InvalidArgument(f"cannot copy a directory to a file: {dst}")
            if not exists and dst.endswith("/") and not src_is_dir:
                raise InvalidArgument(f"destination directory {dst} does not exist")
            stripped = dst.rstrip("/") or "/"
            target = os.path.dirname(stripped) or "."
            new_base = os.path.basename(stripped)
            if not os.path.isdir(target):
                raise InvalidArgument(f"destination directory {target} does not exist")
            if exists:
                os.unlink(dst)  # replace the file itself, never write through a symlink
        if new_base is not None:
            for m in members:
                m.name = rebase(m.name, src_base, new_base)
                if m.islnk():
                    m.linkname = rebase(m.linkname, src_base, new_base)
        # the "tar" filter refuses absolute names, escapes and writes through symlinks
        tar.extractall(target, members=members, filter="tar")
    return 0


def copy_to(
    client: ApiClient, src: str, container: str, dst: str, *, follow: bool, keep_owner: bool
) -> int:
    query: dict[str, Any] = {"noOverwriteDirNonDir": True, "copyUIDGID": keep_owner or None}
    if src == "-":
        put_tar(client, container, dst, query, lambda out: shutil.copyfileobj(
            sys.stdin.buffer, out, _CHUNK))
        return 0
    if not os.path.lexists(src):
        raise InvalidArgument(f"lstat {src}: no such file or directory")
    local = os.path.realpath(src) if follow else src
    src_is_dir = os.path.isdir(local) and not os.path.islink(local)
    contents = wants_contents(src)
    if contents and not src_is_dir:
        raise InvalidArgument(f"{src}: not a directory")
    info = stat_path(client, container, dst)
    if info is not None and int(info.get("mode", 0)) & _GO_SYMLINK and info.get("linkTarget"):
        dst = str(info["linkTarget"])
        info = stat_path(client, container, dst)
    if info is not None and int(info.get("mode", 0)) & _GO_DIR:
        put_dir = dst
        arcname = "." if contents else os.path.basename(os.path.normpath(src))
    else:
        if info is not None and src_is_dir:
            raise InvalidArgument(f"cannot copy a directory to a file: {dst}")
        if info is None and dst.endswith("/") and not src_is_dir:
            raise InvalidArgument(f"destination directory {dst} does not exist")
        stripped = dst.rstrip("/") or "/"
        put_dir = posixpath.dirname(stripped) or "/"
        arcname = posixpath.basename(stripped)

    def produce(out: IO[bytes]) -> None:
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            tar.add(local, arcname=arcname)

    put_tar(client, container, put_dir, query, produce)
    return 0


class _ChunkedSocketWriter:
    """File-like: every write becomes one HTTP chunk on the socket."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock

    def write(self, data: bytes) -> int:
        if data:
            self._sock.sendall(b"%x\r\n" % len(data) + bytes(data) + b"\r\n")
        return len(data)

    def flush(self) -> None:
        pass


def put_tar(
    client: ApiClient,
    container: str,
    path: str,
    query: dict[str, Any],
    produce: Callable[[IO[bytes]], None],
) -> None:
    """PUT /containers/{id}/archive with a streamed (chunked) tar body."""
    # ApiClient.upload only POSTs; this is its PUT twin until it takes a `method`.
    sock = client._connect()
    try:
        client._send_head(sock, "PUT", f"{_c(container)}/archive", {**query, "path": path},
                          {"Content-Type": TAR, "Transfer-Encoding": "chunked"})
        try:
            produce(_ChunkedSocketWriter(sock))  # type: ignore[arg-type]
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon refused early; its answer says why
        reader = _Reader(sock)
        status, headers = client._read_head(reader)
    except BaseException:
        sock.close()
        raise
    response = StreamedResponse(sock, reader, status, headers)
    if status >= 400:
        client._raise_for(response)
    response.close()
