"""`POST /build?remote=URL`: the context fetched from an http or https URL instead of the body,
as dockerd's classic builder does (docker-py and docker-compose send it for a URL context;
the docker CLI downloads a URL itself and sends the body). The fetch is ADD's
(`build.fetch`): same size cap, deadlines, redirects and address policy, so a tenant's remote
context can no more reach the host's loopback, private networks or a metadata service than its
ADD can. What arrives is a tar (plain or compressed), or else the Dockerfile itself.

Git contexts (`git://`, `git@`, `github.com/...`, a URL ending in `.git`) are refused: cloning
means running git on the host against a tenant's URL, which this builder does not do.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from steelcup.build import context as context_module
from steelcup.build.compression import is_archive
from steelcup.build.context import Context
from steelcup.build.fetch import FetchError, FetchLimits, check_url, fetch, is_url
from steelcup.errors import InvalidArgument, Unsupported

CLIENT_SESSION = "client-session"  # what a BuildKit client sends: not the classic builder's
GIT_PREFIXES = ("git://", "git@", "github.com/")
SNIFF_BYTES = 512  # as Go's http.DetectContentType
# the bytes that make Go's content sniffing say "not text" (moby decides with it)
_BINARY = frozenset([*range(0x00, 0x09), 0x0B, *range(0x0E, 0x1B), *range(0x1C, 0x20)])

Kind = Literal["archive", "dockerfile"]


def is_git(remote: str) -> bool:
    """A git context as dockerd recognises one."""
    return remote.startswith(GIT_PREFIXES) or (is_url(remote)
                                               and urlsplit(remote).path.endswith(".git"))


def remote_url(remote: str) -> str:
    """The URL to fetch for `remote`, or a clear refusal."""
    if remote == CLIENT_SESSION:
        raise Unsupported("BuildKit sessions are not supported: use the classic builder "
                          "(DOCKER_BUILDKIT=0), which sends the context in the request")
    if is_git(remote):
        raise Unsupported(f"{remote}: git build contexts are not supported; clone the "
                          "repository and build from its directory, or give the URL of a "
                          "tar archive")
    if not is_url(remote):
        raise InvalidArgument(f"remote ({remote}) could not be recognized as URL: an http or "
                              "https URL of a tar archive or a Dockerfile is expected")
    check_url(remote)
    return remote


def _is_text(head: bytes) -> bool:
    return not any(b in _BINARY for b in head[:SNIFF_BYTES])


def content_kind(content_type: str, head: bytes) -> Kind:
    """Whether what a remote URL answered is a context tar or a Dockerfile. Archive magic
    decides first (a tar is never a Dockerfile, whatever the server calls it); then, as
    dockerd, `text/plain` is a Dockerfile and another declared type an archive; with no type
    or `application/octet-stream` (what servers say of a file named `Dockerfile`), text is a
    Dockerfile."""
    if is_archive(head):
        return "archive"
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "text/plain":
        return "dockerfile"
    if media and media != "application/octet-stream":
        return "archive"
    return "dockerfile" if _is_text(head) else "archive"


def fetch_context(url: str, work_dir: Path, dockerfile: str, private_ok: bool,
                  limits: FetchLimits | None = None) -> Context:
    """Fetch `url` (whose reach `private_ok` decides: the operator's builds reach what the
    host reaches, a tenant's only public addresses) and make the build context of it."""
    work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=work_dir) as spool:
        try:
            got = fetch(url, spool, limits or FetchLimits(), private_ok)
        except FetchError as exc:
            raise FetchError(f"cannot download the remote build context: {exc}") from exc
        if got.size == 0:
            raise InvalidArgument(f"{url}: the remote build context is empty")
        spool.seek(0)
        head = spool.read(SNIFF_BYTES)
        spool.seek(0)
        if content_kind(got.content_type, head) == "archive":
            return context_module.unpack(spool, work_dir, dockerfile)
        if got.size > context_module.DOCKERFILE_MAX_BYTES:
            raise InvalidArgument(f"{url} is not a tar archive, and at {got.size} bytes too "
                                  "large to be a Dockerfile (the limit is "
                                  f"{context_module.DOCKERFILE_MAX_BYTES})")
        text = spool.read().decode("utf-8", errors="replace")
        return context_module.from_dockerfile(text, work_dir)
