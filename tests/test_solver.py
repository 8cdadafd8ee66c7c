"""Fault hypotheses (ldfi.solver) on hand-made supports with known hitting
sets, and against brute force on random ones: the brute force reads the
killers' documented semantics directly (point killers; chain killers kill
from their place on), independently of the solver's reduction to classes."""

from __future__ import annotations

import itertools
import random
import sys
from collections import Counter
from pathlib import Path

import pytest

from ldfi.errors import UserError
from ldfi.faults import Fault, MessageAnchor, MessageFacts, SendAnchor, registry
from ldfi.lineage import Support
from ldfi.solver import ORDERS, Budget, Hypotheses, Space
from ldfi.solver.encode import Formula
from ldfi.solver.reduce import roots
from ldfi.trace.model import MessageId

NODES = ("client", "a", "b", "c")
PLUGIN_SRC = Path(__file__).parent / "plugins" / "ldfi-isolate"


def msg(text: str, send_index: int = 0, recv_before: int = 0, send_ts: int = 0,
        recv_ts: int = 0, payload: bytes = b"x") -> MessageFacts:
    mid = MessageId.parse(text)
    return MessageFacts(mid, mid.channel[:3], len(payload), payload, payload.hex(), send_index,
                        send_ts, recv_ts or send_ts + 5, recv_before)


def support(*groups: MessageFacts | tuple[MessageFacts, ...], run: str = "r") -> Support:
    return Support(run, tuple(g if isinstance(g, tuple) else (g,) for g in groups), NODES)


def every(hyp: Hypotheses) -> list[frozenset[Fault]]:
    out = []
    while (h := hyp.next()) is not None:
        out.append(h)
    return out


def texts(hs: list[frozenset[Fault]]) -> list[list[str]]:
    return [sorted(str(f) for f in h) for h in hs]


# -------------------------------------------------------------- brute force


def _cap(budget: Budget, kind: str) -> int:
    if kind not in budget.kinds:
        return 0
    cap = min(budget.max_faults, budget.max_per_kind.get(kind, budget.max_faults))
    return min(cap, budget.max_crashes) if registry.get(kind).crashes_node else cap


def admissible(h: tuple[Fault, ...], budget: Budget) -> bool:
    kinds = Counter(f.kind for f in h)
    keys = [(f.kind, k) for f in h if (k := registry.get(f.kind).exclusive(f)) is not None]
    crashes = sum(registry.get(f.kind).crashes_node for f in h)
    return (0 < len(h) <= budget.max_faults and crashes <= budget.max_crashes
            and all(n <= _cap(budget, k) for k, n in kinds.items()) and len(set(keys)) == len(keys))


def kill_sets(supports: list[Support], budget: Budget) -> list[list[list[set[Fault]]]]:
    """Per support, per group, per copy: every admitted fault that kills it.
    A chain killer's copy dies by every fault anchored on its chain at a place
    <= its own: anchored in the same run, or in any run if the chain is logical."""
    models = registry.models(budget.kinds)
    per_run = []
    shared: dict[object, dict[Fault, float]] = {}
    for s in supports:
        view = s.view(budget.include_client)
        ks = [[[k for model in models for k in model.killers(m, view)] for m in g]
              for g in s.groups]
        local: dict[object, dict[Fault, float]] = {}
        for k in (k for g in ks for c in g for k in c):
            if k.chain is not None and k.fault is not None \
                    and budget.admits(k.fault, view.faultable):
                places = (shared if k.logical else local).setdefault(k.chain, {})
                places[k.fault] = min(places.get(k.fault, k.at), k.at)
        per_run.append((ks, local, view))
    out = []
    for ks, local, view in per_run:
        run = []
        for g in ks:
            row = []
            for c in g:
                kill = {k.fault for k in c if k.chain is None and k.fault is not None
                        and budget.admits(k.fault, view.faultable)}
                for k in c:
                    if k.chain is not None:
                        anchors = (shared if k.logical else local).get(k.chain, {})
                        kill |= {f for f, at in anchors.items() if at <= k.at}
                row.append(kill)
            run.append(row)
        out.append(run)
    return out


def brute(supports: list[Support], budget: Budget,
          given: list[frozenset[Fault]] | None = None) -> set[frozenset[Fault]]:
    """Every admissible set that breaks each support binding it (a support
    learned under `given` faults binds only the sets holding them all)."""
    sets = kill_sets(supports, budget)
    under = given or [frozenset()] * len(sets)
    candidates = sorted({f for ks in sets for g in ks for c in g for f in c})
    found = set()
    for k in range(1, budget.max_faults + 1):
        for h in itertools.combinations(candidates, k):
            hs = set(h)
            if admissible(h, budget) and all(
                    not g_ <= hs or any(all(c & hs for c in g) for g in ks)
                    for ks, g_ in zip(sets, under, strict=True)):
                found.add(frozenset(h))
    return found


