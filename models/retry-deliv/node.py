"""retry-deliv (Molly's rdlog): broadcast with retries by the broadcaster.

The broadcaster delivers the value and sends it to every other node once a
tick, ROUNDS times (Molly's version resends forever; a run has to end). A
node that receives it delivers it; receivers never relay. Lost datagrams are
covered by the next round, but if the broadcaster crashes early, a node it
had not reached yet never gets the value.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lib"))
from protocol import DeliveryNode, serve

ROUNDS = 10  # sends per receiver, one per tick


class RetryDeliv(DeliveryNode):
    transport = "udp"

    def on_command(self, msg, conn):
        if msg["type"] == "bcast":
            self.deliver(msg["value"])
            self.resend(msg["value"], ROUNDS)

    def resend(self, value, rounds_left):
        self.broadcast(self.peers, "deliver", value=value)
        if rounds_left > 1:
            self.after(1, self.resend, value, rounds_left - 1)

    def on_message(self, src, msg):
        if msg["type"] == "deliver":
            self.deliver(msg["value"])


if __name__ == "__main__":
    serve(RetryDeliv, __doc__.splitlines()[0])
