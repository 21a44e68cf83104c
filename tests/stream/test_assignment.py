"""Who owns what when there are several workers: the hot-spot stage's owner is spared the
by-cell partitions (faust's group, :func:`~stream.faust_app.spare_hotspot_owner`) and the
input partitions (the input pump's group, :func:`~stream.kafka_input.sparing_assignor`).
On a real broker: ``tests/stream/test_scaleout_tansu.py``."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata
from faust.assignor.client_assignment import ClientAssignment

from stream.faust_app import TOPIC_BY_CELL, TOPIC_HOTSPOT, spare_hotspot_owner
from stream.kafka_input import SPARED, sparing_assignor


def client(by_cell: list[int], hot: list[int]) -> ClientAssignment:
    return ClientAssignment(actives={TOPIC_BY_CELL: by_cell, TOPIC_HOTSPOT: hot},
                            standbys={})


def shares(assignments: dict[str, ClientAssignment]) -> dict[str, tuple[list[int], list[int]]]:
    return {m: (a.actives[TOPIC_BY_CELL], a.actives[TOPIC_HOTSPOT])
            for m, a in sorted(assignments.items())}


def test_the_hot_spot_owner_hands_its_by_cell_partitions_to_the_others() -> None:
    two = {"a": client([0, 2], [0]), "b": client([1, 3], [])}
    spare_hotspot_owner(two)
    assert shares(two) == {"a": ([], [0]), "b": ([0, 1, 2, 3], [])}

    three = {"a": client([1, 4], []), "b": client([0, 3], [0]), "c": client([2, 5], [])}
    spare_hotspot_owner(three)  # each to the member with the fewest, then by member id
    assert shares(three) == {"a": ([0, 1, 4], []), "b": ([], [0]), "c": ([2, 3, 5], [])}


def test_alone_or_without_a_hot_spot_owner_nothing_moves() -> None:
    alone = {"a": client([0, 1, 2, 3], [0])}
    spare_hotspot_owner(alone)
    assert shares(alone) == {"a": ([0, 1, 2, 3], [0])}
    nobody = {"a": client([0, 2], []), "b": client([1, 3], [])}
    spare_hotspot_owner(nobody)
    assert shares(nobody) == {"a": ([0, 2], []), "b": ([1, 3], [])}


class Cluster:
    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0, 1, 2, 3}


def members(**spared: bool) -> dict[str, Any]:
    return {m: ConsumerProtocolMemberMetadata(0, ["in"], SPARED if s else b"")
            for m, s in spared.items()}


def owned(assignment: Any) -> dict[str, list[int]]:
    return {m: sorted(p for _, parts in a.assignment for p in parts)
            for m, a in sorted(assignment.items())}


def test_a_spared_member_reads_no_input_while_another_can() -> None:
    flag = SimpleNamespace(on=True)
    assignor = sparing_assignor(lambda: flag.on)
    assert assignor.metadata(["in"]).user_data == SPARED
    flag.on = False
    assert assignor.metadata(["in"]).user_data == b""

    assert owned(assignor.assign(Cluster(), members(a=True, b=False))) == {
        "a": [], "b": [0, 1, 2, 3]}
    assert owned(assignor.assign(Cluster(), members(a=True, b=False, c=False))) == {
        "a": [], "b": [0, 2], "c": [1, 3]}
    # nobody else to read it: the spared member reads it all the same
    assert owned(assignor.assign(Cluster(), members(a=True))) == {"a": [0, 1, 2, 3]}
    assert owned(assignor.assign(Cluster(), members(a=False, b=False))) == {
        "a": [0, 2], "b": [1, 3]}