def random_run(rng: random.Random, run: str, n: int) -> Support:
    """n messages between random nodes; times, send indexes and the receiver's
    completed sends consistent with one timeline; some retransmission groups."""
    ordinals: Counter[tuple[str, str, str]] = Counter()
    sent: dict[str, list[int]] = {x: [] for x in NODES}
    facts = []
    for i in range(n):
        src, dst = rng.sample(NODES, 2)
        channel = rng.choice(["tcp0", "tcp0", "udp0", "tcp1"])
        key = (src, dst, channel)
        send_ts = 10 * i
        recv_ts = send_ts + rng.randrange(1, 25)
        mid = MessageId(src, dst, channel, ordinals[key])
        ordinals[key] += 1
        facts.append(MessageFacts(mid, channel[:3], 1, b"x", str(i), len(sent[src]), send_ts,
                                  recv_ts, 0))
        sent[src].append(send_ts)
    facts = [MessageFacts(f.id, f.proto, 1, b"x", f.payload_hash, f.send_index, f.send_ts,
                          f.recv_ts, sum(t < f.recv_ts for t in sent[f.dst])) for f in facts]
    groups: list[tuple[MessageFacts, ...]] = []
    for f in facts:
        if rng.random() < 0.25:
            continue  # sent, but the outcome did not depend on it
        same = [j for j, g in enumerate(groups) if g[0].id[:3] == f.id[:3]]
        if same and rng.random() < 0.3:
            groups[same[0]] += (f,)
        else:
            groups.append((f,))
    return Support(run, tuple(groups), NODES)


def random_budget(rng: random.Random) -> Budget:
    kinds = tuple(rng.sample(["omission", "cut", "reset", "crash", "restart", "partition"],
                             rng.randrange(1, 5)))
    max_faults = rng.choice([1, 1, 2, 2, 3])
    per_kind = {k: rng.randrange(0, 3) for k in kinds if rng.random() < 0.3}
    return Budget(kinds, max_faults, per_kind, rng.randrange(0, 3),
                  rng.choice([None, None, 2]), rng.random() < 0.2)


def in_order(sizes: list[int], order: str) -> bool:
    return sizes == sorted(sizes, reverse=order == "largest")


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("seed", range(40))
def test_every_hypothesis_and_only_those_against_brute_force(seed: int, order: str) -> None:
    rng = random.Random(seed)
    budget = random_budget(rng)
    supports = [random_run(rng, f"r{i}", rng.randrange(3, 8)) for i in range(rng.randrange(1, 4))]
    hyp = Hypotheses(budget, order=order)
    for s in supports:
        hyp.add_support(s)
    found = every(hyp)
    assert len(set(found)) == len(found), "a hypothesis was proposed twice"
    assert set(found) == brute(supports, budget)
    assert in_order([len(h) for h in found], order), f"not {order} first"
    # the search space: every admissible set over the candidates, counted exactly
    cands = hyp.candidates
    count = sum(admissible(h, budget) for k in range(1, budget.max_faults + 1)
                for h in itertools.combinations(cands, k))
    assert hyp.search_space() == count


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("seed", range(25))
def test_conditional_supports_against_brute_force(seed: int, order: str) -> None:
    """Supports learned under faults: exactly the sets that break what binds
    them, first those that break every support (tier 0), each tier in the
    order's sizes."""
    rng = random.Random(500 + seed)
    budget = random_budget(rng)
    supports = [random_run(rng, f"r{i}", rng.randrange(3, 7)) for i in range(rng.randrange(2, 4))]
    first = Hypotheses(budget)
    first.add_support(supports[0])
    pool = first.candidates
    given = [frozenset()] + [frozenset(rng.sample(pool, min(len(pool), rng.randrange(0, 3))))
                             for _ in supports[1:]]
    hyp = Hypotheses(budget, order=order)
    for s, g in zip(supports, given, strict=True):
        hyp.add_support(s, given=g)
    found = every(hyp)
    assert len(set(found)) == len(found), "a hypothesis was proposed twice"
    assert set(found) == brute(supports, budget, given)
    everything = brute(supports, budget)  # the sets that break every support
    tiers = [h not in everything for h in found]
    assert tiers == sorted(tiers), "a set leaving a support whole came before one breaking all"
    for tier in (False, True):
        sizes = [len(h) for h, t in zip(found, tiers, strict=True) if t == tier]
        assert in_order(sizes, order), f"not {order} first within a tier"


@pytest.mark.parametrize("seed", range(25))
def test_tiers_split_the_count_vectors_exactly(seed: int) -> None:
    """No count vector is a solution of both tiers: a conditional support's
    hit literal means exactly "the set breaks it" (its flags are definitions)."""
    rng = random.Random(500 + seed)
    budget = random_budget(rng)
    supports = [random_run(rng, f"r{i}", rng.randrange(3, 7)) for i in range(rng.randrange(2, 4))]
    hyp = Hypotheses(budget)
    hyp.add_support(supports[0])
    for s in supports[1:]:
        pool = hyp.candidates
        hyp.add_support(s, given=rng.sample(pool, min(len(pool), rng.randrange(1, 3))))
    hyp.search_space()  # builds the classes
    formula = Formula(hyp._classes, hyp._shapes, budget, hyp._given)
    seen: dict[tuple[int, ...], int] = {}
    for tier in range(formula.tiers):
        for k in range(1, budget.max_faults + 1):
            for coarse in formula.grains:
                while (v := formula.next_vector(k, tier, coarse)) is not None:
                    assert seen.setdefault(v, tier) == tier, f"{v} in both tiers"


