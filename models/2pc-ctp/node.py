"""2pc-ctp (Molly's 2pc_ctp): two-phase commit with timeouts and the
cooperative termination protocol.

Two-phase commit as in 2pc (coordinator "coord", agents vote yes, commit when
all voted yes), plus:
- the coordinator aborts if some vote is missing VOTE_TIMEOUT ticks after
  it sent PREPARE (Molly's 2pc_timeout);
- an agent still undecided DECISION_TIMEOUT ticks after it voted asks every
  other agent for the decision (DECISION_REQ). An agent asked
  1. that has decided answers with its decision;
  2. that has not voted yet aborts on its own and answers abort;
  3. that voted but has not decided is just as uncertain: it cannot help.
If the coordinator dies after every agent voted and before any got the
decision, every agent is in case 3: the protocol still blocks.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lib"))
from protocol import Node, serve

COORDINATOR = "coord"
VOTE_TIMEOUT = 4  # ticks the coordinator waits for the votes
DECISION_TIMEOUT = 6  # ticks an agent waits for the decision before asking the others


class TwoPCCTP(Node):
    transport = "tcp"

    def __init__(self, *args):
        super().__init__(*args)
        self.agents = [n for n in self.nodes if n != COORDINATOR]
        self.others = [n for n in self.agents if n != self.name]  # for an agent
        self.decision = None
        self.voted = False
        self.votes = {}  # coordinator: agent -> "yes" | "no"

    def decide(self, decision):
        if self.decision is None:
            self.decision = decision
            self.log(f"decided {decision}")

    # coordinator
    def on_command(self, msg, conn):
        if msg["type"] == "begin" and self.name == COORDINATOR:
            self.broadcast(self.agents, "prepare")
            self.after(VOTE_TIMEOUT, self.vote_timeout)

    def on_vote(self, src, vote):
        self.votes[src] = vote
        if self.decision is not None:
            return
        if vote == "no":
            self.decide("abort")
        elif all(self.votes.get(a) == "yes" for a in self.agents):
            self.decide("commit")
        else:
            return
        self.broadcast(self.agents, self.decision)

    def vote_timeout(self):
        if self.decision is None:
            self.log("votes missing: abort")
            self.decide("abort")
            self.broadcast(self.agents, "abort")

    # agents
    def on_prepare(self, src):
        if self.decision == "abort":  # aborted on our own (case 2) before PREPARE came
            self.send(src, "vote", vote="no")
            return
        self.voted = True
        self.send(src, "vote", vote="yes")
        self.after(DECISION_TIMEOUT, self.decision_timeout)

    def decision_timeout(self):
        if self.decision is None:
            self.broadcast(self.others, "decision_req")

    def on_decision_req(self, src):
        if self.decision is None and not self.voted:
            self.decide("abort")  # case 2: we may still refuse
        if self.decision is not None:
            self.send(src, self.decision)  # cases 1 and 2
        # case 3: voted yes, undecided: no answer

    def on_message(self, src, msg):
        kind = msg["type"]
        if kind == "vote":
            self.on_vote(src, msg["vote"])
        elif kind == "prepare":
            self.on_prepare(src)
        elif kind == "decision_req":
            self.on_decision_req(src)
        elif kind in ("commit", "abort"):
            self.decide(kind)

    def status(self):
        return {"decision": self.decision, "voted": self.voted}


if __name__ == "__main__":
    serve(TwoPCCTP, __doc__.splitlines()[0])
