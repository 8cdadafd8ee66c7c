/* bop-bpf fault injector: triggers at traced sends, and a tc classifier that
 * acts on the run's packets.
 *
 * This file is #included by trace.bpf.c, not compiled alone: a trigger has to
 * see the tracer's own view of a send (the socket it resolved, the per-thread
 * stash) and has to decide whether the send it killed is recorded at all; and
 * the tc program, loaded from the same object, has to share the maps the
 * triggers write. Everything here is idle until user space sets fault_armed.
 *
 * Semantics (DESIGN.md, "Fault semantics"): a dropped TCP segment is only a
 * delay, so losing a TCP message means cutting the flow direction from that
 * message on (retransmissions included) or resetting the connection. A signal
 * sent with bpf_send_signal() at sys_enter is delivered on return from the
 * system call, so the send still happens: a kill therefore also silences the
 * node's network from the same instant (pair rules), which drops what that
 * send emits.
 */
#include <uapi/linux/pkt_cls.h>
#include "faults.h"

#define L_SIGKILL 9
#define L_SIGSTOP 19
#define L_TCP_SYN_SENT 2
#define L_TCP_ESTABLISHED 1
#define TH_FIN 0x01
#define TH_RST 0x04
#define TH_ACK 0x10

_Static_assert(sizeof(struct fault_trigger) == FAULT_TRIGGER_SIZE, "fault_trigger layout");
_Static_assert(sizeof(struct fault_state) == FAULT_STATE_SIZE, "fault_state layout");
_Static_assert(sizeof(struct flow_key) == FLOW_KEY_SIZE, "flow_key layout");
_Static_assert(sizeof(struct flow_rule) == FLOW_RULE_SIZE, "flow_rule layout");
_Static_assert(sizeof(struct ev_fault) == EV_FAULT_SIZE, "ev_fault layout");
_Static_assert(sizeof(struct ev_fault) <= RECORD_SIZE, "ev_fault fits a record slot");

struct chan_count_key {
    u64 cgroup;
    u32 peer;
    u32 proto;
};

struct sk_chan_key {
    u64 sk;
    u32 peer;   /* TCP: 0 (one channel per sock); UDP: the destination */
    u32 _pad;
};

struct chan_val {
    u64 opener; /* cgroup of the node that opened the channel */
    u32 chan;   /* its number among (opener, peer, proto) channels, in opening order */
    u32 _pad;
};

BPF_ARRAY(fault_armed, u32, 1);
BPF_ARRAY(triggers, struct fault_trigger, MAX_FAULTS);
BPF_ARRAY(fault_states, struct fault_state, MAX_FAULTS);
BPF_HASH(flow_rules, struct flow_key, struct flow_rule, 1024);
BPF_HASH(pair_rules, struct pair_key, u32, 4096);
BPF_HASH(drop_tids, u32, u32, 1024);          /* tid -> slot, while its send is being dropped */
BPF_HASH(dead_cgroups, u64, u32, 256);        /* killed nodes: cgroup -> slot */
/* Channel numbers, the kernel's copy of ldfi.trace.ids: a TCP channel is
 * numbered when the opener's handshake completes (SYN_SENT -> ESTABLISHED,
 * so refused attempts, which carry no message, take no number), and the
 * accepting side finds its number through the 4-tuple recorded then; a UDP
 * channel is (sending sock, destination), numbered at its first send. */
BPF_HASH(chan_counts, struct chan_count_key, u32, 4096);
BPF_HASH(sk_chans, struct sk_chan_key, struct chan_val, 65536);
BPF_HASH(tuple_chans, struct flow_key, struct chan_val, 65536);

static __always_inline int faults_armed(void)
{
    u32 zero = 0;
    u32 *armed = fault_armed.lookup(&zero);
    return armed && *armed;
}