@pytest.mark.parametrize("seed", range(15))
def test_supports_arriving_between_proposals(seed: int) -> None:
    """The engine's loop: propose, run, learn a new support, propose again."""
    rng = random.Random(100 + seed)
    budget = random_budget(rng)
    supports = [random_run(rng, f"r{i}", rng.randrange(3, 7)) for i in range(3)]
    hyp = Hypotheses(budget)
    proposed: list[frozenset[Fault]] = []
    for i, s in enumerate(supports):
        hyp.add_support(s)
        for _ in range(rng.randrange(0, 4) if i < 2 else 10_000):
            h = hyp.next()
            if h is None:
                break
            assert h in brute(supports[: i + 1], budget)  # hits every support known so far
            proposed.append(h)
    assert len(set(proposed)) == len(proposed)
    assert set(proposed) >= brute(supports, budget)  # nothing left out at the end


# ----------------------------------------------------------- known answers


def test_minimal_hitting_sets_of_two_supports_smallest_first() -> None:
    m1, m2, m3 = msg("a->b:udp0#0"), msg("b->c:udp0#0"), msg("c->a:udp0#0")
    hyp = Hypotheses(Budget(kinds=("omission",), max_faults=2), order="smallest")
    hyp.add_support(support(m1, m2, run="1"))
    hyp.add_support(support(m1, m3, run="2"))
    found = texts(every(hyp))
    assert found[0] == ["omission(a->b:udp0#0)"]
    assert sorted(found[1:]) == [
        ["omission(a->b:udp0#0)", "omission(b->c:udp0#0)"],  # supersets are hypotheses too
        ["omission(a->b:udp0#0)", "omission(c->a:udp0#0)"],
        ["omission(b->c:udp0#0)", "omission(c->a:udp0#0)"]]


def test_a_support_learned_under_faults_binds_only_their_supersets() -> None:
    """2pc-ctp's lesson: a run under crash(x) ends well by a path (timeouts) that
    exists only because of that crash; it must not rule out a different crash."""
    # b sends m2 before m1 reaches it: two independent first messages, so
    # neither omission silences the protocol (Hypotheses.preference)
    m1 = msg("a->b:udp0#0", recv_before=1)
    m2, m3 = msg("b->c:udp0#0"), msg("c->a:udp0#0")
    om = {m: Fault("omission", MessageAnchor(m.id)) for m in (m1, m2, m3)}
    hyp = Hypotheses(Budget(kinds=("omission",), max_faults=2), order="smallest")
    hyp.add_support(support(m1, m2, run="fault-free"))
    first = hyp.next()
    assert first == frozenset({om[m1]})
    # under omission(m1) the outcome came by m3: binds only sets holding omission(m1)
    hyp.add_support(support(m3, run="under m1"), given=[om[m1]])
    rest = texts(every(hyp))
    assert ["omission(b->c:udp0#0)"] in rest  # not forced to also lose m3
    assert ["omission(a->b:udp0#0)", "omission(c->a:udp0#0)"] in rest
    assert ["omission(a->b:udp0#0)", "omission(b->c:udp0#0)"] not in rest  # leaves m3's way
    # unconditioned, the same support would have ruled omission(b->c) out alone
    plain = Hypotheses(Budget(kinds=("omission",), max_faults=2), order="smallest")
    plain.add_support(support(m1, m2, run="fault-free"))
    plain.add_support(support(m3, run="under m1"))
    assert ["omission(b->c:udp0#0)"] not in texts(every(plain))


def test_sets_that_break_conditional_supports_too_come_first() -> None:
    """Molly's hypotheses (every known way broken, conditional ones included)
    before the sets only the conditional rule adds; both tiers complete and
    disjoint, each smallest first."""
    # b sends m2 before m1 reaches it: two independent first messages, so
    # neither omission silences the protocol (Hypotheses.preference)
    m1 = msg("a->b:udp0#0", recv_before=1)
    m2, m3 = msg("b->c:udp0#0"), msg("c->a:udp0#0")
    om = {m: Fault("omission", MessageAnchor(m.id)) for m in (m1, m2, m3)}
    hyp = Hypotheses(Budget(kinds=("omission",), max_faults=2), order="smallest")
    hyp.add_support(support(m1, m2, run="fault-free"))
    assert hyp.next() == frozenset({om[m1]})
    hyp.add_support(support(m3, run="under m1"), given=[om[m1]])
    rest = texts(every(hyp))
    assert sorted(rest[:2]) == [  # break m1|m2 and m3: two faults
        ["omission(a->b:udp0#0)", "omission(c->a:udp0#0)"],
        ["omission(b->c:udp0#0)", "omission(c->a:udp0#0)"]]
    assert rest[2:] == [["omission(b->c:udp0#0)"]]  # leaves m3's way, which needs m1 lost


def test_largest_first_a_set_that_holds_rules_out_its_subsets() -> None:
    """The default order: the whole budget first. A run of {m1, m2} that
    keeps the outcome through m3 answers {m1} and {m2} too: neither breaks
    the new support, so neither is ever run. Molly's order runs them first."""
    m1, m2, m3 = msg("a->b:udp0#0"), msg("b->c:udp0#0"), msg("c->a:udp0#0")
    budget = Budget(kinds=("omission",), max_faults=2)
    largest = Hypotheses(budget)
    largest.add_support(support(m1, m2))
    assert texts([largest.next()]) == [["omission(a->b:udp0#0)", "omission(b->c:udp0#0)"]]
    largest.add_support(support(m3, run="under m1, m2"))
    assert sorted(texts(every(largest))) == [
        ["omission(a->b:udp0#0)", "omission(c->a:udp0#0)"],
        ["omission(b->c:udp0#0)", "omission(c->a:udp0#0)"]]
    smallest = Hypotheses(budget, order="smallest")
    smallest.add_support(support(m1, m2))
    assert len(smallest.next()) == 1


