"""The order of the erofs builds shared by tenants (steelcup.image.fair_queue)."""

from __future__ import annotations

from steelcup.image.fair_queue import FairQueue


def drain(queue: FairQueue) -> list[str]:
    taken = []
    while (key := queue.take()) is not None:
        taken.append(key)
    assert len(queue) == 0
    return taken


def test_owners_take_turns_each_in_its_own_order() -> None:
    queue = FairQueue()
    for i in range(4):
        queue.add(f"a{i}", "alice")
    queue.add("b0", "bob")
    queue.add("b1", "bob")
    queue.add("o0", "")
    assert len(queue) == 7
    assert drain(queue) == ["a0", "b0", "o0", "a1", "b1", "a2", "a3"]


def test_a_newcomer_waits_one_item_of_a_busy_owner_at_most() -> None:
    queue = FairQueue()
    for i in range(10):
        queue.add(f"a{i}", "alice")
    assert queue.take() == "a0"
    queue.add("b0", "bob")
    assert [queue.take(), queue.take()] == ["a1", "b0"]
    # an owner whose line ran dry comes back at the end of the turn order
    queue.add("b1", "bob")
    assert [queue.take(), queue.take()] == ["a2", "b1"]


def test_what_somebody_waits_for_goes_first() -> None:
    queue = FairQueue()
    for i in range(3):
        queue.add(f"a{i}", "alice")
    queue.add("b0", "bob")
    queue.add("a2", "alice", urgent=True)  # queued already: promoted
    queue.add("c0", "carol", urgent=True)  # new and waited for
    queue.add("a2", "alice")  # queued again, not urgent: keeps its place
    assert "a2" in queue and "zz" not in queue
    assert drain(queue) == ["a2", "c0", "a0", "b0", "a1"]


def test_a_key_is_queued_once_and_can_be_taken_out() -> None:
    queue = FairQueue()
    queue.add("x", "alice")
    queue.add("x", "bob")  # another owner asks for the same: one item, in alice's line
    queue.add("y", "bob")
    queue.add("z", "bob", urgent=True)
    assert len(queue) == 3
    queue.discard("x")
    queue.discard("z")
    queue.discard("missing")
    queue.promote("missing")
    assert drain(queue) == ["y"]
    assert queue.take() is None
