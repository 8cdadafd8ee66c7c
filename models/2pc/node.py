"""2pc (Molly's 2pc): two-phase commit, no timeouts.

The coordinator (node "coord") gets "begin" from the workload and sends
PREPARE to every agent; an agent that can commit votes yes (every agent can,
as in Molly's example) and waits. With every vote yes the coordinator
decides commit and sends COMMIT to every agent (a no vote: abort). Nobody
ever times out: if the coordinator dies after the agents voted, they wait
forever (2PC blocks).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lib"))
from protocol import Node, serve

COORDINATOR = "coord"


class TwoPC(Node):
    transport = "tcp"

    def __init__(self, *args):
        super().__init__(*args)
        self.agents = [n for n in self.nodes if n != COORDINATOR]
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

    def on_message(self, src, msg):
        kind = msg["type"]
        if kind == "vote":
            self.on_vote(src, msg["vote"])
        # agents
        elif kind == "prepare":
            self.voted = True
            self.send(src, "vote", vote="yes")
        elif kind in ("commit", "abort"):
            self.decide(kind)

    def status(self):
        return {"decision": self.decision, "voted": self.voted}


if __name__ == "__main__":
    serve(TwoPC, __doc__.splitlines()[0])
