/* Structs shared by faults.bpf.c (kernel side) and tracer/injector.py (user
 * side, which mirrors them with ctypes and checks the *_SIZE constants).
 * Keep fields naturally aligned and sizes multiples of 8.
 *
 * A fault is one slot (0 .. MAX_FAULTS-1) of three arrays: its trigger
 * (written by user space before the run), its state (written by whoever
 * fires it: the kernel at a send, or user space at a time), and the data-
 * plane rules that refer to the slot (flow and pair rules). A rule is active
 * while its fault has fired and not yet healed: fired_ns != 0 and
 * (until_ns == 0 or now < until_ns).
 */
#ifndef LDFI_FAULTS_H
#define LDFI_FAULTS_H

#define MAX_FAULTS 16
#define PREFIX_MAX 16

/* fault_trigger.action */
#define FA_DROP_MSG  1  /* UDP: drop the triggering send's datagram(s) */
#define FA_CUT       2  /* drop the flow direction from now (until_ns or forever) */
#define FA_RESET     3  /* turn the flow's packets from the send's first byte into RSTs */
#define FA_KILL      4  /* SIGKILL the triggering process; node silenced by pair rules */
#define FA_STOP      5  /* SIGSTOP the triggering process */
#define FA_ACTIVATE  6  /* nothing but firing: pair rules of the slot become active */

/* flow_rule.action */
#define RULE_DROP 1
#define RULE_RST  2

/* EV_FAULT: one per fired fault, in the trace's ring buffer (trace.h's
 * hdr.kind space) so the trace shows where in the run it happened */
#define EV_FAULT 6

struct fault_trigger {
    __u64 cgroup;         /* sending node's cgroup; 0 = no kernel trigger (time/start) */
    __u64 opener_cgroup;  /* TCP channel filter: who opened it (0 = any) */
    __u64 param_ns;       /* how long the effect lasts (0 = to the end of the run) */
    __u32 peer_ip;        /* IPv4, network order; 0 = any peer */
    __u32 channel;        /* valid when has_channel */
    __u32 nth;            /* fire at the nth (0-based) matching successful send */
    __u8  proto;          /* 0 = any, 6 = TCP, 17 = UDP */
    __u8  action;         /* FA_* */
    __u8  has_channel;
    __u8  prefix_len;
    __u8  prefix[PREFIX_MAX];
};
#define FAULT_TRIGGER_SIZE 56

struct fault_state {
    __u64 fired_ns;       /* bpf_ktime_get_ns() when fired; 0 = not (yet) */
    __u64 until_ns;       /* effect ends (0 = never) */
    __u64 send_ts;        /* triggering send's sys_enter time (its trace event's ts_enter) */
    __u64 sk;
    __u64 matched;        /* matching successful sends seen so far */
    __u64 dropped;        /* packets dropped on behalf of this fault */
    __u64 reset;          /* packets turned into RST */
    __u32 pid;
    __u32 tid;
    __u32 seq;            /* TCP write_seq at the trigger: the send's first byte */
    __u32 signals;        /* bpf_send_signal() calls that succeeded */
};
#define FAULT_STATE_SIZE 72

struct flow_key {         /* one direction of a flow, IPv4 */
    __u32 saddr;
    __u32 daddr;
    __u16 sport;          /* host order; 0 = any (an unbound UDP socket's first send) */
    __u16 dport;          /* host order */
    __u8  proto;
    __u8  _pad[3];
};
#define FLOW_KEY_SIZE 16

struct flow_rule {
    __u32 fault;
    __u32 action;         /* RULE_* */
    __u32 rst_seq;        /* RULE_RST: first sequence number to reset at */
    __u32 _pad;
};
#define FLOW_RULE_SIZE 16

struct pair_key {         /* 0 = any address */
    __u32 saddr;
    __u32 daddr;
};
#define PAIR_KEY_SIZE 8

struct ev_fault {
    struct ev_hdr h;      /* kind EV_FAULT; pid/tid/cgroup of the triggering task */
    __u64 sk;
    __u64 ts_enter;       /* the triggering send's sys_enter time */
    __u32 fault;          /* slot */
    __u32 action;         /* FA_* */
    __u32 seq;            /* TCP write_seq at the trigger */
    __u32 nth;
};
#define EV_FAULT_SIZE 80

#endif