static __always_inline u32 next_channel(u64 cg, u32 peer, u32 proto)
{
    struct chan_count_key key = {.cgroup = cg, .peer = peer, .proto = proto};
    u32 zero = 0;
    u32 *n = chan_counts.lookup_or_try_init(&key, &zero);
    if (!n)
        return 0;
    /* not atomic (bcc's LLVM cannot use an XADD's result): two threads of one
     * node opening channels to the same peer in the same instant may share a
     * number; the injector's report then shows the fault fired elsewhere */
    u32 k = *n;
    *n = k + 1;
    return k;
}

/* Called from the tracer's inet_sock_set_state probe with the sock's owner. */
static __always_inline void fault_tcp_state(u64 sk, u64 owner, int oldstate, int newstate,
                                            u16 family, u32 saddr, u32 daddr,
                                            u16 sport, u16 dport)
{
    if (family != L_AF_INET || !faults_armed())
        return;
    struct sk_chan_key key = {.sk = sk};
    if (newstate == L_TCP_ESTABLISHED && oldstate == L_TCP_SYN_SENT) {
        /* numbered when the opener's handshake completes: a refused or
         * unanswered attempt is no channel in the trace either */
        struct chan_val v = {.opener = owner, .chan = next_channel(owner, daddr, L_IPPROTO_TCP)};
        sk_chans.update(&key, &v);
        struct flow_key t = {.saddr = saddr, .daddr = daddr, .sport = sport, .dport = dport,
                             .proto = L_IPPROTO_TCP};
        tuple_chans.update(&t, &v);
    } else if (newstate == L_TCP_CLOSE) {
        sk_chans.delete(&key);
    }
}

/* The channel a send goes out on, or 0 if it cannot be known. */
static __always_inline int send_channel(u64 sk, u64 cg, struct flow_key *fk, struct chan_val *out)
{
    struct sk_chan_key key = {.sk = sk};
    if (fk->proto == L_IPPROTO_UDP)
        key.peer = fk->daddr;
    struct chan_val *v = sk_chans.lookup(&key);
    if (v) {
        *out = *v;
        return 1;
    }
    if (fk->proto == L_IPPROTO_TCP) {
        /* the accepting side: the opener recorded the 4-tuple from its view */
        struct flow_key t = {.saddr = fk->daddr, .daddr = fk->saddr, .sport = fk->dport,
                             .dport = fk->sport, .proto = L_IPPROTO_TCP};
        v = tuple_chans.lookup(&t);
        if (!v)
            return 0;
        *out = *v;
    } else {
        out->opener = cg;
        out->chan = next_channel(cg, fk->daddr, L_IPPROTO_UDP);
        out->_pad = 0;
    }
    sk_chans.update(&key, out);
    return 1;
}

/* First PREFIX_MAX bytes of a send's buffer (first iovec for vector sends). */
static __always_inline void send_prefix(u8 *pre, struct stash *st, u16 sys)
{
    u64 src = st->buf;
    u64 iov[2] = {};
    if (sys == SYS_WRITEV) {
        bpf_probe_read_user(iov, 16, (void *)st->buf);
        src = iov[0];
    } else if (sys == SYS_SENDMSG || sys == SYS_SENDMMSG) {
        u64 mh[4] = {};  /* msg_name, msg_namelen, msg_iov, msg_iovlen (first mmsghdr) */
        bpf_probe_read_user(mh, 32, (void *)st->buf);
        bpf_probe_read_user(iov, 16, (void *)mh[2]);
        src = iov[0];
    }
    if (src)
        bpf_probe_read_user(pre, PREFIX_MAX, (void *)src);
}

static __always_inline int prefix_eq(const u8 *pre, const struct fault_trigger *t)
{
#pragma unroll
    for (int i = 0; i < PREFIX_MAX; i++) {
        if (i >= t->prefix_len)
            break;
        if (pre[i] != t->prefix[i])
            return 0;
    }
    return 1;
}

