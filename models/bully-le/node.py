"""bully-le (Molly's bully leader election): the bully algorithm
(Garcia-Molina 1982) among a < b < c (a node's rank is its place in --nodes).

start an election: send ELECTION to every higher node. No OK within
  OK_TIMEOUT ticks (or no higher node at all): nobody higher is alive, so
  become leader: send COORDINATOR to every lower node. An OK but no
  COORDINATOR within COORD_TIMEOUT ticks: the higher node died on the way,
  start again (at most MAX_ELECTIONS times).
ELECTION from a lower node: answer OK, and take over: start an election
  (or, when already the leader, tell it with COORDINATOR).
COORDINATOR from a higher node: that is the leader. From a lower node: bully
  it, start an election.
The algorithm assumes a synchronous system with reliable links: a node that
does not answer in time is dead.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lib"))
from protocol import Node, serve

OK_TIMEOUT = 3  # ticks to wait for an OK from a higher node (a round trip takes 2)
COORD_TIMEOUT = 6  # ticks to wait, after an OK, for the COORDINATOR
MAX_ELECTIONS = 4


class Bully(Node):
    transport = "tcp"

    def __init__(self, *args):
        super().__init__(*args)
        order = list(self.nodes)
        self.rank = {n: i for i, n in enumerate(order)}
        self.higher = order[self.rank[self.name] + 1:]
        self.lower = order[:self.rank[self.name]]
        self.leader = None
        self.participated = False
        self.electing = False
        self.got_ok = False
        self.elections = 0  # also names the current election, for its timers

    def start_election(self):
        if self.elections >= MAX_ELECTIONS:
            self.log("too many elections: give up")
            return
        self.participated = True
        self.elections += 1
        self.electing, self.got_ok = True, False
        if not self.higher:
            self.become_leader()
            return
        self.broadcast(self.higher, "election")
        self.after(OK_TIMEOUT, self.ok_timeout, self.elections)

    def ok_timeout(self, election):
        if election == self.elections and self.electing and not self.got_ok:
            self.log("no higher node answered")
            self.become_leader()

    def coord_timeout(self, election):
        if election == self.elections and self.electing:
            self.log("a higher node answered but never took over: start again")
            self.start_election()

    def become_leader(self):
        self.leader, self.electing = self.name, False
        self.log("I am the leader")
        self.broadcast(self.lower, "coordinator")

    def on_command(self, msg, conn):
        if msg["type"] == "elect":
            self.start_election()

    def on_message(self, src, msg):
        kind = msg["type"]
        if kind == "election":
            self.participated = True
            self.send(src, "ok")
            if self.leader == self.name:
                self.send(src, "coordinator")
            elif not self.electing:
                self.start_election()
        elif kind == "ok":
            if self.electing and not self.got_ok:
                self.got_ok = True
                self.after(COORD_TIMEOUT, self.coord_timeout, self.elections)
        elif kind == "coordinator":
            if self.rank[src] > self.rank[self.name]:
                self.leader, self.electing = src, False
                self.log(f"leader is {src}")
            elif not self.electing:
                self.start_election()

    def status(self):
        return {"leader": self.leader, "participated": self.participated}


if __name__ == "__main__":
    serve(Bully, __doc__.splitlines()[0])
