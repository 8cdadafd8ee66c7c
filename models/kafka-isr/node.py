"""kafka-isr (Molly's kafka): a Kafka-style replicated log with an in-sync
replica set (ISR) kept in ZooKeeper, acks=all, and no minimum ISR size.

- The leader ("a") appends a client's write and sends it to every follower
  in the ISR. It acknowledges the write to the client once every ISR
  follower has acked it.
- A follower ("b", "c") appends what the leader sends and acks it.
- A follower that has not acked a write LAG_TIMEOUT ticks after the leader
  sent it is dropped from the ISR: the leader writes the smaller ISR to
  ZooKeeper ("zk") and, once ZooKeeper confirms, acknowledges every write that
  the remaining ISR has.
Nothing stops the ISR from shrinking to the leader alone (Kafka's
min.insync.replicas=1): the leader then acknowledges writes that live only
on itself, and a crash of the leader loses them.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lib"))
from protocol import Node, serve

LEADER = "a"
ZOOKEEPER = "zk"
LAG_TIMEOUT = 4  # ticks a follower may take to ack before it leaves the ISR


class KafkaISR(Node):
    transport = "tcp"

    def __init__(self, *args):
        super().__init__(*args)
        self.replicas = [n for n in self.nodes if n != ZOOKEEPER]
        self.isr = list(self.replicas)  # the leader's view; ZooKeeper's copy is authoritative
        self.log_entries = []
        self.pending = {}  # leader: value -> (client connection, followers that acked)

    def followers(self):
        return [n for n in self.isr if n != self.name]

    # -- leader ------------------------------------------------------------------

    def on_command(self, msg, conn):
        if msg["type"] == "write" and self.name == LEADER:
            value = msg["value"]
            self.log_entries.append(value)
            self.pending[value] = (conn, set())
            self.broadcast(self.followers(), "replicate", value=value)
            self.after(LAG_TIMEOUT, self.check_lag, value)
            self.maybe_commit(value)

    def on_ack(self, src, value):
        if value in self.pending:
            self.pending[value][1].add(src)
            self.maybe_commit(value)

    def maybe_commit(self, value):
        conn, acked = self.pending[value]
        if set(self.followers()) <= acked:
            del self.pending[value]
            self.log(f"{value!r} is on the whole ISR {self.isr}: ack the client")
            self.reply(conn, ack=value)

    def check_lag(self, value):
        if value not in self.pending:
            return
        lagging = [f for f in self.followers() if f not in self.pending[value][1]]
        new_isr = [n for n in self.isr if n not in lagging]
        self.log(f"{lagging} lag behind: shrink the ISR to {new_isr}")
        self.send(ZOOKEEPER, "isr_update", isr=new_isr)

    def on_isr_ok(self, isr):
        self.isr = isr
        for value in list(self.pending):
            self.maybe_commit(value)

    # -- follower and ZooKeeper ----------------------------------------------------

    def on_message(self, src, msg):
        kind = msg["type"]
        if kind == "replicate":
            self.log_entries.append(msg["value"])
            self.send(src, "ack", value=msg["value"])
        elif kind == "ack":
            self.on_ack(src, msg["value"])
        elif kind == "isr_update":  # ZooKeeper stores the ISR and confirms
            self.isr = msg["isr"]
            self.send(src, "isr_ok", isr=self.isr)
        elif kind == "isr_ok":
            self.on_isr_ok(msg["isr"])

    def status(self):
        if self.name == ZOOKEEPER:
            return {"isr": self.isr}
        if self.name == LEADER:
            return {"log": self.log_entries, "isr": self.isr}
        return {"log": self.log_entries}


if __name__ == "__main__":
    serve(KafkaISR, __doc__.splitlines()[0])