static __always_inline void emit_fault(u32 slot, const struct fault_trigger *t,
                                       const struct fault_state *s, u64 cg)
{
    struct ev_fault *e = reserve_record(sizeof(struct ev_fault));
    if (!e)
        return;
    fill_hdr(&e->h, EV_FAULT, cg);
    e->sk = s->sk;
    e->ts_enter = s->send_ts;
    e->fault = slot;
    e->action = t->action;
    e->seq = s->seq;
    e->nth = t->nth;
    submit_record(e);
}

static __always_inline void fire(u32 slot, const struct fault_trigger *t, struct fault_state *s,
                                 struct stash *st, u64 cg, u64 sk, struct flow_key *fk, u32 seq)
{
    u64 now = bpf_ktime_get_ns();
    u64 pt = bpf_get_current_pid_tgid();
    u32 tid = (u32)pt;
    s->until_ns = t->param_ns ? now + t->param_ns : 0;
    s->send_ts = st->ts;
    s->sk = sk;
    s->pid = pt >> 32;
    s->tid = tid;
    s->seq = seq;
    if (t->action == FA_DROP_MSG) {
        drop_tids.update(&tid, &slot);
        st->fdrop = 1;
    } else if (t->action == FA_CUT || t->action == FA_RESET) {
        struct flow_rule r = {.fault = slot, .action = t->action == FA_CUT ? RULE_DROP : RULE_RST,
                              .rst_seq = seq};
        flow_rules.update(fk, &r);
    } else if (t->action == FA_KILL) {
        dead_cgroups.update(&cg, &slot);
        if (bpf_send_signal(L_SIGKILL) == 0)
            __sync_fetch_and_add(&s->signals, 1);
        st->fsuppress = 1;
    } else if (t->action == FA_STOP) {
        if (bpf_send_signal(L_SIGSTOP) == 0)
            __sync_fetch_and_add(&s->signals, 1);
    }
    s->fired_ns = now;  /* last: the slot's rules are live from here on */
    emit_fault(slot, t, s, cg);
}

/* A killed node's other tasks die at their next socket call, which is not
 * recorded (the signal is delivered when the call returns: at entry the call
 * still takes place, as it does when this runs at exit). 1: killed. */
static __always_inline int fault_kill_dead(u64 cg)
{
    if (!faults_armed() || !dead_cgroups.lookup(&cg))
        return 0;
    bpf_send_signal(L_SIGKILL);
    return 1;
}

/* At every traced socket syscall's entry (after the stash is filled), and
 * with may_fire 0 at the record of a send that no entry program sees
 * (sendfile, splice, send_other: their bytes have left by then). Such a
 * send still counts towards the triggers it matches, as it counts as a
 * message in the trace (ldfi/trace/ids.py), so that the kernel's nth and
 * the trace's ordinals stay the same; it never fires one (the run's report
 * says the fault did not fire). */
