"""redun-deliv (Molly's replog): redundant broadcast, every node relays.

Whoever has the value (the broadcaster, and every node once it received
it) delivers it and sends it to every other node once a tick, ROUNDS times
from the moment it got it (Molly's version: forever). Losing a datagram or
the broadcaster is covered: any correct node that has the value keeps
handing it on.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lib"))
from protocol import DeliveryNode, serve

ROUNDS = 10  # sends per other node, one per tick, by every node that has the value


class RedunDeliv(DeliveryNode):
    transport = "udp"

    def deliver(self, value):
        """Deliver once, and start relaying it."""
        if super().deliver(value):
            self.relay(value, ROUNDS)

    def relay(self, value, rounds_left):
        self.broadcast(self.peers, "deliver", value=value)
        if rounds_left > 1:
            self.after(1, self.relay, value, rounds_left - 1)

    def on_command(self, msg, conn):
        if msg["type"] == "bcast":
            self.deliver(msg["value"])

    def on_message(self, src, msg):
        if msg["type"] == "deliver":
            self.deliver(msg["value"])


if __name__ == "__main__":
    serve(RedunDeliv, __doc__.splitlines()[0])