def test_unknown_order_is_refused() -> None:
    with pytest.raises(UserError, match="unknown hypothesis order"):
        Hypotheses(Budget(), order="random")


def test_crashes_between_rounds_come_before_crashes_inside_a_broadcast() -> None:
    """Molly's crash model (a node stops between time steps) first: a crash
    before a's first send or right after it heard the votes, before the
    crashes that cut a broadcast in half; those still come, none is lost."""
    prepare = [msg("a->b:udp0#0", send_index=0), msg("a->c:udp0#0", send_index=1)]
    votes = [msg("b->a:udp0#0", send_index=0, recv_before=2),
             msg("c->a:udp0#0", send_index=0, recv_before=2)]
    commit = [msg("a->b:udp0#1", send_index=2, recv_before=1),
              msg("a->c:udp0#1", send_index=3, recv_before=1)]
    hyp = Hypotheses(Budget(kinds=("crash",), max_faults=1, max_crashes=1))
    hyp.add_support(support(*prepare, *votes, *commit))
    found = texts(every(hyp))
    coarse = [["crash(a, before send 1)"], ["crash(a, before send 3)"],
              ["crash(b, before send 1)"], ["crash(c, before send 1)"]]
    fine = [["crash(a, before send 2)"], ["crash(a, before send 4)"]]
    assert sorted(found[:4]) == coarse
    assert sorted(found[4:]) == fine


def test_the_most_damaging_crash_that_leaves_the_protocol_something_first() -> None:
    """2pc with coordinator d and three agents. Crashing d after the votes
    kills its commits (3 messages), an agent's crash its vote and its commit
    (2); those come in that order (z3's, by name, would start with the
    agents). Crashing d before its prepares kills every message of the
    protocol, so nothing is left for the check to ask about: it comes last."""
    agents = ("a", "b", "c")
    prepare = [msg(f"d->{x}:udp0#0", send_index=i) for i, x in enumerate(agents)]
    votes = [msg(f"{x}->d:udp0#0", send_index=0, recv_before=3) for x in agents]
    commit = [msg(f"d->{x}:udp0#1", send_index=3 + i, recv_before=1)
              for i, x in enumerate(agents)]
    hyp = Hypotheses(Budget(kinds=("crash",), max_faults=1, max_crashes=1))
    hyp.add_support(Support("r", tuple((m,) for m in prepare + votes + commit),
                            ("client", *agents, "d")))
    found = every(hyp)
    assert texts(found[:1]) == [["crash(d, before send 4)"]]
    assert sorted(texts(found[1:4])) == [[f"crash({x}, before send 1)"] for x in agents]
    assert texts(found[4:5]) == [["crash(d, before send 1)"]]
    assert [hyp.preference(h) for h in found[:5]] == [(0, -3), (0, -2), (0, -2), (0, -2),
                                                       (1, -9)]


def test_a_crash_that_silences_the_protocol_through_its_relays_comes_last() -> None:
    """Classic broadcast: a sends to b and c, which relay to each other once
    they have it. Crashing a before its first send kills only a's messages,
    but the relays come after them (reduce.roots): nothing of the protocol
    is left, so it comes after the relays' crashes of the same grain."""
    hello = [msg("a->b:udp0#0", send_index=0), msg("a->c:udp0#0", send_index=1)]
    relays = [msg("b->c:udp0#0", send_index=0), msg("c->b:udp0#0", send_index=0)]
    hyp = Hypotheses(Budget(kinds=("crash",), max_faults=1, max_crashes=1))
    hyp.add_support(support(*hello, *relays))
    found = texts(every(hyp))
    assert sorted(found[:2]) == [["crash(b, before send 1)"], ["crash(c, before send 1)"]]
    assert found[2:] == [["crash(a, before send 1)"], ["crash(a, before send 2)"]]


@pytest.mark.parametrize("pause_ns", [0, 50_000_000])
def test_a_pause_between_sends_starts_a_round(pause_ns: int) -> None:
    """A broadcaster that resends on a timer: a crash between two ticks is
    Molly's crash at a time step (a round boundary, searched with the
    coarse points); one between the copies of one tick is not."""
    copies = [(msg(f"a->b:udp0#{t}", send_index=2 * t, send_ts=t * pause_ns),
               msg(f"a->c:udp0#{t}", send_index=2 * t + 1, send_ts=t * pause_ns + 10_000))
              for t in range(2)]
    hyp = Hypotheses(Budget(kinds=("crash", "omission"), max_faults=2, max_crashes=1))
    hyp.add_support(support(tuple(c[0] for c in copies), tuple(c[1] for c in copies)))
    points = [next(f.anchor.nth for f in h if f.kind == "crash")
              for h in every(hyp) if len(h) == 2 and any(f.kind == "crash" for f in h)]
    coarse = {0, 2} if pause_ns else {0}
    first_fine = next(i for i, p in enumerate(points) if p not in coarse)
    assert set(points[:first_fine]) == coarse
    assert not coarse & set(points[first_fine:])


