"""Placement (pure): spread vs pack, affinity as a preference, slot fitting, skip vs stop."""

from __future__ import annotations

from batchyard.scheduler.placement import Candidate, NodeSlots, free_capacity, place


def nodes(*free_total: tuple[str, int, int]) -> list[NodeSlots]:
    return [NodeSlots(n, f, t) for n, f, t in free_total]


def targets(plan: list[tuple[Candidate, str]]) -> list[tuple[str, str]]:
    return [(c.ref, node) for c, node in plan]


def cands(*refs: str, slots: int = 1) -> list[Candidate]:
    return [Candidate(r, slots) for r in refs]


# --- spread / pack -----------------------------------------------------------------------------------------


def test_spread_puts_tasks_on_different_nodes() -> None:
    ns = nodes(("n1", 2, 2), ("n2", 2, 2))
    plan = targets(place(ns, cands("a", "b"), pack=False))
    assert {n for _, n in plan} == {"n1", "n2"}
    assert free_capacity(ns) == 2


def test_spread_prefers_the_node_with_most_free_slots() -> None:
    ns = nodes(("n1", 1, 4), ("n2", 3, 4), ("n3", 2, 4))
    plan = targets(place(ns, cands("a", "b", "c"), pack=False))
    assert plan[0] == ("a", "n2")
    assert [n.free for n in ns] == [1, 1, 1], "each pick evens out the free slots"


def test_pack_fills_one_node_first() -> None:
    ns = nodes(("n1", 2, 2), ("n2", 2, 2))
    plan = targets(place(ns, cands("a", "b", "c"), pack=True))
    assert plan[0][1] == plan[1][1], "the first two share a node"
    assert plan[2][1] != plan[0][1], "the third goes to the other node once the first is full"


def test_pack_prefers_the_fullest_node_that_still_fits() -> None:
    ns = nodes(("n1", 3, 4), ("n2", 1, 4), ("n3", 2, 4))
    assert targets(place(ns, cands("a"), pack=True)) == [("a", "n2")]
    ns = nodes(("n1", 3, 4), ("n2", 1, 4), ("n3", 2, 4))
    assert targets(place(ns, [Candidate("big", 2)], pack=True)) == [("big", "n3")]


def test_free_slots_are_consumed() -> None:
    ns = nodes(("n1", 4, 4))
    place(ns, [Candidate("a", 3)], pack=False)
    assert ns[0].free == 1 and ns[0].total == 4


# --- affinity ----------------------------------------------------------------------------------------------


def test_affinity_overrides_spread_and_pack() -> None:
    for pack in (False, True):
        ns = nodes(("n1", 1, 4), ("n2", 4, 4))
        want = "n1" if not pack else "n2"  # the node the fill type alone would not pick
        plan = place(ns, [Candidate("a", 1, want)], pack=pack)
        assert targets(plan) == [("a", want)]


def test_affinity_is_only_a_preference() -> None:
    ns = nodes(("n1", 1, 2), ("n2", 2, 2))
    plan = place(ns, [Candidate("a", 2, "n1"), Candidate("b", 1, "gone-node")], pack=False)
    assert targets(plan) == [("a", "n2"), ("b", "n1")]


def test_several_tasks_prefer_the_same_node_until_it_is_full() -> None:
    ns = nodes(("n1", 2, 2), ("n2", 2, 2))
    plan = place(ns, [Candidate(r, 1, "n1") for r in "abc"], pack=False)
    assert targets(plan) == [("a", "n1"), ("b", "n1"), ("c", "n2")]


# --- slots, skip vs stop -----------------------------------------------------------------------------------


def test_a_task_that_fits_nowhere_now_is_skipped_not_blocking_smaller_ones() -> None:
    ns = nodes(("n1", 2, 4), ("n2", 1, 4))
    plan = place(ns, [Candidate("big", 3), Candidate("small", 2), Candidate("tiny", 1)], pack=False)
    assert targets(plan) == [("small", "n1"), ("tiny", "n2")]
    assert free_capacity(ns) == 0


def test_exact_fit() -> None:
    assert targets(place(nodes(("n1", 3, 3)), [Candidate("a", 3)], pack=True)) == [("a", "n1")]


def test_without_prefetch_nothing_is_placed_beyond_free_slots() -> None:
    ns = [NodeSlots("n1", 1, 1, reserve=4), NodeSlots("n2", 1, 1, reserve=4)]
    plan = place(ns, cands("a", "b", "c", "d"), pack=False)
    assert [c.ref for c, _ in plan] == ["a", "b"]
    assert [n.reserve for n in ns] == [4, 4]


def test_prefetch_queues_the_rest_on_the_shortest_queue() -> None:
    ns = [NodeSlots("n1", 1, 2, reserve=1), NodeSlots("n2", 0, 2, reserve=3)]
    plan = targets(place(ns, cands("a", "b", "c", "d"), pack=False, prefetch=True))
    assert plan[0] == ("a", "n1"), "free slots are used first"
    assert plan[1:3] == [("b", "n2"), ("c", "n2")], "then the node with the most queue room"
    assert [c for c, _ in plan] == ["a", "b", "c", "d"]
    assert sum(n.reserve for n in ns) == 1
    assert free_capacity(ns) == 0 and free_capacity(ns, prefetch=True) == 1


def test_prefetch_stops_at_the_first_task_without_room_keeping_queue_order() -> None:
    ns = [NodeSlots("n1", 0, 2, reserve=1)]
    plan = place(ns, [Candidate("big", 2), Candidate("small", 1)], pack=True, prefetch=True)
    assert plan == [], "a later small task does not overtake a waiting big one in the node queue"
    assert free_capacity(ns, prefetch=True) == 1


def test_no_nodes_or_no_candidates() -> None:
    assert place([], cands("a"), pack=False) == []
    assert place(nodes(("n1", 1, 1)), [], pack=True) == []
    assert place(nodes(("n1", 0, 1)), cands("a"), pack=False) == []


def test_plan_keeps_candidate_order() -> None:
    ns = nodes(("n1", 3, 3), ("n2", 3, 3))
    plan = place(ns, cands("c", "a", "b", "d"), pack=True)
    assert [c.ref for c, _ in plan] == ["c", "a", "b", "d"]


def test_free_capacity_ignores_overcommitted_nodes() -> None:
    assert free_capacity(nodes(("n1", -1, 2), ("n2", 2, 2))) == 2
    assert free_capacity([]) == 0
