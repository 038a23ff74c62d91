"""`system df`'s tables from a GET /system/df answer (steelcup.cli.disk_usage)."""

from __future__ import annotations

from typing import Any

from steelcup.cli.disk_usage import summary, verbose

NOW = 1_800_000_000.0

DU: dict[str, Any] = {
    "LayersSize": 300_000_000,
    "Images": [
        {"Id": "sha256:" + "a" * 64, "RepoTags": ["debian:12"], "Created": NOW - 7200,
         "Size": 280_000_000, "RootDiskSize": 134_000_000, "Containers": 1},
        {"Id": "sha256:" + "b" * 64, "RepoTags": ["localhost:5000/box"], "Created": NOW - 60,
         "Size": 20_000_000, "RootDiskSize": 0, "Containers": 0},
    ],
    "Containers": [
        {"Id": "c" * 64, "Image": "debian:12", "Command": "nginx -g 'daemon off;'",
         "Created": NOW - 30, "State": "running", "Status": "Up 30 seconds", "SizeRw": 4000,
         "Names": ["/web"]},
        {"Id": "d" * 64, "Image": "debian:12", "Command": "true", "Created": NOW - 90,
         "State": "exited", "Status": "Exited (0) 1 minute ago", "SizeRw": 1000,
         "Names": ["/once"]},
    ],
    "Volumes": [
        {"Name": "data", "UsageData": {"Size": 5_000_000, "RefCount": 1}},
        {"Name": "old", "UsageData": {"Size": 1_000_000, "RefCount": 0}},
        {"Name": "unknown", "UsageData": {"Size": -1, "RefCount": -1}},
    ],
    "BuildCache": [],
}


def test_summary_counts_what_removing_the_unused_would_free() -> None:
    lines = summary(DU).splitlines()
    assert lines[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    # the unused image: 300 MB in all, 280 MB of it in use
    assert lines[1].split() == ["Images", "2", "1", "300MB", "20MB", "(6%)"]
    assert lines[2].split() == ["Containers", "2", "1", "5kB", "1kB", "(20%)"]
    assert lines[3].split() == ["Local", "Volumes", "3", "1", "6MB", "1MB", "(16%)"]
    assert "134MB is their block-root disks" in summary(DU)


def test_summary_of_an_empty_daemon() -> None:
    text = summary({"LayersSize": 0, "Images": [], "Containers": [], "Volumes": None})
    assert text.splitlines()[1].split() == ["Images", "0", "0", "0B", "0B"]
    assert "block-root" not in text


def test_verbose_lists_each_object_with_its_root_disk() -> None:
    text = verbose(DU, now=NOW)
    images = text.split("Containers space usage:")[0].splitlines()
    header = next(line for line in images if line.startswith("REPOSITORY"))
    assert "ROOT DISK" in header
    debian = next(line for line in images if line.startswith("debian"))
    assert debian.split() == ["debian", "12", "a" * 12, "2", "hours", "ago", "280MB",
                              "134MB", "1"]
    box = next(line for line in images if line.startswith("localhost"))
    assert box.split()[:2] == ["localhost:5000/box", "<none>"]
    assert '"nginx -g \'daemon of…"' in text
    assert any(line.split() == ["old", "0", "1MB"] for line in text.splitlines())
