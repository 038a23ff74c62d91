"""OCI distribution client (httpx): pull images into an `ImageStore`, push them out of it.

Synchronous, meant to run in a worker thread; layers move concurrently on a small pool.
Every blob is verified against its digest and size before it is committed to the store.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin

import httpx

from steelcup.errors import ImageError, InvalidArgument, NotFound, SteelcupError
from steelcup.image.auth import (
    Credentials,
    basic_authorization,
    is_loopback_registry,
    parse_challenges,
    registry_api_host,
    repository_scope,
)
from steelcup.image.blobs import MAX_JSON_BYTES
from steelcup.image.manifest import (
    ACCEPT,
    SCHEMA1_TYPES,
    Descriptor,
    Index,
    Manifest,
    build_manifest,
    parse_manifest,
    parse_platform,
    select_platform,
)
from steelcup.image.reference import DEFAULT_DOMAIN, Reference, parse_reference
from steelcup.image.store import Image, ImageStore, Lease, StoredManifest
from steelcup.untrusted_json import decode_json

CHUNK = 256 << 10
_UNSET = object()


class RegistryAuthError(SteelcupError):
    """The registry refused our credentials (or wants some and we have none)."""


class Cancelled(SteelcupError):
    """The caller gave up (the API client disconnected)."""


@dataclass(frozen=True)
class RegistryOptions:
    """How to talk to registries. Loopback registries may always use plain HTTP (as docker)."""

    insecure_registries: tuple[str, ...] = ()  # hosts allowed plain HTTP / unverified TLS
    ca_file: Path | None = None  # extra CA bundle for every registry
    certs_dir: Path | None = None  # <certs_dir>/<host>/ca.crt, like /etc/docker/certs.d
    timeout_s: float = 60.0
    max_concurrent: int = 3  # layer downloads/uploads at once (docker's default is 3)
    retries: int = 3
    platform: str = ""  # os/arch[/variant]; empty = linux/amd64


@dataclass(frozen=True)
class ProgressEvent:
    """One progress message, in docker's wording (`Downloading`, `Pull complete`, ...)."""

    status: str
    id: str = ""
    current: int | None = None
    total: int | None = None


ProgressFn = Callable[[ProgressEvent], None]


@dataclass(frozen=True)
class PullResult:
    image: Image
    digest: str  # the manifest (or index) digest: what RepoDigests shows
    downloaded: bool  # False: the image was already here ("Image is up to date")


def _no_progress(_event: ProgressEvent) -> None:
    return None


# --------------------------------------------------------------------------- session


