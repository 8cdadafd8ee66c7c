"""paxos-synod (Molly's paxos_synod): single-decree Paxos.

Every node is an acceptor and a learner; "a" and "b" also propose (the
workload gives each a value). Ballots are unique per proposer: SEEDS[name],
then + len(nodes) on every new round, as in Molly's example.

Proposer: PREPARE(ballot) to every acceptor. With promises from a majority,
  ACCEPT(ballot, v), v being the value of the highest-ballot acceptance
  reported in the promises, or its own value if none. With ACCEPTED from a
  majority, v is chosen: decide it and send DECIDE(v) to every other node.
  Not decided ROUND_TIMEOUT ticks after PREPARE: a new round with a higher
  ballot, at most MAX_ROUNDS rounds.
Acceptor: promise a ballot higher than any it promised (reporting what it
  accepted, if anything; a lower ballot gets no answer); accept a ballot at
  least as high as any it promised.
A proposer's own acceptor is called directly, not over the network.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lib"))
from protocol import Node, serve

SEEDS = {"a": 4, "b": 5, "c": 6}  # first ballot of each node (Molly's seeds)
ROUND_TIMEOUT = 6  # ticks (a round takes 4: two round trips)
MAX_ROUNDS = 3


class Paxos(Node):
    transport = "udp"

    def __init__(self, *args):
        super().__init__(*args)
        self.majority = len(self.nodes) // 2 + 1
        self.decided = None
        # proposer
        self.value = None
        self.ballot = None
        self.rounds = 0
        self.promises = {}  # acceptor -> (accepted ballot, accepted value)
        self.accepted_by = set()
        self.accept_sent = False
        # acceptor
        self.promised = 0
        self.accepted = (0, None)  # (ballot, value)

    def to_node(self, node, kind, **fields):
        """A message to `node`'s acceptor/proposer role: our own is just called."""
        if node == self.name:
            self.on_message(self.name, {"type": kind, **fields})
        else:
            self.send(node, kind, **fields)

    def decide(self, value):
        if self.decided is None:
            self.decided = value
            self.log(f"decided {value!r}")

    # -- proposer ------------------------------------------------------------------

    def on_command(self, msg, conn):
        if msg["type"] == "propose" and self.value is None:
            self.value = msg["value"]
            self.new_round()

    def new_round(self):
        self.rounds += 1
        self.ballot = SEEDS[self.name] + len(self.nodes) * (self.rounds - 1)
        self.promises, self.accepted_by, self.accept_sent = {}, set(), False
        self.after(ROUND_TIMEOUT, self.round_timeout, self.ballot)
        for node in self.nodes:
            self.to_node(node, "prepare", ballot=self.ballot)

    def round_timeout(self, ballot):
        if ballot == self.ballot and self.decided is None and self.rounds < MAX_ROUNDS:
            self.log(f"ballot {ballot} got nowhere: next round")
            self.new_round()

    def on_promise(self, src, msg):
        if msg["ballot"] != self.ballot or self.accept_sent:
            return
        self.promises[src] = (msg["accepted_ballot"], msg["accepted_value"])
        if len(self.promises) >= self.majority:
            self.accept_sent = True
            ballot, value = max(self.promises.values(), key=lambda p: p[0])
            value = value if ballot > 0 else self.value
            for node in self.nodes:
                self.to_node(node, "accept", ballot=self.ballot, value=value)

    def on_accepted(self, src, msg):
        if msg["ballot"] != self.ballot:
            return
        self.accepted_by.add(src)
        if len(self.accepted_by) == self.majority:
            self.decide(msg["value"])
            self.broadcast(self.peers, "decide", value=msg["value"])

    # -- acceptor --------------------------------------------------------------------

    def on_prepare(self, src, ballot):
        if ballot > self.promised:
            self.promised = ballot
            self.to_node(src, "promise", ballot=ballot, accepted_ballot=self.accepted[0],
                         accepted_value=self.accepted[1])

    def on_accept(self, src, ballot, value):
        if ballot >= self.promised:
            self.promised = ballot
            self.accepted = (ballot, value)
            self.to_node(src, "accepted", ballot=ballot, value=value)

    def on_message(self, src, msg):
        kind = msg["type"]
        if kind == "prepare":
            self.on_prepare(src, msg["ballot"])
        elif kind == "promise":
            self.on_promise(src, msg)
        elif kind == "accept":
            self.on_accept(src, msg["ballot"], msg["value"])
        elif kind == "accepted":
            self.on_accepted(src, msg)
        elif kind == "decide":
            self.decide(msg["value"])

    def status(self):
        return {"proposed": self.value, "decided": self.decided,
                "accepted": list(self.accepted), "promised": self.promised}


if __name__ == "__main__":
    serve(Paxos, __doc__.splitlines()[0])
