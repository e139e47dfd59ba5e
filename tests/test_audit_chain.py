"""Unit tests of the audit hash chain (innominatus.audit.chain): no database, no network."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from google.protobuf import timestamp_pb2

from innominatus.audit import chain
from innominatus.common.v1 import audit_event_pb2

T0 = dt.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=dt.timezone.utc)


def make_event(i: int) -> audit_event_pb2.AuditEvent:
    event = audit_event_pb2.AuditEvent(
        id=f"event-{i}",
        service="specs",
        method="/innominatus.specs.v1.SpecsService/CreateDeployment",
        permission="deployments.create",
        actor="alice" if i % 2 else "bob",
        peer="gateway",
        outcome=audit_event_pb2.AUDIT_OUTCOME_SUCCEEDED if i % 3 else audit_event_pb2.AUDIT_OUTCOME_DENIED,
        reasons=[] if i % 3 else ["no rule grants it"],
        resource_type="deployment",
        resource_name=f"checkout-{i}",
        occur_time=timestamp_pb2.Timestamp(seconds=1_767_000_000 + i, nanos=999_999_999),
    )
    event.details.update({"application": "checkout", "replicas": i, "nested": {"b": 1, "a": [1, "x"]}})
    return event


def build_chain(n: int = 10) -> list[chain.ChainRecord]:
    records: list[chain.ChainRecord] = []
    prev = chain.GENESIS_HASH
    for i in range(1, n + 1):
        record = chain.build_record(prev, i, make_event(i), T0 + dt.timedelta(seconds=i))
        records.append(record)
        prev = record.hash
    return records


def head_of(records: list[chain.ChainRecord]) -> chain.Head:
    return chain.Head(sequence=records[-1].sequence, hash=records[-1].hash)


def test_intact_chain_verifies() -> None:
    records = build_chain()
    result = chain.verify(records, head_of(records))
    assert result == chain.VerifyResult(ok=True, checked=10, first_bad_sequence=0, problem="")
    assert records[0].prev_hash == ""
    assert all(records[i].prev_hash == records[i - 1].hash for i in range(1, 10))
    assert all(len(r.hash) == 64 for r in records)


def test_empty_chain_verifies() -> None:
    assert chain.verify([], chain.Head(0, "")).ok
    assert chain.verify([], None).ok


def test_verify_reads_a_generator_lazily() -> None:
    records = build_chain()
    consumed = []

    def rows():
        for r in records:
            consumed.append(r.sequence)
            yield r

    edited = dataclasses.replace(records[2], actor="mallory")
    records[2] = edited
    result = chain.verify(rows(), head_of(records))
    assert result.first_bad_sequence == 3
    assert consumed == [1, 2, 3]  # stops at the first bad record


def test_hash_is_canonical_and_covers_every_input() -> None:
    event = make_event(1)
    iso = chain.time_iso(T0)
    assert iso == "2026-01-02T03:04:05.123456Z"
    base = chain.record_hash("", 1, event, iso)
    # The serialized bytes and the message hash the same; key order in details does not matter.
    assert chain.record_hash("", 1, event.SerializeToString(), iso) == base
    reordered = audit_event_pb2.AuditEvent()
    reordered.CopyFrom(event)
    reordered.details.Clear()
    reordered.details.update({"nested": {"a": [1, "x"], "b": 1}, "replicas": 1, "application": "checkout"})
    assert chain.record_hash("", 1, reordered, iso) == base
    assert chain.record_hash("x", 1, event, iso) != base
    assert chain.record_hash("", 2, event, iso) != base
    assert chain.record_hash("", 1, event, chain.time_iso(T0 + dt.timedelta(microseconds=1))) != base
    changed = audit_event_pb2.AuditEvent()
    changed.CopyFrom(event)
    changed.actor = "mallory"
    assert chain.record_hash("", 1, changed, iso) != base


def test_naive_times_are_treated_as_utc() -> None:
    record = build_chain(1)[0]
    naive = dataclasses.replace(
        record,
        record_time=record.record_time.replace(tzinfo=None),
        occur_time=record.occur_time.replace(tzinfo=None),
    )
    assert chain.verify([naive], chain.Head(1, record.hash)).ok


def test_edited_payload_is_named() -> None:
    records = build_chain()
    event = audit_event_pb2.AuditEvent.FromString(records[4].payload)
    event.reasons.append("sneaky")
    records[4] = dataclasses.replace(records[4], payload=event.SerializeToString())
    result = chain.verify(records, head_of(records))
    assert not result.ok
    assert result.first_bad_sequence == 5
    assert result.problem == "record 5 was edited (hash mismatch)"


def test_unreadable_payload_is_named() -> None:
    records = build_chain()
    records[1] = dataclasses.replace(records[1], payload=b"\xff\xff\xff")
    result = chain.verify(records, head_of(records))
    assert (result.ok, result.first_bad_sequence) == (False, 2)
    assert "edited" in result.problem


@pytest.mark.parametrize(
    "column, value",
    [
        ("actor", "mallory"),
        ("service", "engine"),
        ("method", "/innominatus.specs.v1.SpecsService/Other"),
        ("outcome", "AUDIT_OUTCOME_SUCCEEDED"),  # record 6 was DENIED
        ("event_id", "event-other"),
        ("occur_time", T0),
    ],
)
def test_edited_denormalised_column_is_named(column: str, value) -> None:
    records = build_chain()
    records[5] = dataclasses.replace(records[5], **{column: value})
    result = chain.verify(records, head_of(records))
    assert not result.ok
    assert result.first_bad_sequence == 6
    assert result.problem.startswith("record 6 was edited")
    assert repr(column) in result.problem


def test_edited_record_time_is_named() -> None:
    records = build_chain()
    records[3] = dataclasses.replace(records[3], record_time=T0)
    result = chain.verify(records, head_of(records))
    assert (result.ok, result.first_bad_sequence, result.problem) == (False, 4, "record 4 was edited (hash mismatch)")


def test_edited_and_rehashed_record_is_caught_by_its_successor() -> None:
    records = build_chain()
    event = audit_event_pb2.AuditEvent.FromString(records[2].payload)
    event.actor = "mallory"
    forged = chain.build_record(records[2].prev_hash, 3, event, records[2].record_time)
    records[2] = forged
    result = chain.verify(records, head_of(records))
    assert (result.ok, result.first_bad_sequence) == (False, 4)
    assert "prev_hash" in result.problem


def test_deleted_middle_record_names_the_following_one() -> None:
    records = build_chain()
    del records[6]  # sequence 7
    result = chain.verify(records, head_of(records))
    assert not result.ok
    assert result.first_bad_sequence == 8
    assert result.problem == "record 8: record 7 is missing (deleted)"
    assert result.checked == 7


def test_deleted_first_record_is_named() -> None:
    records = build_chain()
    del records[0]
    result = chain.verify(records, head_of(records))
    assert (result.ok, result.first_bad_sequence) == (False, 2)
    assert "record 1 is missing" in result.problem


def test_several_deleted_records_are_named() -> None:
    records = build_chain()
    del records[2:5]  # 3, 4, 5
    result = chain.verify(records, head_of(records))
    assert (result.first_bad_sequence, result.problem) == (6, "record 6: records 3-5 are missing (deleted)")


def test_deleted_and_renumbered_records_are_caught() -> None:
    records = build_chain()
    del records[4]  # sequence 5; close the gap by renumbering the rest
    records = [r if r.sequence < 5 else dataclasses.replace(r, sequence=r.sequence - 1) for r in records]
    result = chain.verify(records, chain.Head(9, records[-1].hash))
    assert (result.ok, result.first_bad_sequence) == (False, 5)


def test_deleted_last_record_is_detected_via_the_head() -> None:
    records = build_chain()
    head = head_of(records)
    del records[-1]
    result = chain.verify(records, head)
    assert not result.ok
    assert result.first_bad_sequence == 10
    assert result.problem == "the newest records after 9 were deleted: the chain head is at record 10"
    assert result.checked == 9


def test_deleting_every_record_is_detected_via_the_head() -> None:
    records = build_chain()
    result = chain.verify([], head_of(records))
    assert (result.ok, result.first_bad_sequence) == (False, 1)
    assert "deleted" in result.problem


def test_replaced_last_record_is_detected_via_the_head() -> None:
    records = build_chain()
    head = head_of(records)
    event = make_event(99)
    records[-1] = chain.build_record(records[-1].prev_hash, 10, event, T0)
    result = chain.verify(records, head)
    assert (result.ok, result.first_bad_sequence) == (False, 10)
    assert "chain head" in result.problem


def test_record_beyond_the_head_is_detected() -> None:
    records = build_chain()
    result = chain.verify(records, chain.Head(9, records[8].hash))
    assert (result.ok, result.first_bad_sequence) == (False, 10)
    assert "outside the chain" in result.problem


def test_missing_head_with_records_is_detected() -> None:
    records = build_chain(3)
    result = chain.verify(records, None)
    assert not result.ok
    assert result.problem == "the chain head is missing"


def test_swapped_records_name_the_first_bad_one() -> None:
    records = build_chain()
    # Give record 4 and record 7 each other's sequence numbers; rows are read in sequence order.
    a, b = records[3], records[6]
    records[3] = dataclasses.replace(b, sequence=4)
    records[6] = dataclasses.replace(a, sequence=7)
    result = chain.verify(sorted(records, key=lambda r: r.sequence), head_of(build_chain()))
    assert not result.ok
    assert result.first_bad_sequence == 4
    assert result.problem.startswith("record 4 is out of order")


def test_swapped_adjacent_contents_name_the_first_bad_one() -> None:
    records = build_chain()
    records[1], records[2] = records[2], records[1]  # read order 1, 3, 2, ...
    result = chain.verify(records, head_of(records))
    assert (result.ok, result.first_bad_sequence) == (False, 3)
    assert "missing" in result.problem  # record 2 is not where it should be