def test_retransmissions_must_all_be_lost() -> None:
    copies = (msg("a->b:udp0#0"), msg("a->b:udp0#1"))
    one = Hypotheses(Budget(kinds=("omission",), max_faults=1))
    one.add_support(support(copies))
    assert one.next() is None  # one omission cannot lose both copies: certified
    two = Hypotheses(Budget(kinds=("omission",), max_faults=2))
    two.add_support(support(copies))
    assert texts(every(two)) == [["omission(a->b:udp0#0)", "omission(a->b:udp0#1)"]]
    # a cut at the first copy loses both
    tcp = (msg("a->b:tcp0#0"), msg("a->b:tcp0#1"))
    cut = Hypotheses(Budget(kinds=("cut",), max_faults=1))
    cut.add_support(support(tcp))
    assert texts(every(cut)) == [["cut(a->b:tcp0#0)"]]


def test_cut_kills_later_messages_on_its_flow_only() -> None:
    later, other_dir = msg("a->b:tcp0#3"), msg("b->a:tcp0#0")
    hyp = Hypotheses(Budget(kinds=("cut",), max_faults=1))
    hyp.add_support(support(msg("a->b:tcp0#1")))
    hyp.add_support(support(later, other_dir, run="2"))
    # cut(a->b#1) also kills #3 of the second run; cut(b->a#0) only the second
    assert texts(every(hyp)) == [["cut(a->b:tcp0#1)"]]


def test_crash_kills_the_nodes_later_sends_and_what_it_receives_after() -> None:
    m = msg("a->b:tcp0#0", send_index=4, recv_before=2)
    hyp = Hypotheses(Budget(kinds=("crash",)))
    hyp.add_support(support(m))
    # a before its 5th send (that send never leaves); b before its 2nd send,
    # the latest crash point that still precedes the receive
    assert sorted(texts(every(hyp))) == [["crash(a, before send 5)"], ["crash(b, before send 2)"]]
    never = Hypotheses(Budget(kinds=("crash",)))
    never.add_support(support(msg("a->b:tcp0#0", send_index=0, recv_before=0)))
    assert texts(every(never)) == [["crash(a, before send 1)"]]  # b sent nothing before


def test_a_crash_kills_a_chain_of_messages_with_one_fault() -> None:
    # b relays: receives x (after 1 send), sends y (send #1); a crash of b
    # before send 1 kills both, before send 2 only y; a is the client's peer
    x, y = msg("a->b:udp0#0", send_index=0, recv_before=1), msg("b->c:udp0#0", send_index=1)
    hyp = Hypotheses(Budget(kinds=("crash",)))
    hyp.add_support(support(x, run="1"))
    hyp.add_support(support(y, run="2"))
    assert texts(every(hyp)) == [["crash(b, before send 1)"]]


def test_the_client_is_not_faulted_unless_the_budget_says_so() -> None:
    req = msg("client->a:tcp0#0", recv_before=1)
    reply = msg("a->client:tcp0#0", send_index=1)
    default = Hypotheses(Budget(kinds=("cut", "crash")))
    default.add_support(support(req, reply))
    assert sorted(texts(every(default))) == [["crash(a, before send 1)"],
                                             ["crash(a, before send 2)"]]
    with_client = Hypotheses(Budget(kinds=("cut", "crash"), include_client=True))
    with_client.add_support(support(req, reply))
    assert ["cut(client->a:tcp0#0)"] in texts(every(with_client))


def test_horizon_keeps_only_early_anchors() -> None:
    hyp = Hypotheses(Budget(kinds=("cut", "crash"), horizon=2))
    hyp.add_support(support(msg("a->b:tcp0#1", send_index=1), msg("a->b:tcp0#2", send_index=2),
                            msg("b->c:tcp0#5", send_index=7)))
    assert sorted(texts(every(hyp))) == [["crash(a, before send 2)"], ["cut(a->b:tcp0#1)"]]


def test_per_kind_caps_and_crash_caps_and_exclusive_crash_points() -> None:
    ms = [msg(f"a->b:udp0#{i}", send_index=i) for i in range(3)] + \
         [msg(f"c->b:tcp{i}#0", send_index=i) for i in range(3)]
    budget = Budget(kinds=("omission", "cut", "crash"), max_faults=3,
                    max_per_kind={"cut": 1}, max_crashes=2)
    hyp = Hypotheses(budget)
    hyp.add_support(support(*ms))
    found = every(hyp)
    assert found
    for h in found:
        kinds = Counter(f.kind for f in h)
        assert kinds["cut"] <= 1 and kinds["crash"] <= 2
        crashed = [f.node for f in h if f.kind == "crash"]
        assert len(crashed) == len(set(crashed))  # one crash point per node
    assert any(Counter(f.kind for f in h)["crash"] == 2 for h in found)
    assert hyp.search_space() == len(found)  # one support: every admissible set hits it
    none = Hypotheses(Budget(kinds=("crash",), max_crashes=0))
    none.add_support(support(*ms))
    assert none.next() is None and none.candidates == []