class _Session:
    """One registry host: base URL (https, or http when allowed), auth state, HTTP client."""

    def __init__(
        self,
        domain: str,
        creds: Credentials | None,
        options: RegistryOptions,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.domain = domain
        self.host = registry_api_host(domain)
        self.creds = creds or Credentials()
        self.options = options
        self.insecure = is_loopback_registry(self.host) or self.host in options.insecure_registries
        verify: bool | ssl.SSLContext = False if self.insecure else self._ssl_context()
        self.client = httpx.Client(
            verify=verify,
            timeout=httpx.Timeout(options.timeout_s, connect=min(options.timeout_s, 15.0)),
            follow_redirects=True,
            limits=httpx.Limits(max_connections=options.max_concurrent + 2),
            transport=transport,
        )
        self._base: str | None = None
        self._lock = threading.Lock()
        self._tokens: dict[str, str] = {}  # scope -> bearer token
        self._basic = False

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        if self.options.ca_file is not None:
            ctx.load_verify_locations(cafile=str(self.options.ca_file))
        if self.options.certs_dir is not None:
            host_dir = self.options.certs_dir / self.host
            for ca in sorted(host_dir.glob("*.crt")) if host_dir.is_dir() else []:
                ctx.load_verify_locations(cafile=str(ca))
        return ctx

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> _Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- base URL and auth
    def base(self) -> str:
        with self._lock:
            if self._base is None:
                self._base = self._probe()
            return self._base

    def _probe(self) -> str:
        schemes = ("https", "http") if self.insecure else ("https",)
        last: Exception | None = None
        for scheme in schemes:
            url = f"{scheme}://{self.host}"
            try:
                self.client.get(url + "/v2/").close()
                return url
            except httpx.TransportError as exc:
                last = exc
        raise SteelcupError(f"cannot reach registry {self.host}: {last}") from last

    def _authorization(self, scope: str) -> str | None:
        token = self._tokens.get(scope)
        if token is not None:
            return "Bearer " + token
        if self._basic and self.creds.username:
            return basic_authorization(self.creds.username, self.creds.password)
        return None

    def _authenticate(self, response: httpx.Response, scope: str) -> None:
        challenges = parse_challenges(response.headers.get("www-authenticate", ""))
        for challenge in challenges:
            if challenge.scheme == "bearer" and challenge.params.get("realm"):
                self._tokens[scope] = self._fetch_token(challenge.params, scope)
                return
        for challenge in challenges:
            if challenge.scheme == "basic":
                if not self.creds.username:
                    raise RegistryAuthError(
                        f"unauthorized: authentication required by {self.host} "
                        f"(use `steelcup login {self.domain}`)"
                    )
                self._basic = True
                return
        raise RegistryAuthError(f"unauthorized: {self.host} sent no usable auth challenge")

    def _fetch_token(self, params: dict[str, str], scope: str) -> str:
        if self.creds.registry_token:
            return self.creds.registry_token
        realm = params["realm"]
        query: list[tuple[str, str]] = []
        if params.get("service"):
            query.append(("service", params["service"]))
        query += [("scope", s) for s in scope.split(" ") if s]
        headers: dict[str, str] = {}
        if self.creds.identity_token:
            form = dict(query) | {
                "grant_type": "refresh_token",
                "refresh_token": self.creds.identity_token,
                "client_id": "steelcup",
            }
            resp = self.client.post(realm, data=form)
        else:
            if self.creds.username:
                query.append(("account", self.creds.username))
                headers["Authorization"] = basic_authorization(
                    self.creds.username, self.creds.password
                )
            sep = "&" if "?" in realm else "?"
            resp = self.client.get(
                realm + (sep + urlencode(query) if query else ""), headers=headers
            )
        if resp.status_code in (401, 403):
            raise RegistryAuthError(
                f"unauthorized: incorrect username or password for {self.domain}"
            )
        if resp.status_code != 200:
            raise RegistryAuthError(f"token server {realm} answered HTTP {resp.status_code}")
        try:
            doc = decode_json(resp.content, "token response")
        except InvalidArgument as exc:
            raise RegistryAuthError(f"token server {realm} sent {exc}") from exc
        token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryAuthError(f"token server {realm} sent no token")
        return token

    # ----- requests
    def request(
        self,
        method: str,
        path: str,
        scope: str,
        *,
        headers: dict[str, str] | None = None,
        content: Any = None,
        stream: bool = False,
    ) -> httpx.Response:
        """Send, answering one 401 challenge. `path` is relative to the base, or a full URL."""
        url = path if path.startswith(("http://", "https://")) else self.base() + path
        for attempt in range(2):
            hdrs = dict(headers or {})
            auth = self._authorization(scope)
            if auth is not None:
                hdrs["Authorization"] = auth
            req = self.client.build_request(method, url, headers=hdrs, content=content)
            try:
                resp = self.client.send(req, stream=stream)
            except httpx.TransportError as exc:
                raise SteelcupError(f"{method} {url}: {exc}") from exc
            if resp.status_code != 401 or attempt == 1:
                return resp
            resp.close()
            self._authenticate(resp, scope)
        raise AssertionError("unreachable")

    def get_manifest(self, repo: str, reference: str, scope: str) -> tuple[bytes, str, str]:
        """(raw bytes, media type, digest) of a manifest; the digest is computed, not trusted."""
        resp = self.request(
            "GET",
            f"/v2/{repo}/manifests/{reference}",
            scope,
            headers={"Accept": ", ".join((*ACCEPT, *SCHEMA1_TYPES))},
            stream=True,
        )
        try:
            _check(resp, f"manifest for {repo}:{reference}")
            raw = _read_limited(resp, 4 << 20, "manifest")
        finally:
            resp.close()
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        if reference.startswith("sha256:") and reference != digest:
            raise ImageError(f"manifest digest mismatch: asked for {reference}, got {digest}")
        return raw, resp.headers.get("content-type", ""), digest


def _check(resp: httpx.Response, what: str) -> None:
    """Map a registry error answer to the exception tree (for non-2xx responses)."""
    if resp.status_code < 300:
        return
    message = _registry_message(resp)
    if resp.status_code == 404:
        raise NotFound(f"{what} not found: {message}")
    if resp.status_code in (401, 403):
        raise RegistryAuthError(
            f"access to {what} denied ({message}); the repository may not exist or may "
            "require `steelcup login`"
        )
    raise SteelcupError(f"registry error for {what}: HTTP {resp.status_code}: {message}")


def _registry_message(resp: httpx.Response) -> str:
    try:
        body = resp.read()[:65536]
        doc = decode_json(body, "registry error", error=ImageError)
        errors = doc.get("errors") if isinstance(doc, dict) else None
        if isinstance(errors, list) and errors:
            parts = []
            for e in errors:
                if isinstance(e, dict):
                    code = str(e.get("code", "")).lower().replace("_", " ")
                    parts.append(f"{code}: {e.get('message', '')}".strip(": "))
            return "; ".join(parts)
        return body.decode(errors="replace").strip()[:200] or resp.reason_phrase
    except (ImageError, httpx.HTTPError):
        return resp.reason_phrase


def _read_limited(resp: httpx.Response, limit: int, what: str) -> bytes:
    buf = bytearray()
    for chunk in resp.iter_bytes(CHUNK):
        buf += chunk
        if len(buf) > limit:
            raise ImageError(f"{what} is larger than {limit} bytes")
    return bytes(buf)


class _BodyReader(io.RawIOBase):
    """A file-like view of a streamed response body, counting bytes for progress."""

    def __init__(
        self,
        chunks: Iterator[bytes],
        on_bytes: Callable[[int], None],
        cancel: threading.Event | None,
    ) -> None:
        self._chunks = chunks
        self._buf = b""
        self._on_bytes = on_bytes
        self._cancel = cancel
        self.count = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._cancel is not None and self._cancel.is_set():
            raise Cancelled("cancelled")
        if not self._buf:
            self._buf = next(self._chunks, b"")
            if not self._buf:
                return b""
        n = len(self._buf) if size is None or size < 0 else size
        data, self._buf = self._buf[:n], self._buf[n:]
        self.count += len(data)
        self._on_bytes(self.count)
        return data

    def readinto(self, buf: Any) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)


