"""Hypotheses an earlier run already answered (ldfi.engine.equivalence): pure
logic over hand-written traces (see test_lineage.Hand)."""

from __future__ import annotations

from test_lineage import Hand

from ldfi.engine.anchors import Occurrences
from ldfi.engine.equivalence import AnsweredRuns
from ldfi.faults import Fault, MessageAnchor, SendAnchor, TimeAnchor
from ldfi.trace.model import MessageId


def crash(node: str, nth: int) -> Fault:
    return Fault("crash", SendAnchor(node, nth), node=node)


def cut(text: str) -> Fault:
    return Fault("cut", MessageAnchor(MessageId.parse(text)))


def a_crashed_after_one_send() -> Occurrences:
    """The run of crash(a, before send 2): a sent once to b, then died."""
    h = Hand()
    m = h.send("a", "b")
    h.recv("b", m)
    return Occurrences(h.trace())


def test_faults_on_what_never_happened_repeat_the_run() -> None:
    answered = AnsweredRuns()
    answered.add(3, [crash("a", 1)], a_crashed_after_one_send())
    # a->c and a's third send never happened in run 3: the same run again
    assert answered.answering([crash("a", 1), cut("a->c:tcp0#0")]) == 3
    assert answered.answering([crash("a", 1), Fault("omission", SendAnchor("a", 2),
                                                    node="a")]) == 3


def test_a_fault_whose_anchor_occurred_needs_its_own_run() -> None:
    answered = AnsweredRuns()
    answered.add(3, [crash("a", 1)], a_crashed_after_one_send())
    assert answered.answering([crash("a", 1), cut("a->b:tcp0#0")]) is None
    assert answered.answering([cut("a->c:tcp0#0")]) is None  # the crash is not in it


def test_a_time_anchor_without_a_recorded_start_counts_as_occurred() -> None:
    """No workload start in the trace: assume the worst, never skip on it."""
    occurrences = a_crashed_after_one_send()
    assert occurrences.ran_for is None
    assert occurrences.occurred(Fault("crash", TimeAnchor(100.0), node="b"))
    answered = AnsweredRuns()
    answered.add(1, [], occurrences)
    assert answered.answering([Fault("crash", TimeAnchor(100.0), node="b")]) is None
