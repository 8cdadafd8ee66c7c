#!/usr/bin/env bash
# make setup: bring a Debian 12 machine (root) to the state bop-bpf needs.
# Idempotent, and each step checks before it acts, so a second run is fast.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "setup: $*"; }
die() { echo "setup: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (apt-get, mounts, kernel headers link): run 'sudo make setup'"
command -v dpkg-query >/dev/null || die "not a Debian system (no dpkg-query): bop-bpf's set-up targets Debian 12"

# Two set-ups at once (parallel shells, CI plus a developer) would race on
# apt and on .venv: take turns.
exec 9>/run/lock/ldfi-setup.lock
flock 9

# Debian packages: bcc and its Python bindings, headers bcc compiles against,
# netlink/tc tools, and the third-party systems the tests and benchmarks run.
APT_PACKAGES=(
    python3-bpfcc libbpfcc bpftool linux-headers-amd64
    python3-venv python3-dev gcc make
    iproute2 iputils-ping procps psmisc util-linux graphviz
    strace redis-server redis-tools
)

missing_packages() {
    local installed
    installed=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${APT_PACKAGES[@]}" 2>/dev/null \
        | awk '$2 == "installed" { print $1 }' | sed 's/:.*//')
    for p in "${APT_PACKAGES[@]}"; do
        grep -qx "$p" <<<"$installed" || echo "$p"
    done
}

MISSING=$(missing_packages)
if [ -n "$MISSING" ]; then
    say "installing Debian packages: $(echo $MISSING)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $MISSING >/dev/null
fi

# bcc compiles against /lib/modules/$(uname -r)/build. There is no Debian
# package for this VM's kernel, but the newest Debian headers tree compiles
# tracepoint, tc and cgroup programs (we never read kernel structs through it).
KREL=$(uname -r)
KDIR=/lib/modules/$KREL
if [ ! -e "$KDIR/build/include" ]; then
    ARCH_TREE=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -1)
    [ -n "$ARCH_TREE" ] || die "no kernel headers in /usr/src: apt-get install linux-headers-amd64"
    COMMON_TREE=${ARCH_TREE%-amd64}-common
    [ -d "$COMMON_TREE" ] || die "$COMMON_TREE missing next to $ARCH_TREE: reinstall linux-headers-amd64"
    mkdir -p "$KDIR"
    ln -sfn "$ARCH_TREE" "$KDIR/build"
    ln -sfn "$COMMON_TREE" "$KDIR/source"
    say "no headers for kernel $KREL; linked $KDIR/build -> $ARCH_TREE and source -> $COMMON_TREE"
fi

# tracefs for tracepoints, debugfs for older tools, cgroup v2 for per-node cgroups.
mountpoint -q /sys/kernel/tracing || mount -t tracefs none /sys/kernel/tracing
mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug
if ! awk '$3 == "cgroup2" { found = 1 } END { exit !found }' /proc/mounts; then
    if mountpoint -q /sys/fs/cgroup; then
        # a v1 (hybrid) layout owns /sys/fs/cgroup: add v2 beside it
        mkdir -p /sys/fs/cgroup/unified
        mount -t cgroup2 none /sys/fs/cgroup/unified
    else
        mount -t cgroup2 none /sys/fs/cgroup
    fi
    say "mounted the cgroup v2 hierarchy"
fi

# The .venv sees Debian's bcc through the system site packages; it must be
# built from Debian's own python3, the interpreter bcc was built for.
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import bcc' 2>/dev/null; then
    rm -rf .venv
    /usr/bin/python3 -m venv --system-site-packages .venv
    say "created .venv (Debian python3 + system site packages for bcc)"
fi

STAMP=.venv/.ldfi-installed
WANT=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
    .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
    echo "$WANT" >"$STAMP"
    say "installed bop-bpf (editable) with dev extras into .venv"
fi

# Python code for the wire formats is generated from proto/, never edited.
.venv/bin/python scripts/gen_protos.py
