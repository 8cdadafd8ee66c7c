"""Wire formats of bop-bpf: Python code generated from proto/bopbpf/*.proto.

The *_pb2.py modules here are produced by `make setup` (scripts/gen_protos.py)
and are not tracked; edit the .proto files instead.
"""