def test_no_repeats_and_tried_blocks_exactly_that_set() -> None:
    ms = [msg(f"a->b:udp0#{i}") for i in range(3)]
    hyp = Hypotheses(Budget(kinds=("omission",), max_faults=2))
    hyp.add_support(support(*ms))
    first = Fault("omission", hyp.candidates[0].anchor)
    hyp.mark_tried([first])
    found = every(hyp)
    assert frozenset([first]) not in found
    assert any(first in h for h in found)  # its supersets remain
    assert len(found) == len(set(found)) == 3 + 3 - 1


def test_same_inputs_same_order() -> None:
    rng = random.Random(5)
    supports = [random_run(rng, f"r{i}", 8) for i in range(3)]
    runs = []
    for _ in range(2):
        hyp = Hypotheses(Budget(kinds=("omission", "cut", "crash"), max_faults=2))
        for s in supports:
            hyp.add_support(s)
        runs.append(every(hyp))
    assert runs[0] == runs[1]


def test_an_unbreakable_support_certifies_at_once() -> None:
    hyp = Hypotheses(Budget(kinds=("omission",)))
    hyp.add_support(support(msg("a->b:tcp0#0")))  # TCP: no omission kills it
    assert hyp.next() is None
    assert Hypotheses().next() is None  # no support yet: nothing to break


def test_reset_and_partition_reach_messages_in_flight() -> None:
    # two copies on a->b: #0 sent at 0 but read at 50, #1 sent at 40, read at 45.
    # A reset (or isolation) at #1 also kills #0, still in flight: both copies lost
    copies = (msg("a->b:tcp0#0", send_ts=0, recv_ts=50), msg("a->b:tcp0#1", send_ts=40,
                                                             recv_ts=45))
    for kind, expect in [("reset", [["reset(a->b:tcp0#0)"], ["reset(a->b:tcp0#1)"]]),
                         ("partition", [["partition(a | b c, at a->b:tcp0#0)"],
                                        ["partition(a | b c, at a->b:tcp0#1)"],
                                        ["partition(b | a c, at a->b:tcp0#0)"],
                                        ["partition(b | a c, at a->b:tcp0#1)"]])]:
        hyp = Hypotheses(Budget(kinds=(kind,)))
        hyp.add_support(support(copies))
        assert sorted(texts(every(hyp))) == expect, kind
    # times are per run: a reset placed in one run says nothing of another's
    hyp = Hypotheses(Budget(kinds=("reset",)))
    hyp.add_support(support(msg("a->b:tcp0#5", send_ts=0), run="1"))
    hyp.add_support(support(msg("a->b:tcp0#9", send_ts=90), run="2"))
    assert hyp.next() is None


def test_logical_chains_reach_runs_where_the_anchor_was_not_needed() -> None:
    """Run 2's lineage lacks a->b#1 (sent, not needed), yet cutting from #1 on
    kills its #3; crashing b before its 2nd send kills run 2's later sends."""
    hyp = Hypotheses(Budget(kinds=("cut", "crash")))
    hyp.add_support(support(msg("a->b:tcp0#1", send_index=1), msg("b->c:tcp0#0", send_index=1),
                            run="1"))
    hyp.add_support(support(msg("a->b:tcp0#3", send_index=3), msg("b->c:tcp0#4", send_index=6),
                            run="2"))
    assert sorted(texts(every(hyp))) == [["crash(a, before send 2)"], ["crash(b, before send 2)"],
                                         ["cut(a->b:tcp0#1)"], ["cut(b->c:tcp0#0)"]]


# ---------------------------------------------------------------- strategies


def test_space_counts_enumerates_and_samples_uniformly() -> None:
    cands = [Fault("omission", a) for a in Hypotheses().candidates]  # empty: no support
    assert Space(cands, Budget()).count() == 0
    hyp = Hypotheses(Budget(kinds=("omission", "crash"), max_faults=2, max_crashes=1))
    hyp.add_support(support(msg("a->b:udp0#0", send_index=0), msg("a->b:udp0#1", send_index=1),
                            msg("c->b:udp0#0", send_index=0, recv_before=1)))
    space = Space(hyp.candidates, hyp.budget)
    listed = list(space)
    assert len(listed) == len(set(listed)) == space.count() == hyp.search_space()
    assert [len(h) for h in listed] == sorted(len(h) for h in listed)
    rng = random.Random(1)
    n = 40 * len(listed) * 10
    seen = Counter(space.sample(rng) for _ in range(n))
    assert set(seen) == set(listed)
    expect = n / len(listed)
    assert all(abs(c - expect) < 0.25 * expect for c in seen.values()), seen


@pytest.mark.parametrize("strategy", ["random", "exhaustive"])
def test_baseline_strategies_walk_the_whole_space_once(strategy: str) -> None:
    hyp = Hypotheses(Budget(kinds=("omission", "cut"), max_faults=2), strategy=strategy, seed=3)
    hyp.add_support(support(msg("a->b:udp0#0"), msg("a->b:tcp0#0"), msg("b->c:tcp0#0")))
    found = every(hyp)
    assert len(found) == len(set(found)) == hyp.search_space() == 3 + 3
    if strategy == "exhaustive":
        assert [len(h) for h in found] == [1, 1, 1, 2, 2, 2]
    again = Hypotheses(hyp.budget, strategy=strategy, seed=3)
    again.add_support(support(msg("a->b:udp0#0"), msg("a->b:tcp0#0"), msg("b->c:tcp0#0")))
    assert every(again) == found  # seeded