# --------------------------------------------------------------------------- pull


def pull(
    ref: str | Reference,
    store: ImageStore,
    progress: ProgressFn | None = None,
    *,
    credentials: Credentials | None = None,
    options: RegistryOptions | None = None,
    cancel: threading.Event | None = None,
    transport: httpx.BaseTransport | None = None,
    tenant: str | None = None,
) -> PullResult:
    """Pull `ref` (name:tag or name@digest) into `store` as `tenant`'s (None: the operator's);
    the image is registered last. The manifest always comes from the registry with
    `credentials`, so blobs already here (another tenant's) are used only once the registry has
    let this caller read an image made of them."""
    parsed = parse_reference(ref) if isinstance(ref, str) else ref
    opts = options or RegistryOptions()
    emit = progress or _no_progress
    want_platform = parse_platform(opts.platform)
    scope = repository_scope(parsed.path, ("pull",))
    with _Session(parsed.domain, credentials, opts, transport) as session, store.lease() as lease:
        emit(ProgressEvent(f"Pulling from {parsed.path}", parsed.digest or parsed.tag or ""))
        raw, ctype, top_digest = session.get_manifest(
            parsed.path, parsed.digest or parsed.tag or "latest", scope
        )
        doc = parse_manifest(raw, ctype)
        digest = top_digest
        if isinstance(doc, Index):
            choice = select_platform(doc, want_platform)
            raw, ctype, digest = session.get_manifest(parsed.path, choice.digest, scope)
            doc = parse_manifest(raw, ctype)
            if not isinstance(doc, Manifest):
                raise ImageError(f"manifest list entry {choice.digest} is not an image manifest")
        assert isinstance(doc, Manifest)
        raw_config = _fetch_config(session, parsed.path, doc.config, store, lease, scope)
        diff_ids = _diff_ids(raw_config)
        if len(diff_ids) != len(doc.layers):
            raise ImageError(
                f"manifest lists {len(doc.layers)} layers but the image config {len(diff_ids)}"
            )
        config_digest = doc.config.digest
        already = _image_exists(store, config_digest, tenant)
        _fetch_layers(session, parsed.path, doc, diff_ids, store, lease, emit, opts, cancel, scope)
        tag = parsed.familiar() if parsed.digest is None else None
        previous = _tag_target(store, tag, tenant)
        image = store.register_pulled(
            raw_config=raw_config,
            layer_blobs=[d.digest for d in doc.layers],
            tag=tag,
            repo=parsed.familiar_name,
            manifest=StoredManifest(digest, doc.media_type, raw),
            repo_digest=top_digest,
            registry=parsed.domain,
            remote_repo=parsed.path,
            tenant=tenant,
        )
        downloaded = not already or (tag is not None and previous != image.id)
        emit(ProgressEvent(f"Digest: {top_digest}"))
        what = "Downloaded newer image for" if downloaded else "Image is up to date for"
        emit(ProgressEvent(f"Status: {what} {parsed.familiar()}"))
        return PullResult(image, top_digest, downloaded)


