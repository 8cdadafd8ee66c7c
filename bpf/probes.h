/* Shared between bpf/probes.bpf.c and tracer/probes.py (which mirrors these
 * numbers and the record layout with ctypes): the slots user space reads and
 * writes. */
#ifndef LDFI_PROBES_H
#define LDFI_PROBES_H

/* Index into the `config` array: what user space tells the programs before it
 * triggers them, so that only the doctor's own events count. */
enum probe_config {
    CFG_SELF_TGID = 0,   /* the doctor's own process */
    CFG_VICTIM_TGID = 1, /* the child bpf_send_signal must kill */
    CFG_TCP_PORT = 2,    /* the loopback listener the sock tracepoint must see */
    CFG_UDP_PORT = 3,    /* the sender whose port the UDP recvmsg hook must see */
    CFG_MAX = 4,
};

/* Index into the `hits` array: how often each program saw its event. A probe
 * passes on an observed effect *and* a hit, so we know the program caused it. */
enum probe_hit {
    HIT_SYSCALL = 0,
    HIT_SOCK = 1,
    HIT_SIGNAL = 2,
    HIT_TC_DROP = 3,
    HIT_CGROUP_DROP = 4,
    HIT_KPROBE = 5,
    HIT_FENTRY = 6,
    HIT_LSM = 7,
    HIT_SOCK_SEND = 8,
    HIT_SOCK_RECV = 9,
    HIT_UDP_SOURCE = 10,
    HIT_SOCK_CREATE = 11,
    HIT_SOCK_RELEASE = 12,
    HIT_MAX = 13,
};

#endif