def test_unknown_strategy() -> None:
    with pytest.raises(UserError, match="unknown search strategy 'smart': use one of ldfi"):
        Hypotheses(strategy="smart")


# -------------------------------------------------------------------- budget


def test_budget_from_a_scenario_table() -> None:
    table = {"kinds": None, "max_faults": None, "max_crashes": None, "per_kind": None,
             "horizon": None, "include_client": None}
    assert Budget.from_mapping(table) == Budget()
    b = Budget.from_mapping({"kinds": ["cut", "crash"], "max_faults": 3, "per_kind": {"cut": 1},
                             "horizon": 4, "include_client": True, "max_crashes": 2})
    assert (b.kinds, b.max_faults, b.cap("cut"), b.cap("crash"), b.cap("omission")) == \
        (("cut", "crash"), 3, 1, 2, 0)


@pytest.mark.parametrize(("table", "says"), [
    ({"max_fault": 2}, "unknown key 'max_fault'; accepted keys: kinds, max_faults"),
    ({"kinds": ["cut", "explode"]}, "unknown fault kind 'explode' in kinds; known kinds: crash"),
    ({"kinds": "cut"}, "kinds must be a list"),
    ({"kinds": []}, "kinds is empty"),
    ({"kinds": ["delay"]}, "kind 'delay' removes no message"),
    ({"max_faults": 0}, "max_faults must be a whole number >= 1, not 0"),
    ({"max_faults": True}, "max_faults must be a whole number >= 1, not True"),
    ({"max_crashes": -1}, "max_crashes must be a whole number >= 0"),
    ({"horizon": 0}, "horizon must be a whole number >= 1"),
    ({"per_kind": {"reset": 1}}, "per_kind names 'reset', which is not in kinds"),
    ({"per_kind": 2}, "per_kind must be a table"),
    ({"include_client": "yes"}, "include_client must be true or false"),
])
def test_budget_errors_are_one_line(table: dict[str, object], says: str) -> None:
    with pytest.raises(UserError) as err:
        Budget.from_mapping(table, where="echo.toml [faults]")
    assert says in str(err.value) and str(err.value).startswith("echo.toml [faults]: ")


# ---------------------------------------------------------- a plugin's kind


@pytest.fixture
def isolate_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """ldfi-isolate "installed": its dist-info on sys.path, as pip leaves it."""
    info = tmp_path / "ldfi_isolate-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ldfi-isolate\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(
        "[ldfi.fault_models]\nisolate = ldfi_isolate:Isolate\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(PLUGIN_SRC))
    registry.reload()
    yield
    registry.reload()
    sys.modules.pop("ldfi_isolate", None)


@pytest.mark.usefixtures("isolate_plugin")
def test_the_solver_uses_a_plugins_killers() -> None:
    hop = msg("a->b:tcp0#0", send_index=2, recv_before=1)
    to_client = msg("b->client:tcp0#0", send_index=3)  # the client's traffic is not cut
    hyp = Hypotheses(Budget(kinds=("isolate", "cut"), max_faults=1), order="smallest")
    hyp.add_support(support(hop, to_client))
    assert sorted(texts(every(hyp))) == [["cut(a->b:tcp0#0)"], ["isolate(a, before send 3)"],
                                         ["isolate(b, before send 1)"]]
    both = Hypotheses(Budget(kinds=("isolate",), max_faults=2), order="smallest")
    both.add_support(support(hop, run="1"))
    both.add_support(support(msg("c->a:tcp0#0", send_index=0, recv_before=5), run="2"))
    # a's send count is a logical place: isolating a before its 3rd send (from
    # run 1) also cuts run 2's message, which a received after 5 sends
    found = texts(every(both))
    assert found[0] == ["isolate(a, before send 3)"]
    assert sorted(found[1:]) == [["isolate(a, before send 3)", "isolate(b, before send 1)"],
                                 ["isolate(a, before send 3)", "isolate(c, before send 1)"],
                                 ["isolate(a, before send 5)", "isolate(b, before send 1)"],
                                 ["isolate(b, before send 1)", "isolate(c, before send 1)"]]


def test_a_fault_on_a_message_its_crashed_sender_never_sends_is_moot() -> None:
    early = msg("a->b:udp0#0", send_index=0, recv_before=1)
    late = msg("a->b:udp0#1", send_index=3, recv_before=1)
    hyp = Hypotheses(Budget(kinds=("omission", "crash"), max_faults=2, max_crashes=1))
    hyp.add_support(support(early, late))
    crash_a = Fault("crash", SendAnchor("a", 2), node="a")  # before a's 3rd send
    lose_early = Fault("omission", MessageAnchor(early.id))
    lose_late = Fault("omission", MessageAnchor(late.id))
    assert hyp.moot({crash_a, lose_late}) == {lose_late}  # a is down before send 3
    assert hyp.moot({crash_a, lose_early}) == frozenset()  # sent before a goes down
    assert hyp.moot({lose_early, lose_late}) == frozenset()  # nobody goes down
    # the receiver going down does not stop the send: the omission still fires
    crash_b = Fault("crash", SendAnchor("b", 0), node="b")
    assert hyp.moot({crash_b, lose_late}) == frozenset()
    # a message no support has shown: no prediction
    unseen = Fault("omission", MessageAnchor(MessageId.parse("a->c:udp0#4")))
    assert hyp.moot({crash_a, unseen}) == frozenset()