def _image_exists(store: ImageStore, image_id: str, tenant: str | None) -> bool:
    try:
        store.get(image_id, tenant)
    except NotFound:
        return False
    return True


def _tag_target(store: ImageStore, tag: str | None, tenant: str | None) -> str | None:
    if tag is None:
        return None
    try:
        return store.get(tag, tenant).id
    except (NotFound, InvalidArgument):
        return None


def _diff_ids(raw_config: bytes) -> list[str]:
    doc = decode_json(raw_config, "image config", error=ImageError)
    rootfs = doc.get("rootfs") if isinstance(doc, dict) else None
    ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(ids, list) or not all(isinstance(d, str) for d in ids):
        raise ImageError("image config: rootfs.diff_ids must be a list of digests")
    return list(ids)


def _fetch_config(
    session: _Session, repo: str, desc: Descriptor, store: ImageStore, lease: Lease, scope: str
) -> bytes:
    if desc.size > MAX_JSON_BYTES:
        raise ImageError(f"image config is larger than {MAX_JSON_BYTES} bytes")
    lease.add(desc.digest)
    if not store.has_blob(desc.digest):
        _download(session, repo, desc, store, lambda _n: None, None, scope, retries=3)
    return store.blob_path(desc.digest).read_bytes()


def _download(
    session: _Session,
    repo: str,
    desc: Descriptor,
    store: ImageStore,
    on_bytes: Callable[[int], None],
    cancel: threading.Event | None,
    scope: str,
    *,
    retries: int,
) -> None:
    for attempt in range(1, retries + 1):
        resp = session.request("GET", f"/v2/{repo}/blobs/{desc.digest}", scope, stream=True)
        try:
            _check(resp, f"blob {desc.digest}")
            length = resp.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) != desc.size:
                raise ImageError(
                    f"blob {desc.digest}: registry sends {length} bytes, manifest says {desc.size}"
                )
            reader = _BodyReader(resp.iter_bytes(CHUNK), on_bytes, cancel)
            store.write_blob(io.BufferedReader(reader, CHUNK), desc.digest, desc.size)
            return
        except (httpx.TransportError, httpx.StreamError) as exc:
            if attempt == retries:
                raise SteelcupError(f"downloading {desc.digest} failed: {exc}") from exc
            time.sleep(min(2.0**attempt, 10.0))  # back off before retrying a flaky network
        finally:
            resp.close()


