"""ack-deliv (Molly's ack_rb): reliable broadcast with acknowledgements.

Whoever has the value (the broadcaster, and every node once it received it)
delivers it and sends it to each other node, again every RESEND_EVERY ticks
(one round trip) until that node acknowledges it, at most ROUNDS times
(Molly's version: every tick, until acked). A node
acknowledges every copy it receives. Unlike redun-deliv, the resending stops
per receiver as soon as its ack arrives.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lib"))
from protocol import DeliveryNode, serve

ROUNDS = 10  # at most this many sends per receiver, until acked
RESEND_EVERY = 2  # ticks: a round trip


class AckDeliv(DeliveryNode):
    transport = "udp"

    def __init__(self, *args):
        super().__init__(*args)
        self.acked = set()  # (value, peer) pairs acknowledged to us

    def deliver(self, value):
        """Deliver once, and start sending to every other node until acked."""
        if super().deliver(value):
            for peer in self.peers:
                self.resend(value, peer, ROUNDS)

    def resend(self, value, peer, rounds_left):
        if (value, peer) in self.acked:
            return
        self.send(peer, "rbcast", value=value)
        if rounds_left > 1:
            self.after(RESEND_EVERY, self.resend, value, peer, rounds_left - 1)

    def on_command(self, msg, conn):
        if msg["type"] == "bcast":
            self.deliver(msg["value"])

    def on_message(self, src, msg):
        if msg["type"] == "rbcast":
            self.send(src, "ack", value=msg["value"])
            self.deliver(msg["value"])
        elif msg["type"] == "ack":
            self.acked.add((msg["value"], src))


if __name__ == "__main__":
    serve(AckDeliv, __doc__.splitlines()[0])
