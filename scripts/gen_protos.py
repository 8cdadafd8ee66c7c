"""Generate bopbpf/*_pb2.py (and gRPC stubs) from proto/bopbpf/*.proto.

Runs on every `make setup`; does nothing when the generated files are newer
than their sources, so a second set-up stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
OUT = ROOT


def _outputs(proto: Path) -> list[Path]:
    stem = proto.with_suffix("").name
    return [OUT / "bopbpf" / f"{stem}_pb2.py", OUT / "bopbpf" / f"{stem}_pb2_grpc.py"]


def stale(protos: list[Path]) -> bool:
    for proto in protos:
        for out in _outputs(proto):
            if not out.exists() or out.stat().st_mtime < proto.stat().st_mtime:
                return True
    return False


def main() -> int:
    protos = sorted((PROTO_ROOT / "bopbpf").glob("*.proto"))
    if not protos or not stale(protos):
        return 0
    from grpc_tools import protoc  # dev extra; imported only when work is needed

    include = str(Path(protoc.__file__).parent / "_proto")
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={OUT}",
        f"--pyi_out={OUT}",
        f"--grpc_python_out={OUT}",
        *[str(p) for p in protos],
    ]
    if protoc.main(args) != 0:
        print("setup: error: protoc failed on proto/bopbpf/*.proto", file=sys.stderr)
        return 1
    print(f"setup: generated Python code for {len(protos)} proto file(s) into bopbpf/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
