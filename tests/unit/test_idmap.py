"""The pure id arithmetic of QEMU's user namespace (steelcup.idmap)."""

from __future__ import annotations

import pytest

from steelcup.idmap import NOBODY, UNUSED_ID, IdRange, shift

B = 1_000_000_000


def test_guest_ids_are_the_range_and_every_other_host_id_is_nobody() -> None:
    ids = IdRange(B)
    assert [ids.to_host(k) for k in (0, 1, 1000, 65535)] == [B, B + 1, B + 1000, B + 65535]
    assert [ids.to_guest(h) for h in (B, B + 1000, B + 65535)] == [0, 1000, 65535]
    # host root, host users and the next range are nobody in the guest
    assert [ids.to_guest(h) for h in (0, 1000, B - 1, B + 65536)] == [NOBODY] * 4
    assert ids.to_host(70000) == B + NOBODY  # an id the range lacks stays inside it
    assert ids.contains(B) and not ids.contains(0) and not ids.contains(B + 65536)


def test_shift_between_ranges_and_unshifted_trees() -> None:
    a, b = IdRange(B), IdRange(2 * B)
    assert shift(0, None, a) == B  # a container made before: guest ids as stored
    assert shift(B + 7, a, b) == 2 * B + 7
    assert shift(2 * B + 7, b, None) == 7
    assert shift(5, a, b) == 2 * B + NOBODY  # not of range a: nobody, never root
    assert shift(42, None, None) == 42


def test_maps_for_qemu_and_for_bind_mounts() -> None:
    ids = IdRange(B)
    assert ids.ns_map() == f"0 {B} 65536\n"
    lines = [tuple(map(int, line.split())) for line in ids.bind_map().splitlines()]
    # host root <-> an id no QEMU has; host ids 1.. <-> QEMU's 1..; QEMU's root <-> B itself
    assert lines == [(0, UNUSED_ID, 1), (1, B + 1, 65535), (B, B, 1)]
    ns_side = [range(first, first + n) for first, _, n in lines]
    host_side = [range(host, host + n) for _, host, n in lines]
    for side in (ns_side, host_side):  # the kernel refuses overlapping extents
        for i, r in enumerate(side):
            for other in side[i + 1:]:
                assert r.stop <= other.start or other.stop <= r.start


@pytest.mark.parametrize("base,count", [(0, 65536), (-1, 10), (1000, 65536), (B, 0),
                                        (UNUSED_ID - 10, 65536)])
def test_bad_ranges_are_refused(base: int, count: int) -> None:
    with pytest.raises(ValueError):
        IdRange(base, count)
