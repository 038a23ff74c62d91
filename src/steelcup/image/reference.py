"""Parse and normalise image references (`busybox`, `host:5000/ns/app:1.0`, `app@sha256:...`).

Pure functions only. Names are normalised like docker: `busybox` is `docker.io/library/busybox`,
the default tag is `latest`, and `familiar()` gives back the short form `docker images` shows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from steelcup.errors import InvalidArgument

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
MAX_NAME_LEN = 255

_COMPONENT_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN_RE = re.compile(
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)"
    r"(?:\.(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?))*"
    r"(?::[0-9]+)?"
    r"|\[[a-fA-F0-9:]+\](?::[0-9]+)?"
)
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST_RE = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")
_HEX64_RE = re.compile(r"[a-f0-9]{64}")


@dataclass(frozen=True)
class Reference:
    """A normalised reference. `domain` and `path` are canonical (`docker.io`, `library/x`)."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """Canonical repository name, e.g. `docker.io/library/busybox`."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        """The repository name as `docker images` shows it, e.g. `busybox`, `steelcup/busybox`."""
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        return self.path.removeprefix(OFFICIAL_PREFIX)

    def familiar(self) -> str:
        """Short display form including tag/digest, e.g. `busybox:latest`."""
        return self.familiar_name + self._suffix()

    def canonical(self) -> str:
        """Fully qualified form, e.g. `docker.io/library/busybox:latest`."""
        return self.name + self._suffix()

    def with_tag(self, tag: str) -> Reference:
        if not _TAG_RE.fullmatch(tag):
            raise InvalidArgument(f"invalid tag format: {tag!r}")
        return Reference(self.domain, self.path, tag, None)

    def _suffix(self) -> str:
        text = ""
        if self.tag is not None:
            text += ":" + self.tag
        if self.digest is not None:
            text += "@" + self.digest
        return text

    def __str__(self) -> str:
        return self.familiar()


def parse_reference(text: str, *, default_tag: bool = True) -> Reference:
    """Parse `text` into a `Reference`; adds tag `latest` when neither tag nor digest is given.

    Raises InvalidArgument with docker's wording for malformed references.
    """
    if not text:
        raise InvalidArgument("invalid reference format: repository name must not be empty")
    remainder = text
    digest: str | None = None
    if "@" in remainder:
        remainder, digest = remainder.split("@", 1)
        if not _DIGEST_RE.fullmatch(digest):
            raise InvalidArgument(f"invalid reference format: bad digest in {text!r}")
        algo, _, hexpart = digest.partition(":")
        if algo == "sha256" and not _HEX64_RE.fullmatch(hexpart):
            raise InvalidArgument(f"invalid reference format: bad sha256 digest in {text!r}")
    tag: str | None = None
    last_slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > last_slash:
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        if not _TAG_RE.fullmatch(tag):
            raise InvalidArgument(f"invalid reference format: bad tag in {text!r}")
    if not remainder:
        raise InvalidArgument(f"invalid reference format: {text!r}")
    domain, path = _split_domain(remainder)
    if domain != DEFAULT_DOMAIN and not _DOMAIN_RE.fullmatch(domain):
        raise InvalidArgument(f"invalid reference format: bad registry host in {text!r}")
    if any(c.isupper() for c in path):
        raise InvalidArgument(
            f"invalid reference format: repository name ({path}) must be lowercase"
        )
    for component in path.split("/"):
        if not _COMPONENT_RE.fullmatch(component):
            raise InvalidArgument(f"invalid reference format: {text!r}")
    if len(domain) + 1 + len(path) > MAX_NAME_LEN:
        raise InvalidArgument(
            f"invalid reference format: repository name must not be more than "
            f"{MAX_NAME_LEN} characters"
        )
    if tag is None and digest is None and default_tag:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest)


def parse_tag_reference(text: str) -> Reference:
    """Parse a reference to create a tag from: `parse_reference`, but a digest is refused."""
    ref = parse_reference(text)
    if ref.digest is not None:
        raise InvalidArgument(f"refusing to create a tag with a digest reference: {text}")
    return ref


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if sep and (("." in first or ":" in first) or first == "localhost" or first != first.lower()):
        domain, path = first, rest
    else:
        domain, path = DEFAULT_DOMAIN, name
    if domain == LEGACY_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_PREFIX + path
    return domain, path


def is_full_id(text: str) -> bool:
    """True for `sha256:<64 hex>` or bare 64 hex (an image id, never a name)."""
    return _HEX64_RE.fullmatch(text.removeprefix("sha256:")) is not None


def is_id_prefix(text: str) -> bool:
    """True if `text` could be a (short) image id: hex, optionally prefixed with `sha256:`."""
    hexpart = text.removeprefix("sha256:")
    return 0 < len(hexpart) <= 64 and re.fullmatch(r"[a-f0-9]+", hexpart) is not None