def test_sets_holding_a_vacuous_runs_faults_come_last_within_their_size() -> None:
    ms = [msg(f"a->b:udp0#{i}") for i in range(3)]
    budget = Budget(kinds=("omission",), max_faults=2)
    plain = Hypotheses(budget)
    plain.add_support(support(*ms))
    hyp = Hypotheses(budget)
    hyp.add_support(support(*ms))
    hyp.add_vacuous({Fault("omission", MessageAnchor(ms[0].id))})
    got = texts(every(hyp))
    assert sorted(got) == sorted(texts(every(plain)))  # put off, never dropped
    first = "omission(a->b:udp0#0)"
    assert [len(h) for h in got] == [2, 2, 2, 1, 1, 1]  # sizes keep their order
    assert [first in h for h in got] == [False, True, True, False, False, True]


def test_a_vacuous_runs_crash_is_blamed_alone() -> None:
    """{crash(a), omission(a->b#0)} held vacuously: every set holding that
    crash is put off, whatever it loses besides; an omission alone takes
    only its run's exact faults."""
    ms = [msg(f"a->b:udp0#{i}", send_index=i) for i in range(3)]
    budget = Budget(kinds=("omission", "crash"), max_faults=2, max_crashes=1)
    plain = Hypotheses(budget)
    plain.add_support(support(*ms))
    hyp = Hypotheses(budget)
    hyp.add_support(support(*ms))
    crash = Fault("crash", SendAnchor("a", 1), node="a")
    hyp.add_vacuous({crash, Fault("omission", MessageAnchor(ms[0].id))})
    got = every(hyp)
    assert sorted(texts(got)) == sorted(texts(every(plain)))  # put off, never dropped
    pairs = [crash in h for h in got if len(h) == 2]
    assert pairs == sorted(pairs)  # within size 2, every set with the crash last


def test_roots_are_the_protocols_first_messages() -> None:
    """A send is a root if its node had heard no protocol message before it:
    b's second send comes after it read a's (recv_before=1: b had made one
    send then); the client's messages are not the protocol's."""
    first = msg("a->b:udp0#0", send_index=0, recv_before=1)
    b_before = msg("b->c:udp0#0", send_index=0)
    b_after = msg("b->c:udp0#1", send_index=1)
    request = msg("client->a:tcp0#0")
    answer = msg("a->client:tcp0#0", send_index=1)
    assert roots(support(first, b_before, b_after, request, answer)) == {first.id, b_before.id}
    assert roots(support(request, answer)) == set()  # no protocol message: nothing to silence


def test_a_set_holding_a_silencer_comes_last_in_its_scope_and_damage_counts_a_chain_once() -> None:
    """One flow a->b of five messages: a cut at the first loses them all
    (the protocol's every first message), so every pair holding it comes
    after the other pairs, whatever their damage; two cuts of one flow
    lose what the earlier one alone loses."""
    ms = [msg(f"a->b:tcp0#{i}", send_index=i) for i in range(5)]
    hyp = Hypotheses(Budget(kinds=("cut",), max_faults=2))
    hyp.add_support(support(*ms))
    cut = {i: Fault("cut", MessageAnchor(ms[i].id)) for i in range(5)}
    assert hyp.damage({cut[1], cut[2]}) == hyp.damage({cut[1]}) == 4
    pairs = [cut[0] in h for h in every(hyp) if len(h) == 2]
    assert len(pairs) == 10 and pairs == sorted(pairs)


def test_sends_no_trigger_can_fire_at_are_never_fault_anchors() -> None:
    """The kernel counts a sendfile, an IPv6 send or a later message of a
    sendmmsg, but cannot fire there: a fault anchored at one would never
    fire and leave the run flawed, so the solver must not propose it."""
    import dataclasses

    from ldfi.faults import registry
    from ldfi.faults.model import LineageView
    from ldfi.lineage.build import armable
    from tracer.events import SOCK, Event

    view = LineageView("r", NODES, faultable=frozenset({"a", "b"}))
    for text, kind in (("a->b:tcp0#0", "cut"), ("a->b:udp0#0", "omission"),
                       ("a->b:tcp0#0", "crash")):
        message = msg(text, recv_before=1)
        assert list(registry.get(kind).killers(message, view)), (text, kind)
        blind = dataclasses.replace(message, armable=False, recv_prior_armable=False)
        assert list(registry.get(kind).killers(blind, view)) == [], (text, kind)

    def send(**kw: object) -> Event:
        return Event(**{"seq": 0, "kind": SOCK, "ts": 1, "pid": 1, "tid": 1, "comm": "x", "node": "a",
                        "syscall": "write", "family": 4, **kw})  # type: ignore[arg-type]

    assert armable(send())
    assert not armable(send(family=6))  # an IPv6 socket, dual-stack ones included
    assert not armable(send(syscall="sendfile")) and not armable(send(syscall="send_other"))
    assert armable(send(syscall="sendmsg")) and not armable(send(syscall="sendmsg", msg_idx=1))