def _fetch_layers(
    session: _Session,
    repo: str,
    doc: Manifest,
    diff_ids: list[str],
    store: ImageStore,
    lease: Lease,
    emit: ProgressFn,
    opts: RegistryOptions,
    cancel: threading.Event | None,
    scope: str,
) -> None:
    stop = threading.Event()
    todo: list[tuple[Descriptor, str]] = []
    for desc, diff_id in zip(doc.layers, diff_ids, strict=True):
        short = _short(desc.digest)
        lease.add(desc.digest)
        lease.add(diff_id)
        if store.has_layer(diff_id):
            emit(ProgressEvent("Already exists", short))
        else:
            emit(ProgressEvent("Pulling fs layer", short))
            todo.append((desc, diff_id))
    if not todo:
        return
    for desc, _ in todo[opts.max_concurrent :]:
        emit(ProgressEvent("Waiting", _short(desc.digest)))

    def work(desc: Descriptor, diff_id: str) -> None:
        short = _short(desc.digest)
        if stop.is_set() or (cancel is not None and cancel.is_set()):
            raise Cancelled("cancelled")
        if not store.has_blob(desc.digest):
            last = [0.0]

            def on_bytes(n: int) -> None:
                now = time.monotonic()
                if now - last[0] >= 0.1 or n == desc.size:
                    last[0] = now
                    emit(ProgressEvent("Downloading", short, n, desc.size))
                if stop.is_set():
                    raise Cancelled("cancelled")

            _download(session, repo, desc, store, on_bytes, cancel, scope, retries=opts.retries)
            emit(ProgressEvent("Verifying Checksum", short))
            emit(ProgressEvent("Download complete", short))
        emit(ProgressEvent("Extracting", short, desc.size, desc.size))
        store.ensure_layer(desc.digest, diff_id)
        emit(ProgressEvent("Pull complete", short))

    with concurrent.futures.ThreadPoolExecutor(
        max_workers=max(1, opts.max_concurrent), thread_name_prefix="pull"
    ) as pool:
        futures = [pool.submit(work, d, i) for d, i in todo]
        try:
            for future in concurrent.futures.as_completed(futures):
                future.result()
        except BaseException:
            stop.set()
            for f in futures:
                f.cancel()
            raise


def _short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


# --------------------------------------------------------------------------- push


def push(
    ref: str | Reference,
    store: ImageStore,
    progress: ProgressFn | None = None,
    *,
    credentials: Credentials | None = None,
    options: RegistryOptions | None = None,
    cancel: threading.Event | None = None,
    transport: httpx.BaseTransport | None = None,
    tenant: str | None = None,
) -> str:
    """Push `tenant`'s local image `ref` (name:tag) to its registry; returns the manifest
    digest."""
    parsed = parse_reference(ref) if isinstance(ref, str) else ref
    if parsed.digest is not None or parsed.tag is None:
        raise InvalidArgument(f"cannot push {parsed}: push needs a name:tag reference")
    opts = options or RegistryOptions()
    emit = progress or _no_progress
    image = store.get(parsed.familiar(), tenant)
    shown = parsed.name if parsed.domain != DEFAULT_DOMAIN else f"docker.io/{parsed.path}"
    emit(ProgressEvent(f"The push refers to repository [{shown}]"))
    layers = store.push_layers(image)
    descs = [Descriptor(layer.media_type, layer.digest, layer.size) for layer in layers]
    raw, media = _choose_manifest(store, image, descs)
    scope = repository_scope(parsed.path, ("pull", "push"))
    with _Session(parsed.domain, credentials, opts, transport) as session:
        for layer in layers:
            emit(ProgressEvent("Preparing", _short(layer.diff_id)))

        def work(desc: Descriptor, short: str, show: bool) -> None:
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled")
            _push_blob(session, parsed, desc, store, emit if show else _no_progress, short, cancel,
                       tenant)

        with concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, opts.max_concurrent), thread_name_prefix="push"
        ) as pool:
            jobs = [
                pool.submit(work, d, _short(lay.diff_id), True)
                for d, lay in zip(descs, layers, strict=True)
            ]
            config = Descriptor("", image.id, len(image.raw_config))
            jobs.append(pool.submit(work, config, _short(image.id), False))
            for job in concurrent.futures.as_completed(jobs):
                job.result()
        resp = session.request(
            "PUT",
            f"/v2/{parsed.path}/manifests/{parsed.tag}",
            scope,
            headers={"Content-Type": media},
            content=raw,
        )
        try:
            _check(resp, f"manifest {parsed}")
        finally:
            resp.close()
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        echoed = resp.headers.get("docker-content-digest")
        if echoed and echoed != digest:
            raise ImageError(f"registry stored the manifest as {echoed}, expected {digest}")
    store.record_push(
        image.id,
        parsed.familiar_name,
        StoredManifest(digest, media, raw),
        parsed.domain,
        parsed.path,
        [image.id, *(d.digest for d in descs)],
        tenant=tenant,
    )
    emit(ProgressEvent(f"{parsed.tag}: digest: {digest} size: {len(raw)}"))
    return digest


