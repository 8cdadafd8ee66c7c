"""simple-deliv (Molly's simplog): best-effort broadcast.

The broadcaster delivers the value and sends it once to every other node;
a node that receives it delivers it. Nothing is retried, so one lost
datagram leaves a correct node without the value.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lib"))
from protocol import DeliveryNode, serve


class SimpleDeliv(DeliveryNode):
    transport = "udp"

    def on_command(self, msg, conn):
        if msg["type"] == "bcast":
            self.deliver(msg["value"])
            self.broadcast(self.peers, "deliver", value=msg["value"])

    def on_message(self, src, msg):
        if msg["type"] == "deliver":
            self.deliver(msg["value"])


if __name__ == "__main__":
    serve(SimpleDeliv, __doc__.splitlines()[0])