static __always_inline void fault_enter(struct stash *st, u64 cg, u64 sk, u16 sys,
                                        const int may_fire)
{
    st->fhits = 0;
    st->fsuppress = 0;
    st->fdrop = 0;
    if (!faults_armed())
        return;
    if (fault_kill_dead(cg)) {
        st->fsuppress = 1;
        return;
    }
    if (sys != SYS_WRITE && sys != SYS_WRITEV && sys != SYS_SENDTO && sys != SYS_SENDMSG
        && sys != SYS_SENDMMSG && sys != SYS_SENDFILE && sys != SYS_SPLICE
        && sys != SYS_SEND_OTHER)
        return;
    u8 skc[SKC_SPAN];
    if (bpf_probe_read_kernel(skc, sizeof(skc), (void *)sk) != 0)
        return;
    u16 proto = 0;
    bpf_probe_read_kernel(&proto, 2, (void *)(sk + OFF_SK_PROTOCOL));
    struct flow_key fk = {.proto = proto};
    /* Faults act on IPv4 only (the classifier parses IPv4). Any other send
     * has no addresses for a peer or channel filter to match, but still
     * counts towards the node-wide triggers it matches, as the trace counts
     * it, and never fires one. */
    int ipv4 = *(u16 *)(skc + OFF_SK_FAMILY) == L_AF_INET;
    if (ipv4) {
        __builtin_memcpy(&fk.saddr, skc + OFF_SK_RCV_SADDR, 4);
        __builtin_memcpy(&fk.daddr, skc + OFF_SK_DADDR, 4);
        fk.sport = *(u16 *)(skc + OFF_SK_NUM);
        fk.dport = __builtin_bswap16(*(u16 *)(skc + OFF_SK_DPORT));
    }
    if (ipv4 && st->sa_len && *(u16 *)st->sa == L_AF_INET) {
        /* an unconnected UDP send: the destination is the argument */
        __builtin_memcpy(&fk.daddr, st->sa + 4, 4);
        fk.dport = __builtin_bswap16(*(u16 *)(st->sa + 2));
    }
    u32 seq = 0;
    if (proto == L_IPPROTO_TCP)
        bpf_probe_read_kernel(&seq, 4, (void *)(sk + OFF_TCP_WRITE_SEQ));
    /* every fact a trigger may test, computed once and up front: lazily
     * computed facts multiply the states the verifier has to walk */
    struct chan_val ch = {};
    int have_chan = ipv4 && send_channel(sk, cg, &fk, &ch);
    u8 pre[PREFIX_MAX] = {};
    send_prefix(pre, st, sys);
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < MAX_FAULTS; i++) {
        u32 slot = i;
        struct fault_trigger *t = triggers.lookup(&slot);
        if (!t || !t->cgroup || t->cgroup != cg)
            continue;
        if ((t->proto && t->proto != proto) || (t->peer_ip && t->peer_ip != fk.daddr))
            continue;
        if (t->has_channel && (!have_chan || ch.chan != t->channel
                               || (t->opener_cgroup && ch.opener != t->opener_cgroup)))
            continue;
        if (t->prefix_len && !prefix_eq(pre, t))
            continue;
        st->fhits |= 1 << i;  /* counted at exit if the send succeeds */
        if (!may_fire || !ipv4)
            continue;
        struct fault_state *s = fault_states.lookup(&slot);
        if (!s || s->fired_ns || s->matched != t->nth)
            continue;
        fire(slot, t, s, st, cg, sk, &fk, seq);
    }
}

/* At the matching sys_exit; returns 1 when the call must not be recorded. */
static __always_inline int fault_exit(struct stash *st, s64 ret)
{
    if (st->fdrop) {
        u32 tid = (u32)bpf_get_current_pid_tgid();
        drop_tids.delete(&tid);
    }
    if (st->fhits && ret > 0) {
#pragma clang loop unroll(disable)
        for (u32 i = 0; i < MAX_FAULTS; i++) {
            if (!(st->fhits & (1 << i)))
                continue;
            u32 slot = i;
            struct fault_state *s = fault_states.lookup(&slot);
            /* a sendmmsg is as many messages as it sent, in the trace too */
            if (s)
                __sync_fetch_and_add(&s->matched, st->sys == SYS_SENDMMSG ? ret : 1);
        }
    }
    return st->fsuppress;
}

/* ------------------------------------------------------------- data plane */

static __always_inline struct fault_state *active(u32 slot, u64 now)
{
    struct fault_state *s = fault_states.lookup(&slot);
    if (!s || !s->fired_ns || now < s->fired_ns)
        return 0;
    if (s->until_ns && now >= s->until_ns)
        return 0;
    return s;
}

static __always_inline int pair_drops(u32 saddr, u32 daddr, u64 now)
{
    struct pair_key k = {.saddr = saddr, .daddr = daddr};
    u32 *slot = pair_rules.lookup(&k);
    if (!slot) {
        k.daddr = 0;                  /* everything from saddr (a killed node) */
        slot = pair_rules.lookup(&k);
    }
    if (!slot) {
        k.saddr = 0;                  /* everything to daddr */
        k.daddr = daddr;
        slot = pair_rules.lookup(&k);
    }
    if (!slot)
        return 0;
    struct fault_state *s = active(*slot, now);
    if (!s)
        return 0;
    __sync_fetch_and_add(&s->dropped, 1);
    return 1;
}

