"""3pc (Molly's 3pc): three-phase commit with timeouts, and the termination
protocol among agents that fail-stop crashes need.

Coordinator ("coord"):
  begin: CANCOMMIT to every agent; VOTE_TIMEOUT ticks later, if some vote
    is missing: abort.
  every vote yes: PRECOMMIT to every agent; ACK_TIMEOUT ticks later, if some
    ack is missing: abort (Molly's rule).
  every ack: commit.
  A decision is sent to every agent (COMMIT or ABORT).
Agent:
  CANCOMMIT: vote yes; now uncertain. Still uncertain UNCERTAIN_TIMEOUT
    ticks later: run the termination protocol.
  PRECOMMIT: ack; now precommitted. Still precommitted PRECOMMIT_TIMEOUT
    ticks later: commit.
  COMMIT / ABORT: decide so.
Termination protocol (an uncertain agent whose coordinator went quiet): ask
  every other agent for its state (STATE_REQ), wait TERMINATION_TIMEOUT ticks,
  then: commit if one answered committed or precommitted and none aborted,
  else abort. An agent asked before it even voted aborts on its own first.

With crashes alone this is safe and live: the coordinator's PRECOMMITs all
arrive long before any agent's uncertainty ends, so an uncertain agent that
hears no precommitted peer can abort. With lost messages it is not: an agent
cannot tell a lost PRECOMMIT, ACK or ABORT from a crash, and its timeout can
then decide against the others.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lib"))
from protocol import Node, serve

COORDINATOR = "coord"
# A message takes one tick; a round trip two.
VOTE_TIMEOUT = 4  # coordinator: ticks from CANCOMMIT until it gives up on votes
ACK_TIMEOUT = 4  # coordinator: ticks from PRECOMMIT until it gives up on acks
UNCERTAIN_TIMEOUT = 6  # agent: ticks from its vote until it starts the termination protocol
PRECOMMIT_TIMEOUT = 6  # agent: ticks from PRECOMMIT until it commits on its own
TERMINATION_TIMEOUT = 3  # agent: ticks it waits for the other agents' states


class ThreePC(Node):
    transport = "udp"

    def __init__(self, *args):
        super().__init__(*args)
        self.agents = [n for n in self.nodes if n != COORDINATOR]
        self.others = [n for n in self.agents if n != self.name]  # for an agent
        self.state = "init"  # agent: init, uncertain, precommitted, committed, aborted
        self.decision = None
        self.voted = False
        self.votes = set()  # coordinator: agents that voted yes
        self.acks = set()  # coordinator: agents that acked PRECOMMIT
        self.peer_states = {}  # agent in the termination protocol: other agent -> state

    def decide(self, decision):
        if self.decision is None:
            self.decision = decision
            self.state = "committed" if decision == "commit" else "aborted"
            self.log(f"decided {decision}")

    # -- coordinator -------------------------------------------------------------

    def on_command(self, msg, conn):
        if msg["type"] == "begin" and self.name == COORDINATOR:
            self.broadcast(self.agents, "cancommit")
            self.after(VOTE_TIMEOUT, self.coordinator_timeout, "vote")

    def on_vote(self, src):
        self.votes.add(src)
        if self.decision is None and self.votes == set(self.agents) and not self.acks:
            self.broadcast(self.agents, "precommit")
            self.after(ACK_TIMEOUT, self.coordinator_timeout, "ack")

    def on_ack(self, src):
        self.acks.add(src)
        if self.decision is None and self.acks == set(self.agents):
            self.decide("commit")
            self.broadcast(self.agents, "commit")

    def coordinator_timeout(self, what):
        waited = self.votes if what == "vote" else self.acks
        if self.decision is None and waited != set(self.agents):
            self.log(f"{what}(s) missing: abort")
            self.decide("abort")
            self.broadcast(self.agents, "abort")

    # -- agent -------------------------------------------------------------------

    def on_cancommit(self, src):
        if self.state == "init":
            self.state = "uncertain"
            self.voted = True
            self.send(src, "vote", vote="yes")
            self.after(UNCERTAIN_TIMEOUT, self.uncertain_timeout)

    def on_precommit(self, src):
        if self.state in ("uncertain", "precommitted"):
            self.state = "precommitted"
            self.send(src, "ack")
            self.after(PRECOMMIT_TIMEOUT, self.precommit_timeout)

    def precommit_timeout(self):
        if self.state == "precommitted":
            self.log("precommitted and the coordinator is quiet: commit")
            self.decide("commit")

    def uncertain_timeout(self):
        if self.state == "uncertain":
            self.log("uncertain and the coordinator is quiet: ask the other agents")
            self.broadcast(self.others, "state_req")
            self.after(TERMINATION_TIMEOUT, self.terminate)

    def on_state_req(self, src):
        if self.state == "init":
            self.decide("abort")  # not voted yet: refuse on our own
        self.send(src, "state", state=self.state)

    def terminate(self):
        if self.decision is not None:
            return
        states = set(self.peer_states.values())
        if "aborted" not in states and states & {"committed", "precommitted"}:
            self.decide("commit")
        else:
            self.decide("abort")

    def on_message(self, src, msg):
        kind = msg["type"]
        if kind == "vote":
            self.on_vote(src)
        elif kind == "ack":
            self.on_ack(src)
        elif kind == "cancommit":
            self.on_cancommit(src)
        elif kind == "precommit":
            self.on_precommit(src)
        elif kind == "state_req":
            self.on_state_req(src)
        elif kind == "state":
            self.peer_states[src] = msg["state"]
        elif kind in ("commit", "abort"):
            self.decide(kind)

    def status(self):
        return {"decision": self.decision, "voted": self.voted, "state": self.state}


if __name__ == "__main__":
    serve(ThreePC, __doc__.splitlines()[0])
