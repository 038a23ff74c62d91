"""Where the CLI's daemon is and how to talk to it: a unix socket (the operator's), or a TCP
address with TLS (a tenant of a multi-tenant daemon, or an operator's remote daemon).

Chosen like the docker CLI chooses: `-H` first, then `$STEELCUP_HOST`, then `$DOCKER_HOST` when
it names a TCP address (a `unix://` DOCKER_HOST is a docker daemon's socket, not ours), then
the default socket. TLS from `--tlsverify`/`--tls` or `$DOCKER_TLS_VERIFY`, with the files of
`--tlscacert/--tlscert/--tlskey`, else `$DOCKER_CERT_PATH` (or ~/.docker) `ca.pem`, `cert.pem`,
`key.pem`; a tenant without a certificate may give a bearer token (`$STEELCUP_TOKEN` or the
`token` file `steelcup tenant key create` writes next to them).

Pure apart from `tls_context` and reading the token file (the CLI imports ssl only for TCP).
"""

from __future__ import annotations

import os
from collections import namedtuple
from collections.abc import Mapping

from steelcup.errors import InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ssl

PORT_TLS = 2376  # docker's ports when tcp://HOST names none
PORT_PLAIN = 2375


# namedtuples, not dataclasses: the CLI does not import dataclasses (start-up cost).
# verify: check the daemon's certificate against `ca` (docker's --tlsverify)
TlsFiles = namedtuple("TlsFiles", "ca cert key verify")


class Endpoint(namedtuple("Endpoint", "unix_path host port tls token",
                          defaults=("", "", 0, None, ""))):
    """A unix socket (`unix_path`) or TCP (`host`, `port`, `tls`: TlsFiles or None, `token`:
    sent as `Authorization: Bearer`, over TLS only)."""

    __slots__ = ()

    @property
    def is_unix(self) -> bool:
        return bool(self.unix_path)

    def __str__(self) -> str:
        return f"unix://{self.unix_path}" if self.is_unix else f"tcp://{self.host}:{self.port}"


# The CLI's global TLS options as given (None: not given).
TlsFlags = namedtuple("TlsFlags", "tls verify ca cert key", defaults=(False, False, None, None,
                                                                      None))


def resolve(host_flag: str | None, flags: TlsFlags, env: Mapping[str, str],
            default_socket: str, home: str = "~") -> Endpoint:
    """The endpoint the CLI talks to (see the module's docstring for the order)."""
    address = host_flag or env.get("STEELCUP_HOST", "")
    if not address:
        docker_host = env.get("DOCKER_HOST", "")
        address = docker_host if docker_host.startswith("tcp://") else ""
    if not address or address.startswith("unix://") or address.startswith("/"):
        return Endpoint(unix_path=address.removeprefix("unix://") or default_socket)
    if not address.startswith("tcp://"):
        raise InvalidArgument(f"unsupported daemon address {address!r}: use unix://PATH or "
                              "tcp://HOST:PORT")
    verify = flags.verify or bool(env.get("DOCKER_TLS_VERIFY"))
    use_tls = verify or flags.tls or any((flags.ca, flags.cert, flags.key))
    host, port = _host_port(address.removeprefix("tcp://"), PORT_TLS if use_tls else PORT_PLAIN)
    if not use_tls:
        return Endpoint(host=host, port=port)
    cert_dir = env.get("DOCKER_CERT_PATH") or os.path.join(os.path.expanduser(home), ".docker")
    files = TlsFiles(ca=flags.ca or os.path.join(cert_dir, "ca.pem"),
                     cert=flags.cert or os.path.join(cert_dir, "cert.pem"),
                     key=flags.key or os.path.join(cert_dir, "key.pem"), verify=verify)
    token = env.get("STEELCUP_TOKEN", "") or _read_token(os.path.join(cert_dir, "token"))
    return Endpoint(host=host, port=port, tls=files, token=token)


def _host_port(text: str, default_port: int) -> tuple[str, int]:
    text = text.rstrip("/")
    if text.startswith("["):  # [v6]:port
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not host:
        raise InvalidArgument(f"no host in daemon address tcp://{text}")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InvalidArgument(f"bad port in daemon address tcp://{text}")
    return host, int(port_text)


def _read_token(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return ""


def tls_context(files: TlsFiles) -> ssl.SSLContext:
    """The client side of docker's TLS: our certificate if we have one (a tenant with only a
    token has none), the daemon's checked against the CA when verifying."""
    import ssl

    try:
        if files.verify:
            context = ssl.create_default_context(cafile=files.ca)
        else:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if os.path.exists(files.cert) or os.path.exists(files.key):
            context.load_cert_chain(files.cert, files.key)
    except (OSError, ssl.SSLError) as exc:
        raise InvalidArgument(
            f"cannot use the TLS files {files.ca}, {files.cert}, {files.key}: {exc} "
            "(set DOCKER_CERT_PATH to the directory `steelcup tenant key create` wrote, or "
            "give --tlscacert/--tlscert/--tlskey)") from exc
    return context
