"""Task dependencies (pure): parsing `dependsOn` with the service's errors, integer ids with leading zeros,
range merging and counting unmet references. Semantics: peers-and-semantics.md §5.1-5.2."""

from __future__ import annotations

from typing import Any

import pytest

from batchyard.models.dependencies import MAX_IDS_CHARS, Dependencies, merge, numeric_id, parse, unmet
from batchyard.models.errors import BatchError


def ranges(*pairs: tuple[int, int]) -> list[dict[str, int]]:
    return [{"start": s, "end": e} for s, e in pairs]


# --- numeric_id --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task_id", "value"), [("4", 4), ("04", 4), ("004", 4), ("0", 0), ("000", 0), ("123456", 123456)]
)
def test_integer_ids_ignore_leading_zeros(task_id: str, value: int) -> None:
    assert numeric_id(task_id) == value


@pytest.mark.parametrize(
    "task_id", ["5flamingoes", "x4", "-4", "+4", " 4", "4 ", "4.0", "", "1e3", "0x10", "４"]
)
def test_other_ids_are_not_integers(task_id: str) -> None:
    assert numeric_id(task_id) is None


# --- merge -------------------------------------------------------------------------------------------------


def test_merge_joins_overlapping_and_adjacent_ranges() -> None:
    assert merge(((7, 8), (1, 3), (2, 5), (9, 9))) == [(1, 5), (7, 9)]
    assert merge(((1, 1), (3, 3))) == [(1, 1), (3, 3)]
    assert merge(((1, 10), (2, 3))) == [(1, 10)]
    assert merge(((4, 4), (4, 4))) == [(4, 4)]
    assert merge(()) == []


# --- parse -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("depends_on", [None, {}, {"taskIds": [], "taskIdRanges": []}])
def test_no_dependencies(depends_on: dict[str, Any] | None) -> None:
    d = parse(depends_on, "t")
    assert d.empty and d == Dependencies(frozenset(), ())
    assert d.range_size() == 0


def test_ids_are_case_insensitive_and_ranges_merged() -> None:
    d = parse({"taskIds": ["Prep", "prep", "B"], "taskIdRanges": ranges((5, 9), (1, 3), (4, 4))}, "child")
    assert d.task_keys == frozenset({"prep", "b"})
    assert d.ranges == ((1, 9),)
    assert d.range_size() == 9
    assert not d.empty


@pytest.mark.parametrize("bad", [(5, 4), (-1, 3)])
def test_bad_ranges_are_invalid_property_values(bad: tuple[int, int]) -> None:
    with pytest.raises(BatchError) as info:
        parse({"taskIdRanges": ranges((1, 2), bad)}, "c")
    e = info.value
    assert (e.status, e.code) == (400, "InvalidPropertyValue")
    assert dict(e.values)["PropertyName"] == "dependsOn.taskIdRanges[1]"


def test_single_value_range_is_valid() -> None:
    assert parse({"taskIdRanges": ranges((0, 0))}, "c").ranges == ((0, 0),)


def test_task_id_list_limit_is_64000_characters() -> None:
    ids = ["a" * 1000 + f"{i:03d}" for i in range(63)]  # 63 * 1003 = 63189 characters
    ids.append("b" * (MAX_IDS_CHARS - sum(map(len, ids))))
    assert sum(map(len, ids)) == MAX_IDS_CHARS == 64000
    assert len(parse({"taskIds": ids}, "c").task_keys) == 64
    with pytest.raises(BatchError) as info:
        parse({"taskIds": [*ids, "x"]}, "c")
    assert (info.value.status, info.value.code) == (400, "TaskDependencyListTooLong")


def test_huge_ranges_are_refused() -> None:
    assert parse({"taskIdRanges": ranges((1, 100_000))}, "c").range_size() == 100_000
    with pytest.raises(BatchError) as info:
        parse({"taskIdRanges": ranges((0, 10**9))}, "c")
    assert (info.value.status, info.value.code) == (400, "TaskDependencyRangesTooLong")


@pytest.mark.parametrize(
    ("depends_on", "own"),
    [
        ({"taskIds": ["Self"]}, "self"),
        ({"taskIds": ["a", "c"]}, "C"),
        ({"taskIdRanges": ranges((1, 10))}, "05"),  # 05 is 5, inside 1..10
    ],
)
def test_a_task_cannot_depend_on_itself(depends_on: dict[str, Any], own: str) -> None:
    with pytest.raises(BatchError) as info:
        parse(depends_on, own)
    assert info.value.code == "InvalidPropertyValue"
    assert dict(info.value.values)["PropertyName"] == "dependsOn"


def test_non_integer_own_id_is_never_in_a_range() -> None:
    assert parse({"taskIdRanges": ranges((1, 10))}, "5flamingoes").ranges == ((1, 10),)
    assert parse({"taskIdRanges": ranges((1, 10))}, "11").ranges == ((1, 10),)


# --- unmet -------------------------------------------------------------------------------------------------


def test_unmet_counts_ids_and_every_integer_of_each_range() -> None:
    d = parse({"taskIds": ["a", "B"], "taskIdRanges": ranges((1, 3), (10, 11))}, "c")
    assert unmet(d, set(), set()) == 2 + 3 + 2
    assert unmet(d, {"a"}, set()) == 1 + 5
    assert unmet(d, {"a", "b"}, {2, 7, 11}) == 0 + 2 + 1  # 7 is outside every range
    assert unmet(d, {"a", "b", "x"}, {1, 2, 3, 10, 11, 12}) == 0


def test_unmet_with_overlapping_ranges_counts_each_integer_once() -> None:
    d = parse({"taskIdRanges": ranges((1, 5), (3, 8))}, "c")
    assert unmet(d, set(), set()) == 8
    assert unmet(d, set(), {3, 4, 5}) == 5


def test_leading_zero_ids_satisfy_the_same_integer() -> None:
    """The caller records satisfied integer ids via numeric_id, so '004' satisfies a range containing 4."""
    d = parse({"taskIdRanges": ranges((3, 4))}, "c")
    satisfied = {n for n in (numeric_id(t) for t in ("004", "03", "x5")) if n is not None}
    assert satisfied == {3, 4}
    assert unmet(d, set(), satisfied) == 0


def test_empty_dependencies_are_met() -> None:
    assert unmet(parse(None, "c"), set(), set()) == 0
