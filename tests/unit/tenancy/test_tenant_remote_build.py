"""A remote build context (`POST /build?remote=URL`) is fetched on the host, so a tenant's URL
is held to ADD's rule (docs/build.md, docs/tenancy.md): bob's remote naming the host's
loopback, a link-local metadata address or a name that resolves to loopback is refused
before any connection, over the real TLS listener and router, while the operator's build
from the same loopback server works."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from tests.unit.tenancy.conftest import Cloud

DOCKERFILE = b"FROM scratch\nENV FROM_REMOTE=yes\n"  # metadata only: no VM


class Handler(http.server.BaseHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        Handler.requests.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(DOCKERFILE)))
        self.end_headers()
        self.wfile.write(DOCKERFILE)


@pytest.fixture
def served() -> Iterator[str]:
    Handler.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_tenants_remote_context_cannot_reach_the_hosts_loopback(cloud: Cloud,
                                                                   served: str) -> None:
    port = served.rsplit(":", 1)[1]
    with cloud.client("bob") as bob:
        for url in (f"http://{served}/Dockerfile", f"http://localhost:{port}/Dockerfile",
                    "http://169.254.169.254/latest/meta-data/", f"http://[::1]:{port}/x",
                    "http://127.0.0.1:2375/info"):
            answer = bob.post("/build", params={"remote": url, "t": "stolen"}, timeout=60)
            assert answer.status_code == 400, (url, answer.text)
            assert "which a tenant's build may not reach" in answer.json()["message"], url
        assert Handler.requests == []  # refused before connecting
        tags = [t for image in bob.get("/images/json").json() for t in image["RepoTags"]]
        assert "stolen:latest" not in tags
    with cloud.operator() as operator:  # the host's own builds reach what the host reaches
        answer = operator.post("/build", params={"remote": f"http://{served}/Dockerfile",
                                                 "t": "fromremote"}, timeout=60)
        assert answer.status_code == 200 and '"aux"' in answer.text, answer.text
        config = operator.get("/images/fromremote/json").json()["Config"]
        assert "FROM_REMOTE=yes" in config["Env"]
    assert Handler.requests == ["/Dockerfile"]


def test_a_tenants_git_remote_is_refused_by_name(cloud: Cloud) -> None:
    with cloud.client("bob") as bob:
        answer = bob.post("/build", params={"remote": "https://github.com/o/r.git"})
        assert "git build contexts are not supported" in answer.json()["message"]
        assert answer.status_code >= 400
