"""The Docker Engine API versions served, and the headers every response carries."""

from __future__ import annotations

from steelcup.errors import InvalidArgument

# The Engine API versions served: the docker 28 CLI negotiates down to API_VERSION; docker-py 7
# and compose 1.29 (API 1.25-1.41) fall inside. A prefix below MIN_API_VERSION is a 400 (as with
# dockerd); a newer one is served as API_VERSION (dockerd would refuse it, but clients pinned by
# DOCKER_API_VERSION keep working and every response says which version answered).
API_VERSION = "1.43"
MIN_API_VERSION = "1.24"
DEFAULT_HEADERS: tuple[tuple[str, str], ...] = (
    ("Api-Version", API_VERSION),
    # true: the docker CLI offers its server-experimental commands, of which steelcup serves
    # `checkpoint` and `start --checkpoint` (docs/checkpoints.md).
    ("Docker-Experimental", "true"),
    ("Ostype", "linux"),
    ("Server", "steelcup"),
)


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def check_api_version(version: str | None) -> None:
    """Reject a `/vX.Y` prefix older than the server speaks (dockerd's wording)."""
    if version is None:
        return
    if _version_tuple(version) < _version_tuple(MIN_API_VERSION):
        raise InvalidArgument(f"client version {version} is too old. Minimum supported API "
                              f"version is {MIN_API_VERSION}, please upgrade your client to a "
                              "newer version")
