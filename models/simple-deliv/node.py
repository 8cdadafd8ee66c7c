"""simple-deliv (Molly's simplog): best-effort broadcast.

The broadcaster delivers the value and sends it once to every other node;
a node that receives it delivers it. Nothing is retried, so one lost
datagram leaves a correct node without the value.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lib"))
from protocol import Node, serve


class SimpleDeliv(Node):
    transport = "udp"

    def __init__(self, *args):
        super().__init__(*args)
        self.delivered = []

    def deliver(self, value):
        if value not in self.delivered:
            self.delivered.append(value)
            self.log(f"delivered {value!r}")

    def on_command(self, msg, conn):
        if msg["type"] == "bcast":
            self.deliver(msg["value"])
            self.broadcast(self.peers, "deliver", value=msg["value"])

    def on_message(self, src, msg):
        if msg["type"] == "deliver":
            self.deliver(msg["value"])

    def status(self):
        return {"delivered": self.delivered}


if __name__ == "__main__":
    serve(SimpleDeliv, __doc__.splitlines()[0])