def _choose_manifest(store: ImageStore, image: Image, descs: list[Descriptor]) -> tuple[bytes, str]:
    """Reuse a stored manifest when it describes exactly these blobs (keeps its digest)."""
    want = [d.digest for d in descs]
    for stored in store.manifests(image.id):
        try:
            doc = parse_manifest(stored.raw, stored.media_type)
        except SteelcupError:
            continue
        if (
            isinstance(doc, Manifest)
            and doc.config.digest == image.id
            and [d.digest for d in doc.layers] == want
        ):
            return stored.raw, doc.media_type
    raw = build_manifest(image.id, len(image.raw_config), descs)
    return raw, parse_manifest(raw).media_type


def _push_blob(
    session: _Session,
    ref: Reference,
    desc: Descriptor,
    store: ImageStore,
    emit: ProgressFn,
    short: str,
    cancel: threading.Event | None,
    tenant: str | None,
) -> None:
    repo = ref.path
    scope = repository_scope(repo, ("pull", "push"))
    head = session.request("HEAD", f"/v2/{repo}/blobs/{desc.digest}", scope)
    head.close()
    if head.status_code == 200:
        emit(ProgressEvent("Layer already exists", short))
        return
    location: str | None = None
    for source in store.blob_sources(desc.digest, ref.domain, tenant):
        if source == repo:
            continue
        mount_scope = f"{scope} {repository_scope(source, ('pull',))}"
        query = urlencode({"mount": desc.digest, "from": source})
        resp = session.request("POST", f"/v2/{repo}/blobs/uploads/?{query}", mount_scope)
        resp.close()
        if resp.status_code == 201:
            emit(ProgressEvent(f"Mounted from {source}", short))
            return
        if resp.status_code == 202:
            location = resp.headers.get("location")
            break
    if location is None:
        resp = session.request("POST", f"/v2/{repo}/blobs/uploads/", scope)
        try:
            _check(resp, f"blob upload to {repo}")
        finally:
            resp.close()
        location = resp.headers.get("location")
    if not location:
        raise SteelcupError(f"registry {session.host} gave no upload location")
    url = urljoin(session.base() + "/", location)
    url += ("&" if "?" in url else "?") + urlencode({"digest": desc.digest})
    path = store.blob_path(desc.digest)
    total = desc.size

    def body() -> Iterator[bytes]:
        sent = 0
        last = 0.0
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                if cancel is not None and cancel.is_set():
                    raise Cancelled("cancelled")
                sent += len(chunk)
                now = time.monotonic()
                if now - last >= 0.1 or sent == total:
                    last = now
                    emit(ProgressEvent("Pushing", short, sent, total))
                yield chunk

    resp = session.request(
        "PUT",
        url,
        scope,
        headers={"Content-Type": "application/octet-stream", "Content-Length": str(total)},
        content=body(),
    )
    try:
        _check(resp, f"blob {desc.digest}")
    finally:
        resp.close()
    emit(ProgressEvent("Pushed", short))


# --------------------------------------------------------------------------- login


def login(
    server: str,
    credentials: Credentials,
    options: RegistryOptions | None = None,
    *,
    transport: httpx.BaseTransport | None = None,
) -> None:
    """Check `credentials` against `server` (a normalised host); raises RegistryAuthError."""
    opts = options or RegistryOptions()
    with _Session(server, credentials, opts, transport) as session:
        resp = session.request("GET", "/v2/", "")
        resp.close()
        if resp.status_code == 401:
            raise RegistryAuthError(f"unauthorized: incorrect username or password for {server}")
        if resp.status_code >= 300:
            raise SteelcupError(f"login to {server} failed: HTTP {resp.status_code}")