/* TCP: make this segment a RST (keeping its sequence number, so the peer
 * accepts it when it is the next one expected). */
static __always_inline int to_rst(struct __sk_buff *skb, u32 th_off, struct fault_state *s)
{
    u16 word = 0;  /* data offset + flags, network order */
    if (bpf_skb_load_bytes(skb, th_off + 12, &word, 2) < 0)
        return TC_ACT_OK;
    u16 rst = word;
    ((u8 *)&rst)[1] = TH_RST | TH_ACK;
    if (bpf_l4_csum_replace(skb, th_off + 16, word, rst, 2) < 0)
        return TC_ACT_SHOT;
    if (bpf_skb_store_bytes(skb, th_off + 12, &rst, 2, 0) < 0)
        return TC_ACT_SHOT;
    __sync_fetch_and_add(&s->reset, 1);
    return TC_ACT_OK;
}

/* clsact egress of every endpoint of the run (nodes and client). */
int fault_tc(struct __sk_buff *skb)
{
    if (!faults_armed() || skb->protocol != bpf_htons(0x0800))
        return TC_ACT_OK;
    u8 ip[20];
    if (bpf_skb_load_bytes(skb, 14, ip, 20) < 0)
        return TC_ACT_OK;
    u32 saddr = *(u32 *)(ip + 12), daddr = *(u32 *)(ip + 16);
    u64 now = bpf_ktime_get_ns();
    if (pair_drops(saddr, daddr, now))
        return TC_ACT_SHOT;
    u8 proto = ip[9];
    if (proto != L_IPPROTO_TCP && proto != L_IPPROTO_UDP)
        return TC_ACT_OK;
    if (proto == L_IPPROTO_UDP) {
        /* a datagram leaves in its sender's context: drop exactly that send's */
        u32 tid = (u32)bpf_get_current_pid_tgid();
        u32 *slot = drop_tids.lookup(&tid);
        struct fault_state *s = slot ? active(*slot, now) : 0;
        if (s) {
            __sync_fetch_and_add(&s->dropped, 1);
            return TC_ACT_SHOT;
        }
    }
    u32 l4 = 14 + (ip[0] & 0xf) * 4;
    u16 ports[2] = {};
    if (bpf_skb_load_bytes(skb, l4, ports, 4) < 0)
        return TC_ACT_OK;
    struct flow_key fk = {.saddr = saddr, .daddr = daddr, .sport = bpf_ntohs(ports[0]),
                          .dport = bpf_ntohs(ports[1]), .proto = proto};
    struct flow_rule *r = flow_rules.lookup(&fk);
    if (!r && proto == L_IPPROTO_UDP) {
        fk.sport = 0;
        r = flow_rules.lookup(&fk);
    }
    if (!r)
        return TC_ACT_OK;
    struct fault_state *s = active(r->fault, now);
    if (!s)
        return TC_ACT_OK;
    if (r->action == RULE_DROP) {
        __sync_fetch_and_add(&s->dropped, 1);
        return TC_ACT_SHOT;
    }
    /* RULE_RST: the first packet that carries the anchored bytes or anything
     * after them, once: later packets then reach a peer without the
     * connection, which answers with its own RST and so resets this side */
    u8 th[14] = {};
    if (bpf_skb_load_bytes(skb, l4, th, 14) < 0)
        return TC_ACT_OK;
    u32 seq = bpf_ntohl(*(u32 *)(th + 4));
    u32 hdrs = l4 + (th[12] >> 4) * 4;
    u32 len = skb->len > hdrs ? skb->len - hdrs : 0;
    if ((s32)(seq + len - r->rst_seq) <= 0 && !(th[13] & TH_FIN))
        return TC_ACT_OK;
    flow_rules.delete(&fk);
    return to_rst(skb, l4, s);
}
