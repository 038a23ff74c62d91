"""`system df` the docker CLI way, from a GET /system/df answer: pure formatting.

Reclaimable is what removing the unused objects would free: images no container uses,
stopped containers' writable layers, volumes no container mounts. An image's size is the
disk it takes: its layers and, with block roots, its erofs image ("RootDiskSize", a second
copy of its files that goes with it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from steelcup.cli.format import created_ago, ellipsis, human_size, short_id, split_ref, table


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def _reclaimable(free: int, total: int) -> str:
    share = f" ({free * 100 // total}%)" if total else ""
    return f"{human_size(free)}{share}"


def summary(du: dict[str, Any]) -> str:
    """The TYPE / TOTAL / ACTIVE / SIZE / RECLAIMABLE table, and the root disks' part of the
    images' size when there is one."""
    images: Sequence[dict[str, Any]] = du.get("Images") or []
    containers: Sequence[dict[str, Any]] = du.get("Containers") or []
    volumes: Sequence[dict[str, Any]] = du.get("Volumes") or []
    image_size = _int(du.get("LayersSize"))
    used_images = [i for i in images if _int(i.get("Containers"))]
    image_free = max(0, image_size - sum(_int(i.get("Size")) for i in used_images))
    rw_size = sum(_int(c.get("SizeRw")) for c in containers)
    rw_free = sum(_int(c.get("SizeRw")) for c in containers if c.get("State") != "running")
    usage = [v.get("UsageData") or {} for v in volumes]
    vol_size = sum(_int(u.get("Size")) for u in usage)
    vol_free = sum(_int(u.get("Size")) for u in usage if not _int(u.get("RefCount")))
    rows = [
        ["Images", str(len(images)), str(len(used_images)), human_size(image_size),
         _reclaimable(image_free, image_size)],
        ["Containers", str(len(containers)),
         str(sum(1 for c in containers if c.get("State") == "running")), human_size(rw_size),
         _reclaimable(rw_free, rw_size)],
        ["Local Volumes", str(len(volumes)),
         str(sum(1 for u in usage if _int(u.get("RefCount")))), human_size(vol_size),
         _reclaimable(vol_free, vol_size)],
    ]
    text = table(["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"], rows)
    root_disks = sum(_int(i.get("RootDiskSize")) for i in images)
    if root_disks:
        text += (f"\nOf the images' size, {human_size(root_disks)} is their block-root disks "
                 f"(erofs: each image's files a second time, removed with the image).\n")
    return text


def verbose(du: dict[str, Any], *, now: float) -> str:
    """Each image, container and volume with its size (`system df -v`)."""
    image_rows = []
    for image in du.get("Images") or []:
        tags = image.get("RepoTags") or ["<none>:<none>"]
        repo, tag = split_ref(tags[0])
        image_rows.append([
            repo, tag, short_id(str(image.get("Id", ""))),
            created_ago(image.get("Created"), now) or "N/A",
            human_size(_int(image.get("Size"))), human_size(_int(image.get("RootDiskSize"))),
            str(_int(image.get("Containers"))),
        ])
    container_rows = []
    for c in du.get("Containers") or []:
        names = [n.lstrip("/") for n in c.get("Names") or []]
        container_rows.append([
            short_id(str(c.get("Id", ""))), str(c.get("Image", "")),
            f'"{ellipsis(str(c.get("Command", "")), 20)}"',
            created_ago(c.get("Created"), now) or "N/A",
            str(c.get("Status", "")), human_size(_int(c.get("SizeRw"))), ",".join(names),
        ])
    volume_rows = []
    for v in du.get("Volumes") or []:
        usage = v.get("UsageData") or {}
        volume_rows.append([str(v.get("Name", "")), str(_int(usage.get("RefCount"))),
                            human_size(_int(usage.get("Size")))])
    return "\n".join([
        "Images space usage:\n",
        table(["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE", "ROOT DISK", "CONTAINERS"],
              image_rows),
        "Containers space usage:\n",
        table(["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "SIZE", "NAMES"],
              container_rows),
        "Local Volumes space usage:\n",
        table(["VOLUME NAME", "LINKS", "SIZE"], volume_rows),
    ])
