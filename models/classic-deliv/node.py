"""classic-deliv (Molly's classic_rb): classic reliable broadcast.

The broadcaster sends the value to every other node once. A node that
receives it for the first time relays it once to every other node, then
delivers it (the textbook algorithm for crash faults over reliable links).
It tolerates any number of crashes, but not lost messages: a node whose
incoming copies are all lost never delivers.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lib"))
from protocol import DeliveryNode, serve


class ClassicDeliv(DeliveryNode):
    transport = "udp"

    def receive(self, value):
        """First receipt: relay to every other node, then deliver."""
        if value not in self.delivered:
            self.broadcast(self.peers, "bcast", value=value)
            self.deliver(value)

    def on_command(self, msg, conn):
        if msg["type"] == "bcast":
            self.receive(msg["value"])

    def on_message(self, src, msg):
        if msg["type"] == "bcast":
            self.receive(msg["value"])


if __name__ == "__main__":
    serve(ClassicDeliv, __doc__.splitlines()[0])
