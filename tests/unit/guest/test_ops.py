"""The MOUNT requests the volume and pod layers build (docs/guest-protocol.md, op 18)."""

from __future__ import annotations

from steelcup.guest import protocol as p
from steelcup.guest.ops import GuestMount
from steelcup.guest.protocol import Tag


def test_a_bind_from_a_share_names_the_share_and_the_path_in_it() -> None:
    m = GuestMount(target="/dev/termination-log", fstype="bind", source="pod",
                   subdir="abc.mounts/3", readonly=True, container=2)
    assert m.fields() == [(Tag.SOURCE, "pod"), (Tag.SUBDIR, "abc.mounts/3"),
                          (Tag.FSTYPE, "bind"), (Tag.TARGET, "/dev/termination-log"),
                          (Tag.READONLY, 1), (Tag.CONTAINER, 2)]
    frame = p.decode_frame(p.make_frame(p.Op.MOUNT, 7, m.fields()))
    fields = p.decode_fields(frame.payload)
    assert p.get_str(fields, Tag.SUBDIR) == "abc.mounts/3"
    assert p.get_u32(fields, Tag.READONLY) == 1


def test_a_9p_or_tmpfs_mount_has_no_subdir() -> None:
    assert Tag.SUBDIR not in dict(GuestMount(target="/d", source="v0").fields())
    assert dict(GuestMount(target="/t", fstype="tmpfs").fields())[Tag.FSTYPE] == "tmpfs"


def test_a_copied_9p_mount_asks_for_the_copy_with_cache_2() -> None:
    copied = dict(GuestMount(target="/run/secrets", source="swarmsecrets", readonly=True,
                             copied=True).fields())
    assert copied[Tag.CACHE] == 2 and copied[Tag.READONLY] == 1
    assert Tag.CACHE not in dict(GuestMount(target="/d", source="v0").fields())
