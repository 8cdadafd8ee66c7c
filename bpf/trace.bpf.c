/* bop-bpf tracer: socket system calls, process events and TCP
 * state changes of the tasks in selected cgroup v2 cgroups.
 *
 * Compiled by bcc. Kernel-internal structs are NEVER accessed through the
 * (6.1) headers bcc compiles with: every field is read with LD() at an
 * offset taken from the running kernel's BTF (tracer/btf.py, passed as
 * -DOFF_...=N), from an address given its kernel type by CAST() (see there:
 * typed loads, or bpf_probe_read_kernel() without KFUNC_CAST). Do not write
 * `task->files` etc.: bcc would silently rewrite it with the wrong (header)
 * layout.
 *
 * Cost matters here: these programs run at every socket system call of
 * the traced processes. On the project's VM a helper
 * call costs 20-80 ns (retpolines, SRSO safe-RET), so the hot path avoids
 * them where it can: typed loads instead of bpf_probe_read_kernel, the
 * cgroup id read from the task, one task-storage lookup per program.
 * docs/performance.md has the measurements.
 *
 * Other compile-time parameters: PAYLOAD_N, RING_SLOTS, NR_RINGS, SELF_TGID,
 * ANCESTOR_LEVEL (0 = exact cgroup match only), MMSG_MAX, DROP_EAGAIN,
 * KFUNC_CAST and the BTF ids it needs (BTF_FUNC_RDONLY_CAST, BTF_T_*).
 */
#include <uapi/linux/ptrace.h>
#include "trace.h"

#ifndef RING_SLOTS
#define RING_SLOTS 32768             /* per CPU: 7 MiB of 224-byte slots */
#endif
#ifndef MMSG_MAX
#define MMSG_MAX 8
#endif
#ifndef ANCESTOR_LEVEL
#define ANCESTOR_LEVEL 0
#endif
#ifndef DROP_EAGAIN
#define DROP_EAGAIN 0
#endif

#define L_AF_INET 2
#define L_AF_INET6 10
#define L_IPPROTO_TCP 6
#define L_IPPROTO_UDP 17
#define L_SOCK_STREAM 1
#define L_S_IFMT 0170000
#define L_S_IFSOCK 0140000
#define L_TCP_CLOSE 7
#define L_EAGAIN 11

_Static_assert(sizeof(struct ev_sock) == ((EV_SOCK_SIZE_BASE + PAYLOAD_N + 7) & ~7), "ev_sock layout");
_Static_assert(sizeof(struct ev_proc) == EV_PROC_SIZE, "ev_proc layout");
_Static_assert(sizeof(struct ev_tcpstate) == EV_TCPSTATE_SIZE, "ev_tcpstate layout");
/* Every record goes into a slot of one size, that of the largest record
 * (ev_sock): see the rings below. */
#define RECORD_SIZE sizeof(struct ev_sock)
_Static_assert(sizeof(struct ev_proc) <= RECORD_SIZE, "ev_proc fits a record");
_Static_assert(sizeof(struct ev_tcpstate) <= RECORD_SIZE, "ev_tcpstate fits a record");

/* a call's arguments, kept per thread: from sys_enter to sys_exit for the
 * sends of runs with send triggers, else filled where the call is recorded */
struct stash {
    u64 scope_cg;   /* the thread was in scope in this cgroup ... */
    u64 scope_gen;  /* ... at this scope generation (see scope_gen) */
    u64 ts;
    u64 cg;         /* cgroup id at entry (the record's) */
    u64 sk;
    u64 buf;        /* buf / iovec array / user_msghdr / mmsghdr array */
    u64 addr;       /* recvfrom: user sockaddr the kernel fills */
    u64 count;
    s32 fd;
    u16 sys;
    u16 sa_len;     /* bytes of sa[] valid (connect/sendto/sendmsg, read at entry) */
    u32 msg_flags;
    u8  sa[32];     /* sockaddr_in6 is 28 bytes */
    u64 mmsg_vec;   /* the mmsghdr array of the sendmmsg/recvmmsg whose message ... */
    u32 mmsg_next;  /* ... this was the index of, if the thread's last record was one */
    u32 mmsg_vlen;
    s32 mmsg_fd;
    u16 mmsg_sys;   /* SYS_SENDMMSG/SYS_RECVMMSG: this record is one message of it */
    u16 mmsg_idx;
    u64 src_sk;     /* src[] is the source of the datagram this sock just gave ... */
    u8  src[32];    /* ... as a sockaddr: see the UDP receive hooks below */
    u16 fhits;      /* fault triggers this send matched (faults.bpf.c) */
    u8  fsuppress;  /* a fault killed the caller: do not record the call */
    u8  fdrop;      /* a fault is dropping this call's datagram */
    /* No payload here: a send's bytes are read at exit, straight into the
     * record. Copying them into this hash map value on every entry cost
     * more than the read itself. */
};

/* where gather_iov assembles a vector send's payload at exit */
struct gather {
    u8 d[2 * PAYLOAD_N + 1];  /* room for gather_iov's last copy (see there) */
};

/* Records go to one ring of fixed-size slots per CPU (NR_RINGS: the
 * possible CPUs), in an mmapable array that user space reads in place
 * (tracer/ringbuf.py). Why not BPF_MAP_TYPE_RINGBUF: its reserve and submit
 * (a spinlock taken with interrupts off, two helper calls behind
 * retpolines) cost ~25 ns more per record here than claiming a slot with
 * one compare-and-swap and committing it with one store: a send's program
 * went from ~215 to ~185 ns (bpf_stats, docs/performance.md).
 *
 * A slot is a u64 `seq` and one record. The record claimed at ring
 * position `pos` (head, counted from 0 since load) is committed when its
 * slot's seq reads its lap, pos / RING_SLOTS + 1: a slot being written
 * holds that with SEQ_PENDING set, a slot of the previous lap one less, and
 * the reader stops at the first slot that is not committed. (The lap, not
 * the position: a run of committed slots then reads one repeated value,
 * which the reader checks at C speed.) The head only
 * moves while it is less than RING_SLOTS ahead of the tail (the reader's
 * position, which only the reader writes), so a slot is never reused
 * before it is read. Claims are atomic, so a program interrupted on its CPU
 * by another of ours (softirq, preemption) just takes the next slot. */
#define SLOT_SIZE (RECORD_SIZE + 8)
#define SEQ_PENDING (1ULL << 63)
#define L_BPF_F_MMAPABLE 1024
struct slot {
    u64 seq;
    u64 rec[(EV_SOCK_SIZE_BASE + PAYLOAD_N + 7) / 8];  /* RECORD_SIZE: bcc garbles a sizeof() here */
};
struct ring_ctl {   /* head and tail on cache lines of their own */
    u64 head;       /* next position to claim: written by the programs */
    u64 notified;   /* tail + 1 when the reader was last woken (ring_marks) */
    u64 _head_line[6];
    u64 tail;       /* first position not yet read: written by the reader */
    u64 _tail_line[7];
};
BPF_F_TABLE("array", u32, struct slot, slots, NR_RINGS * RING_SLOTS, L_BPF_F_MMAPABLE);
BPF_F_TABLE("array", u32, struct ring_ctl, ring_ctl, NR_RINGS, L_BPF_F_MMAPABLE);
_Static_assert(sizeof(struct slot) == SLOT_SIZE, "slot layout");
_Static_assert((RING_SLOTS & (RING_SLOTS - 1)) == 0, "RING_SLOTS is a power of two");
/* tries at claiming a slot before the record counts as lost: a claim fails
 * only when another program of ours on this CPU claimed one in between */
#define CLAIM_TRIES 4
/* The reader sleeps until a ring holds MARK_SLOTS records (its mark, set by
 * tracer/program.py ring_mark): a claim that finds the ring at or past it sends the
 * ring's CPU into ring_marks, a BPF ring buffer whose epoll wakes the reader.
 * Once per tail position (ring_ctl.notified): a ring the reader has not
 * drained yet sends nothing more, and a stale tail (read before a drain)
 * can only make a notification early, never lose one. Its reserve's
 * spinlock is paid once per drain, not per record. Timed looks instead (every
 * 5 ms, as often as the fastest filling ring needed) cost the reader ~40 us
 * of CPU each: docs/performance.md, "Seventh session". */
BPF_RINGBUF_OUTPUT(ring_marks, 1);
BPF_HASH(cgroups, u64, u32, 1024);            /* traced cgroup v2 ids */
/* User space bumps scope_gen[0] after each change of `cgroups`. A thread's
 * stash remembers that it was in scope (its cgroup, this generation), so its
 * next socket calls skip the `cgroups` lookup (~25 ns). */
BPF_ARRAY(scope_gen, u64, 1);
BPF_ARRAY(scope_bits, u64, 1);  /* see maybe_in_scope */
/* Entry arguments live in task-local storage: no hashing, no bucket lock,
 * and freed with the task (a hash keyed by tid cost ~200 ns per update). */
BPF_TASK_STORAGE(stash, struct stash);
BPF_PERCPU_ARRAY(gathering, struct gather, 1);
BPF_PERCPU_ARRAY(counters, u64, CNT_N);
BPF_TABLE("lru_hash", u64, u64, known_socks, 65536); /* TCP sock* -> cgroup, for softirq state changes */
BPF_HASH(listen_ports, u64, u64, 4096);       /* netns<<16 | port -> cgroup */

static __always_inline void cnt_inc(u32 idx)
{
    u64 *c = counters.lookup(&idx);
    if (c)
        (*c)++;
}

/* Room for one record of up to RECORD_SIZE bytes (every slot has that room)
 * in this CPU's ring, or NULL (the ring is full: counted as lost). Every
 * record reserved must be submitted: the reader waits at a claimed slot
 * until it is, and unlike a BPF ring buffer's, the verifier does not check
 * that it will be. */
static __always_inline void *reserve_record(u64 size)
{
    u32 cpu = bpf_get_smp_processor_id();
    struct ring_ctl *ctl = ring_ctl.lookup(&cpu);
    if (!ctl || cpu >= NR_RINGS)
        goto lost;
    u64 pos = 0, tail = 0;
    int claimed = 0;
#pragma unroll
    for (int i = 0; i < CLAIM_TRIES; i++) {
        /* the tail first: read after it, the head is never behind it (a
         * nested program may claim and the reader take its slot between
         * the two loads) */
        tail = *(volatile u64 *)&ctl->tail;
        u64 head = *(volatile u64 *)&ctl->head;
        if (head - tail >= RING_SLOTS)
            break;
        if (__sync_val_compare_and_swap(&ctl->head, head, head + 1) == head) {
            pos = head;
            claimed = 1;
            break;
        }
    }
    if (!claimed)
        goto lost;
    if (pos + 1 - tail >= MARK_SLOTS) {
        u64 seen = *(volatile u64 *)&ctl->notified;
        if (seen != tail + 1 && __sync_val_compare_and_swap(&ctl->notified, seen, tail + 1) == seen
            && ring_marks.ringbuf_output(&cpu, sizeof(cpu), 0) != 0)
            /* not sent (its spinlock can fail since 6.15): the next claim tries again */
            __sync_val_compare_and_swap(&ctl->notified, tail + 1, seen);
    }
    u32 idx = cpu * RING_SLOTS + (u32)(pos & (RING_SLOTS - 1));
    struct slot *slot = slots.lookup(&idx);
    if (!slot)
        goto lost;  /* cannot happen: idx < NR_RINGS * RING_SLOTS */
    slot->seq = (pos / RING_SLOTS + 1) | SEQ_PENDING;
    return slot->rec;
lost:
    cnt_inc(CNT_LOST_RINGBUF);
    return 0;
}

static __always_inline void submit_record(void *e)
{
    cnt_inc(CNT_EMITTED);
    u64 *seq = (u64 *)((u8 *)e - 8);
    u64 committed = *seq & ~SEQ_PENDING;
    /* the record's stores first: x86 keeps stores in order, clang must too
     * (another architecture would need a release store here and an acquire
     * load in the reader) */
    asm volatile("" ::: "memory");
    *(volatile u64 *)seq = committed;
}

/* Kernel memory access. With KFUNC_CAST (the default where the kernel has
 * the bpf_rdonly_cast kfunc: 6.2+), kernel pointers are BTF-typed and fields
 * are read with plain loads, which the verifier turns into exception-safe
 * loads (BPF_PROBE_MEM): a few ns each instead of a ~30 ns helper call (on
 * this host every call and return pays for retpolines and the SRSO safe-RET
 * mitigation). A pointer member loaded from a typed pointer is typed too
 * (task->files, sk->skc_net); CAST gives its kernel type back to an address
 * that lost it (a void * or pointer-array member, a sock kept as a number in
 * a map): bpf_rdonly_cast is turned by the verifier into a register move, it
 * costs nothing. Without KFUNC_CAST (older kernels: tracer/program.py falls
 * back when the typed programs do not load), every LD is a
 * bpf_probe_read_kernel and CAST does nothing. */
#if KFUNC_CAST
/* bcc cannot declare a kfunc: this "helper" number is the kfunc's BTF id,
 * and tracer/program.py marks the call as a kfunc call before loading */
static void *(*bpf_rdonly_cast)(void *obj, u32 btf_id) = (void *)BTF_FUNC_RDONLY_CAST;
#define CAST(p, T) ((u64)bpf_rdonly_cast((void *)(u64)(p), BTF_T_##T))
#define LD(type, p, off) (*(type *)((u64)(p) + (off)))
#else
#define CAST(p, T) ((u64)(p))
#define LD(type, p, off) ({ type __v = 0; \
    bpf_probe_read_kernel(&__v, sizeof(__v), (void *)((u64)(p) + (off))); __v; })
#endif
/* a typed (trusted) task pointer: task storage needs one, LD may read it */
#define CURRENT_TASK() ((u64)bpf_get_current_task_btf())

/* bpf_get_current_cgroup_id(), as loads: task->cgroups->dfl_cgrp->kn->id */
static __always_inline u64 task_cgroup_id(u64 task)
{
#if KFUNC_CAST
    u64 cset = LD(u64, task, OFF_TASK_CGROUPS);
    if (!cset)
        return 0;
    u64 cgrp = LD(u64, cset, OFF_CSS_SET_DFL_CGRP);
    if (!cgrp)
        return 0;
    u64 kn = LD(u64, cgrp, OFF_CGROUP_KN);
    if (!kn)
        return 0;
    return LD(u64, kn, OFF_KERNFS_NODE_ID);
#else
    return bpf_get_current_cgroup_id();
#endif
}

/* Might cgroup `id` be traced? Bit (id & 63) of scope_bits[0] is set for
 * every traced cgroup id (tracer/program.py _scope), so the tasks of the rest
 * of the host are turned away with one inlined array load, before the task
 * storage and hash lookups: an out-of-scope send's or receive's program went
 * from 61-71 to 51-63 ns (bpf_stats; what every socket call on the host pays
 * while a tracer is loaded). With ANCESTOR_LEVEL the id that matches may be an
 * ancestor's: no early answer then. */
static __always_inline int maybe_in_scope(u64 id)
{
#if ANCESTOR_LEVEL > 0
    return 1;
#else
    u32 zero = 0;
    u64 *bits = scope_bits.lookup(&zero);
    return bits && ((*bits >> (id & 63)) & 1);
#endif
}

/* Is cgroup `id` (the current task's), which maybe_in_scope let through, traced? */
static __always_inline int in_scope(u64 id)
{
    if (!cgroups.lookup(&id)) {
#if ANCESTOR_LEVEL > 0
        u64 anc = bpf_get_current_ancestor_cgroup_id(ANCESTOR_LEVEL);
        if (!cgroups.lookup(&anc))
            return 0;
#else
        return 0;
#endif
    }
    return 1;
}

/* Is this (current) task in a traced cgroup? */
static __always_inline int traced_task(u64 task, u64 *cg)
{
    if (LD(u32, task, OFF_TASK_TGID) == SELF_TGID)
        return 0;
    u64 id = task_cgroup_id(task);
    if (!maybe_in_scope(id) || !in_scope(id))
        return 0;
    *cg = id;
    return 1;
}

static __always_inline int traced(u64 *cg)
{
    return traced_task(CURRENT_TASK(), cg);
}

/* Is `sk` (a typed pointer) an IPv4/IPv6 TCP or UDP sock: one we trace? */
static __always_inline int tcp_or_udp(u64 sk)
{
    u16 fam = LD(u16, sk, OFF_SK_FAMILY);
    if (fam != L_AF_INET && fam != L_AF_INET6)
        return 0;
    u16 proto = LD(u16, sk, OFF_SK_PROTOCOL);
    return proto == L_IPPROTO_TCP || proto == L_IPPROTO_UDP;
}

/* fd -> struct sock *, or 0 if fd is not an AF_INET/AF_INET6 TCP/UDP socket.
 * task->files->fdt->fd[fd] (struct file *) ->f_inode->i_mode must be
 * S_IFSOCK; then file->private_data is the struct socket, ->sk the sock. */
static __always_inline u64 fd_to_sk(u64 task, u64 fd)
{
    u64 files = LD(u64, task, OFF_TASK_FILES);
    if (!files)
        return 0;
    u64 fdt = LD(u64, files, OFF_FILES_FDT);
    if (!fdt)
        return 0;
    u32 max_fds = LD(u32, fdt, OFF_FDT_MAX_FDS);
    if (fd >= max_fds)
        return 0;
    u64 fdarr = LD(u64, fdt, OFF_FDT_FD);
    u64 file = CAST(LD(u64, fdarr, fd * 8), FILE);
    if (!file)
        return 0;
    u64 inode = LD(u64, file, OFF_FILE_INODE);
    if (!inode)
        return 0;
    u16 mode = LD(u16, inode, OFF_INODE_MODE);
    if ((mode & L_S_IFMT) != L_S_IFSOCK)
        return 0;
    u64 sock = CAST(LD(u64, file, OFF_FILE_PRIVATE), SOCKET);
    if (!sock)
        return 0;
    u64 sk = LD(u64, sock, OFF_SOCKET_SK);
    return sk && tcp_or_udp(sk) ? sk : 0;
}

static __always_inline u32 sk_netns(u64 sk)
{
    u64 net = LD(u64, sk, OFF_SK_NET);
    if (!net)
        return 0;
    return LD(u32, net, OFF_NET_INUM);
}

static __always_inline void fill_hdr_task(struct ev_hdr *h, u32 kind, u64 cg, u64 task)
{
    h->ts = bpf_ktime_get_ns();
    h->kind = kind;
    h->pid = LD(u32, task, OFF_TASK_TGID);
    h->tid = LD(u32, task, OFF_TASK_PID);
    h->netns = 0;
    h->cgroup = cg;
#if KFUNC_CAST
    *(u64 *)h->comm = LD(u64, task, OFF_TASK_COMM);
    *(u64 *)(h->comm + 8) = LD(u64, task, OFF_TASK_COMM + 8);
#else
    bpf_get_current_comm(h->comm, sizeof(h->comm));
#endif
}

static __always_inline void fill_hdr(struct ev_hdr *h, u32 kind, u64 cg)
{
    fill_hdr_task(h, kind, cg, CURRENT_TASK());
}

/* endpoints, family, protocol, state, netns, TCP sequence numbers */
static __always_inline void fill_sock(struct ev_sock *e, u64 sk_addr)
{
    e->sk = sk_addr;
    e->family = 0; e->proto = 0; e->sotype = 0; e->lport = 0; e->rport = 0;
    e->rfamily = 0; e->state = 0; e->seq_w = 0; e->seq_r = 0;
    __builtin_memset(e->laddr, 0, 16);
    __builtin_memset(e->raddr, 0, 16);
    if (!sk_addr)
        return;
    u64 sk = CAST(sk_addr, SOCK);
#if KFUNC_CAST
#define SKC(type, off) LD(type, sk, off)
#else
    /* helper reads: the address fields of sock_common in one read */
    u8 skc[SKC_SPAN];
    if (bpf_probe_read_kernel(skc, sizeof(skc), (void *)sk) != 0)
        return;
#define SKC(type, off) (*(type *)(skc + (off)))
#endif
    u16 fam = SKC(u16, OFF_SK_FAMILY);
    e->family = fam;
    e->rfamily = fam;
    e->state = SKC(u8, OFF_SK_STATE);
    e->lport = SKC(u16, OFF_SK_NUM);                         /* host order */
    if (!e->lport) {
        /* a TCP sock that reached CLOSE is unhashed: inet_put_port() zeroes
         * skc_num, but inet_sock.inet_sport (network order) keeps the port */
        e->lport = __builtin_bswap16(LD(u16, CAST(sk_addr, INET_SOCK), OFF_INET_SPORT));
    }
    e->rport = __builtin_bswap16(SKC(u16, OFF_SK_DPORT));    /* network order */
    if (fam == L_AF_INET6) {
        *(u64 *)e->laddr = SKC(u64, OFF_SK_V6_RCV_SADDR);
        *(u64 *)(e->laddr + 8) = SKC(u64, OFF_SK_V6_RCV_SADDR + 8);
        *(u64 *)e->raddr = SKC(u64, OFF_SK_V6_DADDR);
        *(u64 *)(e->raddr + 8) = SKC(u64, OFF_SK_V6_DADDR + 8);
    } else {
        *(u32 *)e->laddr = SKC(u32, OFF_SK_RCV_SADDR);
        *(u32 *)e->raddr = SKC(u32, OFF_SK_DADDR);
    }
#undef SKC
    e->h.netns = sk_netns(sk);
    u16 proto = LD(u16, sk, OFF_SK_PROTOCOL);
    e->proto = proto;
    e->sotype = LD(u16, sk, OFF_SK_TYPE);
    if (proto == L_IPPROTO_TCP) {
        u64 tp = CAST(sk_addr, TCP_SOCK);
        e->seq_w = LD(u32, tp, OFF_TCP_WRITE_SEQ);
        e->seq_r = LD(u32, tp, OFF_TCP_COPIED_SEQ);
        e->flags |= F_SEQ;
    }
}

/* sockaddr bytes (sa_family first) -> remote endpoint */
static __always_inline void sa_to_remote(struct ev_sock *e, u8 *sa)
{
    u16 fam = *(u16 *)sa;
    if (fam == L_AF_INET) {
        e->rfamily = fam;
        e->rport = __builtin_bswap16(*(u16 *)(sa + 2));
        __builtin_memset(e->raddr, 0, 16);
        __builtin_memcpy(e->raddr, sa + 4, 4);
        e->flags |= F_RADDR_ARG;
    } else if (fam == L_AF_INET6) {
        e->rfamily = fam;
        e->rport = __builtin_bswap16(*(u16 *)(sa + 2));
        __builtin_memcpy(e->raddr, sa + 8, 16);
        e->flags |= F_RADDR_ARG;
    }
}

/* read a user sockaddr (family first, then as much as that family needs) */
static __always_inline int read_user_sa(u8 *sa, u64 uaddr, u64 maxlen)
{
    if (!uaddr || maxlen < 2)
        return 0;
    __builtin_memset(sa, 0, 32);
    if (bpf_probe_read_user(sa, 2, (void *)uaddr) != 0)
        return 0;
    u16 fam = *(u16 *)sa;
    if (fam == L_AF_INET && maxlen >= 16) {
        bpf_probe_read_user(sa, 16, (void *)uaddr);
        return 16;
    }
    if (fam == L_AF_INET6 && maxlen >= 24) {
        bpf_probe_read_user(sa, 24, (void *)uaddr);
        return 24;
    }
    return 0;
}

/* Payloads up to this size are read into the stack, then copied into the
 * record. bpf_probe_read_user's hardened-usercopy check of its destination
 * is a few compares for a stack address, but a virt_addr_valid() walk for
 * the ring buffer's vmalloc'ed pages: ~60 ns per record here. */
#ifndef STACK_COPY_MAX
#define STACK_COPY_MAX 128
#endif

/* copy min(len, PAYLOAD_N) user bytes; returns bytes copied, sets *err */
static __always_inline u32 read_payload(u8 *dst, u64 src, u64 len, u8 *err)
{
#if PAYLOAD_N > 0
    if ((s64)len <= 0 || !src)
        return 0;
    if (len > PAYLOAD_N)
        len = PAYLOAD_N;
#if PAYLOAD_N <= STACK_COPY_MAX
    u8 buf[PAYLOAD_N];
    if (bpf_probe_read_user(buf, len, (void *)src) != 0) {
        *err = 1;
        return 0;
    }
    __builtin_memcpy(dst, buf, PAYLOAD_N);  /* bytes past len: never read (cap) */
#else
    if (bpf_probe_read_user(dst, len, (void *)src) != 0) {
        *err = 1;
        return 0;
    }
#endif
    return len;
#else
    return 0;
#endif
}

/* The first PAYLOAD_N bytes of a vector send, gathered over up to IOV_GATHER
 * iovecs (a datagram sent as header + body must not look like its header
 * alone). dst has 2 * PAYLOAD_N bytes: each copy starts below PAYLOAD_N and
 * is at most PAYLOAD_N long, which is what the verifier can check. */
#ifndef IOV_GATHER
#define IOV_GATHER 4
#endif
static __always_inline u32 gather_iov(u8 *dst, u64 vec, u64 nvec, u8 *err)
{
    u64 off = 0;  /* 64-bit: a u32 gets zero-extended copies the verifier cannot relate */
#if PAYLOAD_N > 0
#pragma unroll
    for (int i = 0; i < IOV_GATHER; i++) {
        if (i >= nvec || off >= PAYLOAD_N)
            break;
        u64 iov[2] = {};
        if (bpf_probe_read_user(iov, 16, (void *)(vec + i * 16)) != 0)
            break;
        u64 n = iov[1];
        if (n > PAYLOAD_N)
            n = PAYLOAD_N;
        if (n == 0 || !iov[0])
            continue;
        u64 at = off;
        /* hide `at`'s relation to `off` from clang, so that the bound check
         * below stays on the register the verifier tracks */
        asm volatile("" : "+r"(at));
        asm volatile("" : "+r"(n));
        if (at >= PAYLOAD_N || n > PAYLOAD_N)
            break;
        if (bpf_probe_read_user(dst + at, n, (void *)iov[0]) != 0) {
            *err = 1;
            break;
        }
        off += n;
    }
    if (off > PAYLOAD_N)
        off = PAYLOAD_N;
#endif
    return off;
}

/* A send's first bytes, read at exit from the caller's buffer (unchanged by
 * the call), cut to what was sent. */
static __always_inline u32 send_payload(struct ev_sock *e, struct stash *st, u16 sys, s64 ret,
                                        u8 *err)
{
#if PAYLOAD_N > 0
    if (sys == SYS_WRITE || sys == SYS_SENDTO)
        return read_payload(e->data, st->buf, ret, err);
    u64 vec = st->buf, nvec = st->count;
    if (sys == SYS_SENDMSG) {
        u64 mh[4] = {};  /* msg_name, msg_namelen, msg_iov, msg_iovlen */
        if (bpf_probe_read_user(mh, 32, (void *)st->buf) != 0)
            return 0;
        vec = mh[2];
        nvec = mh[3];
    }
    u32 zero = 0;
    struct gather *g = gathering.lookup(&zero);
    if (!g)
        return 0;
    u32 cap = gather_iov(g->d, vec, nvec, err);
    if (cap > ret)
        cap = ret;
    if (cap > PAYLOAD_N)
        cap = PAYLOAD_N;
    bpf_probe_read_kernel(e->data, PAYLOAD_N, g->d);
    return cap;
#else
    return 0;
#endif
}

#include "faults.bpf.c"

/* ------------------------------------------------------------------ entry */

#define MODE_NONE    0
#define MODE_BUF     1  /* payload = buf[0..count) (write, sendto) */
#define MODE_IOV     2  /* payload = first iovec of buf (writev) */
#define MODE_MSG     3  /* buf is a user_msghdr: first iovec + msg_name (sendmsg) */
#define MODE_MMSG    4  /* buf is an mmsghdr array: the first's msg_name, for fault
                           triggers (sendmmsg at entry); count stays vlen */

/* The thread's stash if the thread is traced (in scope), else NULL. */
static __always_inline struct stash *scoped_stash(u64 task)
{
    if (LD(u32, task, OFF_TASK_TGID) == SELF_TGID)
        return 0;
    u64 cg = task_cgroup_id(task);
    if (!maybe_in_scope(cg))
        return 0;
    u32 zero = 0;
    u64 *genp = scope_gen.lookup(&zero);
    u64 gen = genp ? *genp : 0;  /* read before `cgroups`: a verdict never outlives its generation */
    struct stash *st = stash.task_storage_get((struct task_struct *)task, 0, 0);
    if (!st || st->scope_cg != cg || st->scope_gen != gen) {
        if (!in_scope(cg))
            return 0;
        if (!st)
            st = stash.task_storage_get((struct task_struct *)task, 0,
                                        BPF_LOCAL_STORAGE_GET_F_CREATE);
        if (!st) {
            cnt_inc(CNT_LOST_STASH);
            return 0;
        }
        st->scope_cg = cg;
        st->scope_gen = gen;
    }
    st->cg = cg;
    return st;
}

/* The call's arguments into the stash; 0 when the call is not recorded (its
 * fd is not a TCP/UDP socket). */
/* The call in the thread's stash, for the record its exit (or its socket
 * layer event) writes. */
static __always_inline void keep_call(struct stash *st, u64 sk, u16 sys, s64 fd, u64 buf,
                                      u64 count, u64 uaddr, u32 msg_flags)
{
    st->sk = sk;
    st->buf = buf;
    st->addr = uaddr;
    st->count = count;
    st->fd = fd;
    st->sys = sys;
    st->msg_flags = msg_flags;
    st->sa_len = 0;
}

static __always_inline int stash_args(struct stash *st, u64 task, u16 sys, s64 fd, u64 buf,
                                      u64 count, u64 uaddr, u64 addrlen, u32 msg_flags, int mode)
{
    if (fd < 0)
        return 0;
    u64 sk = fd_to_sk(task, fd);
    if (!sk)
        return 0;
    keep_call(st, sk, sys, fd, buf, count, uaddr, msg_flags);
    if (mode == MODE_BUF) {
        if (uaddr)  /* sendto's destination: user memory, read at entry */
            st->sa_len = read_user_sa(st->sa, uaddr, addrlen);
    } else if (mode == MODE_MSG || mode == MODE_MMSG) {
        u64 mh[4] = {};  /* msg_name, msg_namelen, msg_iov, msg_iovlen */
        if (bpf_probe_read_user(mh, 32, (void *)buf) == 0) {
            if (mode == MODE_MSG)
                st->count = mh[3];
            if (mh[0])
                st->sa_len = read_user_sa(st->sa, mh[0], (u32)mh[1]);
        }
    }
    return 1;
}

static __always_inline int enter(u16 sys, s64 fd, u64 buf, u64 count, u64 uaddr,
                                 u64 addrlen, u32 msg_flags, int mode)
{
    u64 task = CURRENT_TASK();
    struct stash *st = scoped_stash(task);
    if (!st || !stash_args(st, task, sys, fd, buf, count, uaddr, addrlen, msg_flags, mode))
        return 0;
    st->ts = bpf_ktime_get_ns();
    if (st->sk)
        fault_enter(st, st->cg, st->sk, sys, 1);
    else
        st->fhits = st->fsuppress = st->fdrop = 0;
    return 0;
}

/* ------------------------------------------------------------------- exit */

static __always_inline void fill_common(struct ev_sock *e, struct stash *st, s64 ret, u64 cg,
                                        u64 task)
{
    fill_hdr_task(&e->h, EV_SOCK, cg, task);
    e->ts_enter = st->ts ? st->ts : e->h.ts;  /* st->ts 0: recorded at exit only */
    e->ret = ret;
    e->count = st->count;
    e->fd = st->fd;
    e->sys = st->sys;
    e->flags = st->ts ? 0 : F_NO_ENTRY;
    e->msg_flags = st->msg_flags;
    e->msg_idx = 0;
    e->cap = 0;
}

/* one message of sendmmsg/recvmmsg: struct mmsghdr { struct user_msghdr
 * msg_hdr (56 B); u32 msg_len; } = 64 B. msg_len is filled by the kernel
 * for both directions. */
static __always_inline int emit_mmsg_one(struct stash *st, s64 ret, u64 cg, u64 task,
                                         const u32 i)
{
    u64 m[8] = {};
    if (bpf_probe_read_user(m, 64, (void *)(st->buf + i * 64)) != 0)
        return -1;
    struct ev_sock *e = reserve_record(RECORD_SIZE);
    if (!e)
        return 0;
    fill_common(e, st, (u32)m[7], cg, task);
    e->count = ret;
    e->msg_idx = i;
    fill_sock(e, st->sk);
    e->flags |= F_MMSG;
    u8 err = 0;
    u64 iov[2] = {};
    if (m[3] > 0 && bpf_probe_read_user(iov, 16, (void *)m[2]) == 0) {
        u64 n = (u32)m[7];
        if (iov[1] < n)
            n = iov[1];
        /* sendmmsg: payload read at exit (the buffer is the caller's, unchanged) */
        e->cap = read_payload(e->data, iov[0], n, &err);
    }
    if (err) {
        e->flags |= F_PAYLOAD_ERR;
        cnt_inc(CNT_PAYLOAD_ERR);
    }
    if (m[0] && e->proto == L_IPPROTO_UDP) {
        u8 sa[32];
        if (read_user_sa(sa, m[0], (u32)m[1]))
            sa_to_remote(e, sa);
    }
    submit_record(e);
    return 0;
}

/* Unrolled by hand: as a loop, clang turns the bound into an equality test
 * against min(ret, MMSG_MAX)*64 and the verifier cannot bound it ("The
 * sequence of 8193 jumps is too complex"); #pragma unroll did not help. */
#define MMSG_STEP(i) if (ret > i && MMSG_MAX > i && emit_mmsg_one(st, ret, cg, task, i) < 0) return;
static __always_inline void emit_mmsg(struct stash *st, s64 ret, u64 cg, u64 task)
{
    MMSG_STEP(0) MMSG_STEP(1) MMSG_STEP(2) MMSG_STEP(3)
    MMSG_STEP(4) MMSG_STEP(5) MMSG_STEP(6) MMSG_STEP(7)
    if (ret > MMSG_MAX) {
        /* the rest of the batch is not recorded: say so, the trace is incomplete */
        u32 idx = CNT_LOST_MMSG;
        u64 *c = counters.lookup(&idx);
        if (c)
            *c += ret - MMSG_MAX;
    }
}

/* `sys` is a constant at every call site: clang drops the branches of the
 * other system calls, so each exit program only holds its own path (one
 * generic program with the mmsg loop inlined made the verifier give up:
 * "The sequence of 8193 jumps is too complex"). */
static __always_inline int exit_stash(struct stash *st, u64 task, s64 ret, const u16 sys)
{
    u64 cg = st->cg;
    if (st->sys != sys)
        goto out;  /* stale entry (tracer attached mid-syscall) */
    if (fault_exit(st, ret))
        goto out;  /* killed by a fault before this call took effect */
#if DROP_EAGAIN
    if (ret == -L_EAGAIN)
        goto out;
#endif
    if (sys == SYS_SENDMMSG) {  /* at its exit: a run with send triggers */
        if (ret > 0) {
            emit_mmsg(st, ret, cg, task);
            goto out;
        }
    }
    u64 sk = st->sk;
    struct ev_sock *e = reserve_record(RECORD_SIZE);
    if (!e)
        goto out;
    fill_common(e, st, ret, cg, task);
    fill_sock(e, sk);
    if (st->mmsg_sys) {  /* one message of an mmsg call, recorded as its sendmsg/recvmsg */
        e->sys = st->mmsg_sys;
        e->msg_idx = st->mmsg_idx;
        e->flags |= F_MMSG;
    }
    u8 err = 0;
    if (sys == SYS_WRITE || sys == SYS_SENDTO || sys == SYS_WRITEV || sys == SYS_SENDMSG) {
        if (ret > 0)
            e->cap = send_payload(e, st, sys, ret, &err);
        if (st->sa_len && e->proto == L_IPPROTO_UDP)
            sa_to_remote(e, st->sa);
    } else if (ret > 0 && (sys == SYS_READ || sys == SYS_RECVFROM)) {
        e->cap = read_payload(e->data, st->buf, ret, &err);
    } else if (ret > 0 && sys == SYS_READV) {
        u64 iov[2] = {};
        if (bpf_probe_read_user(iov, 16, (void *)st->buf) == 0) {
            u64 n = ret < iov[1] ? ret : iov[1];
            e->cap = read_payload(e->data, iov[0], n, &err);
        }
    } else if (ret >= 0 && sys == SYS_RECVMSG) {
        u64 mh[4] = {};
        if (bpf_probe_read_user(mh, 32, (void *)st->buf) == 0) {
            u64 iov[2] = {};
            e->count = mh[3];
            if (ret > 0 && mh[3] > 0 && bpf_probe_read_user(iov, 16, (void *)mh[2]) == 0) {
                u64 n = ret < iov[1] ? ret : iov[1];
                e->cap = read_payload(e->data, iov[0], n, &err);
            }
        }
    }
    /* see keep_udp_source; a recvfrom without an address runs no hook, so
     * any source kept then is another call's */
    if ((sys == SYS_RECVMSG || (sys == SYS_RECVFROM && st->addr)) && st->src_sk == sk
        && ret >= 0 && e->proto == L_IPPROTO_UDP)
        sa_to_remote(e, st->src);
    if (err) {
        e->flags |= F_PAYLOAD_ERR;
        cnt_inc(CNT_PAYLOAD_ERR);
    }
    if (st->mmsg_sys)
        e->count = st->mmsg_vlen;
    submit_record(e);
out:
    st->sys = 0;  /* consumed */
    st->mmsg_sys = 0;
    st->mmsg_vec = 0;  /* the next record is no later message of that call */
    st->src_sk = 0;  /* a source no record took (recvmmsg's) must not reach the next */
    return 0;
}

static __always_inline int do_exit_ev(s64 ret, const u16 sys)
{
    u64 task = CURRENT_TASK();
    struct stash *st = stash.task_storage_get((struct task_struct *)task, 0, 0);
    if (!st || !st->sys)
        return 0;  /* no entry recorded for this call */
    return exit_stash(st, task, ret, sys);
}

/* ------------------------------------------------------ syscall tracepoints */

/* Only the sends of runs that arm send triggers have syscall tracepoint
 * programs (below). Every other call is recorded without one: its data in
 * the socket layer ("socket-layer data path"), its life cycle where cgroup
 * hooks and TCP state changes see it ("socket life cycle"), its arguments
 * from the task's saved user registers, and its ts_enter is its own time
 * (F_NO_ENTRY). */
#define REG(regs, n) LD(u64, regs, OFF_REGS_ARG##n)
#define USER_REGS() ((u64)bpf_task_pt_regs((struct task_struct *)task))

/* The call's record, from the arguments stash_args() just kept. */
static __always_inline int record_without_entry(struct stash *st, u64 task, s64 ret,
                                                const u16 sys, const int count_faults)
{
    st->ts = 0;
    if (count_faults && st->sk) {
        fault_enter(st, st->cg, st->sk, sys, 0);  /* counts, never fires */
    } else {
        st->fhits = st->fdrop = 0;
        st->fsuppress = st->sk ? fault_kill_dead(st->cg) : 0;
    }
    return exit_stash(st, task, ret, sys);
}

/* Sends' entry and exit programs: attached only for runs that arm send
 * triggers (tracer/program.py, send_syscalls). A trigger must act before the
 * data leaves, and the engine finds the send a fault hit by its entry time.
 * Such a send is recorded at its exit from what the entry kept; the socket
 * layer's program leaves it alone. */
TRACEPOINT_PROBE(syscalls, sys_enter_write) {
    return enter(SYS_WRITE, args->fd, (u64)args->buf, args->count, 0, 0, 0, MODE_BUF);
}
TRACEPOINT_PROBE(syscalls, sys_exit_write) { return do_exit_ev(args->ret, SYS_WRITE); }

TRACEPOINT_PROBE(syscalls, sys_enter_writev) {
    return enter(SYS_WRITEV, args->fd, (u64)args->vec, args->vlen, 0, 0, 0, MODE_IOV);
}
TRACEPOINT_PROBE(syscalls, sys_exit_writev) { return do_exit_ev(args->ret, SYS_WRITEV); }

TRACEPOINT_PROBE(syscalls, sys_enter_sendto) {
    return enter(SYS_SENDTO, args->fd, (u64)args->buff, args->len, (u64)args->addr,
                 args->addr_len, args->flags, MODE_BUF);
}
TRACEPOINT_PROBE(syscalls, sys_exit_sendto) { return do_exit_ev(args->ret, SYS_SENDTO); }

TRACEPOINT_PROBE(syscalls, sys_enter_sendmsg) {
    return enter(SYS_SENDMSG, args->fd, (u64)args->msg, 0, 0, 0, args->flags, MODE_MSG);
}
TRACEPOINT_PROBE(syscalls, sys_exit_sendmsg) { return do_exit_ev(args->ret, SYS_SENDMSG); }

TRACEPOINT_PROBE(syscalls, sys_enter_sendmmsg) {
    return enter(SYS_SENDMMSG, args->fd, (u64)args->mmsg, args->vlen, 0, 0, args->flags,
                 MODE_MMSG);
}
TRACEPOINT_PROBE(syscalls, sys_exit_sendmmsg) { return do_exit_ev(args->ret, SYS_SENDMMSG); }

/* ------------------------------------------------ socket-layer data path */

/* read, readv, recvfrom, recvmsg, recvmmsg, write, writev, sendto, sendmsg
 * and sendmmsg are recorded where the socket layer reports what they
 * moved: the raw tracepoints
 * sock:sock_recv_length and sock:sock_send_length (sk, ret, flags), which
 * fire in the calling task at the end of sock_recvmsg()/sock_sendmsg(), on
 * sockets only. Entering a raw tracepoint program costs a few tens of ns;
 * a syscall tracepoint's perf path cost ~200 ns per call here, and read()
 * and write() hit it for pipes and files too (docs/performance.md). Which
 * system call it is, and its arguments, come from the task's saved user
 * registers (orig_ax: the x86_64 number). sendfile and splice to a socket
 * are recorded without payload (their bytes come from a file or a pipe).
 * Any other call that moves bytes through a traced task's socket (io_uring,
 * an ia32 call, whose numbers name none of the x86_64 ones) is recorded as
 * send_other/recv_other, with what the socket layer tells: the sock, the
 * bytes and, on TCP, the sequence numbers, so that the byte ranges of a
 * connection stay whole; its fd is unknown (-1).
 *
 * A UDP datagram's source address reaches the caller's memory only after
 * sock_recvmsg() returns; the cgroup hooks below ("UDP receive sources")
 * hand it over. The messages of sendmmsg/recvmmsg pass here one by one,
 * without their index: see mmsg_io. What the socket layer does not see is
 * not recorded: a read() of 0 bytes (it returns before reaching the
 * socket) and a call that fails before it (a bad buffer address). */
#define NR_READ    0
#define NR_WRITE   1
#define NR_READV   19
#define NR_WRITEV  20
#define NR_SENDTO  44
#define NR_RECVFROM 45
#define NR_SENDMSG 46
#define NR_RECVMSG 47
#define NR_RECVMMSG 299
#define NR_SENDMMSG 307
#define NR_SENDFILE 40
#define NR_SPLICE   275

/* A socket of the task's own (it has a file), not one the kernel uses on
 * its own behalf in the task's context (NFS, ...): what stash_sock may take
 * when no fd names the sock. */
static __always_inline int user_sock(u64 sk_addr)
{
    u64 sk = CAST(sk_addr, SOCK);
    if (!tcp_or_udp(sk))
        return 0;
    u64 sock = CAST(LD(u64, sk, OFF_SOCK_SOCKET), SOCKET);
    return sock && LD(u64, sock, OFF_SOCKET_FILE) != 0;
}

/* The stash of a call that names no fd we can read (SYS_SEND_OTHER,
 * SYS_RECV_OTHER): the sock alone; count holds the call's number. */
static __always_inline int stash_sock(struct stash *st, u64 sk, u16 sys, u64 count,
                                      u32 msg_flags)
{
    if (!user_sock(sk))
        return 0;
    keep_call(st, sk, sys, -1, 0, count, 0, msg_flags);
    return 1;
}

/* A send or receive the socket layer reported on `sk`, recorded as call
 * `sys` on `fd` if the fd names that sock. 1 if it did (recorded), 0 if
 * not: the caller then records it at its one other_io() site. Each call
 * site inlines a whole record, and the program's stack is 512 bytes. */
static __always_inline int sock_io(struct stash *st, u64 task, u64 sk, s64 ret, const u16 sys,
                                   s64 fd, u64 buf, u64 count, u64 uaddr, u64 addrlen,
                                   u32 msg_flags, const int mode)
{
    if (fd < 0 || !stash_args(st, task, sys, fd, buf, count, uaddr, addrlen, msg_flags, mode)
        || st->sk != sk)
        return 0;
    record_without_entry(st, task, ret, sys, 0);
    return 1;
}

/* The I/O of a call recorded from its sock, without its buffer (no
 * payload): sendfile and splice on `fd`, and I/O that no call's fd names
 * as its own. io_uring runs requests inline in io_uring_enter, as task work
 * on the way out of whatever call the task was in (see in_own_call), or in
 * an io-wq worker thread; an ia32 call's number names no x86_64 one. Such
 * I/O is recorded as send_other/recv_other (fd -1, count = `nr`: orig_ax,
 * the call the task is in or returns from, -1 after an interrupt) if the
 * sock is a task's own (user_sock: not one the kernel uses on its own
 * behalf, NFS ...), so that a connection's byte ranges stay whole. A send
 * counts towards the fault triggers it matches, and never fires one. */
static __always_inline int other_io(struct stash *st, u64 task, u64 sk, s64 ret, u16 sys, s64 fd,
                                    u64 count, u32 msg_flags, u64 nr, const int sending)
{
    if (fd < 0 || !stash_args(st, task, sys, fd, 0, count, 0, 0, msg_flags, MODE_NONE)
        || st->sk != sk) {
        sys = sending ? SYS_SEND_OTHER : SYS_RECV_OTHER;
        if (!stash_sock(st, sk, sys, nr, msg_flags)) {
            /* no record takes these: they must not reach the next */
            st->sys = 0;
            st->src_sk = 0;
            st->mmsg_sys = 0;
            st->mmsg_vec = 0;
            return 0;
        }
        st->mmsg_sys = 0;
    }
    record_without_entry(st, task, ret, sys, sending);
    return 0;
}

/* One message of a sendmmsg/recvmmsg, recorded like the sendmsg/recvmsg
 * (`as`) of its mmsghdr. The socket layer does not say which message it
 * is: it is the one after the thread's previous record if that was a
 * message of a call on the same fd and mmsghdr array, with fewer than vlen
 * messages so far and no failure (a failed message ends the call), else
 * the first. Two calls in a row with the same arguments, the first ending
 * early without a failure (a recvmmsg timeout), would be numbered as one.
 * 0 if the fd does not name the sock (see sock_io). */
static __always_inline int mmsg_io(struct stash *st, u64 task, u64 sk, s64 ret, const u16 call,
                                   const u16 as, s64 fd, u64 vec, u32 vlen, u32 msg_flags,
                                   const int mode)
{
    u32 idx = 0;
    if (st->mmsg_vec == vec && st->mmsg_fd == fd && st->mmsg_next < vlen && st->sk == sk)
        idx = st->mmsg_next;
    if (ret < 0 && idx > 0) {
        /* the message that ended the call (EAGAIN after MSG_WAITFORONE, ...):
         * the call returned the ones before it, and so does the trace */
        st->mmsg_vec = 0;
        return 1;
    }
    st->mmsg_sys = call;
    st->mmsg_idx = idx;
    st->mmsg_vlen = vlen;
    if (!sock_io(st, task, sk, ret, as, fd, vec + (u64)(idx & 0xffff) * 64, 0, 0, 0, msg_flags,
                 mode))
        return 0;
    st->mmsg_vec = ret >= 0 ? vec : 0;  /* after exit_stash, which clears it */
    st->mmsg_fd = fd;
    st->mmsg_next = idx + 1;
    return 1;
}

#define L_ENOSYS 38
#define L_PF_IO_WORKER 0x10

/* Are the saved user registers those of the call doing this I/O? Only
 * inside the call: the entry code sets ax to -ENOSYS and the call's return
 * value replaces it, so task work on the way out (io_uring runs requests
 * there) finds the return value. An io-wq worker thread's registers are a
 * copy of its creator's, frozen when it was made. */
static __always_inline int in_own_call(u64 task, u64 regs)
{
    return (s64)LD(u64, regs, OFF_REGS_AX) == -L_ENOSYS
        && !(LD(u32, task, OFF_TASK_FLAGS) & L_PF_IO_WORKER);
}

/* declares task, regs, nr, sk, ret; st once the call is known to be one of ours */
#define SOCK_IO_PROLOGUE \
    u64 task = CURRENT_TASK(); \
    u64 regs = USER_REGS(); \
    u64 nr = LD(u64, regs, OFF_REGS_ORIG_AX); \
    u64 sk = ctx->args[0]; \
    s64 ret = (s32)ctx->args[1]

#define SOCK_IO(sys, buf, count, uaddr, addrlen, msg_flags, mode) \
    sock_io(st, task, sk, ret, sys, (s32)REG(regs, 0), buf, count, uaddr, addrlen, msg_flags, mode)

/* A send whose entry program ran (a run with send triggers) is recorded at
 * its exit. I/O on another sock while that entry's stash is taken could
 * only be recorded by losing the call's own record, so it is counted as
 * lost (task work runs after the exit program: not expected to happen). */
#define SEND_IO(call, buf, count, uaddr, addrlen, msg_flags, mode) \
    (st->sys == call ? entry_taken(st, sk) \
                     : SOCK_IO(call, buf, count, uaddr, addrlen, msg_flags, mode))

static __always_inline int entry_taken(struct stash *st, u64 sk)
{
    if (st->sk != sk)
        cnt_inc(CNT_LOST_STASH);
    return 1;
}

RAW_TRACEPOINT_PROBE(sock_recv_length) {
    SOCK_IO_PROLOGUE;
    struct stash *st = scoped_stash(task);
    if (!st)
        return 0;
    int own = in_own_call(task, regs);  /* after the scope check: the host's calls skip it */
    if (!own) {
        /* I/O the call did not do itself: see other_io */
    } else if (nr == NR_READ) {
        if (SOCK_IO(SYS_READ, REG(regs, 1), REG(regs, 2), 0, 0, 0, MODE_NONE))
            return 0;
    } else if (nr == NR_READV) {
        if (SOCK_IO(SYS_READV, REG(regs, 1), REG(regs, 2), 0, 0, 0, MODE_NONE))
            return 0;
    } else if (nr == NR_RECVFROM) {
        if (SOCK_IO(SYS_RECVFROM, REG(regs, 1), REG(regs, 2), REG(regs, 4), 0, (u32)REG(regs, 3),
                    MODE_NONE))
            return 0;
    } else if (nr == NR_RECVMSG) {
        if (SOCK_IO(SYS_RECVMSG, REG(regs, 1), 0, 0, 0, (u32)REG(regs, 2), MODE_NONE))
            return 0;
    } else if (nr == NR_RECVMMSG) {
        if (mmsg_io(st, task, sk, ret, SYS_RECVMMSG, SYS_RECVMSG, (s32)REG(regs, 0), REG(regs, 1),
                    (u32)REG(regs, 2), (u32)REG(regs, 3), MODE_NONE))
            return 0;
    }
    return other_io(st, task, sk, ret, SYS_RECV_OTHER, -1, nr, (u32)ctx->args[2], nr, 0);
}

/* ------------------------------------------------- UDP receive sources */

/* A datagram's source reaches the caller's memory only after
 * sock_recvmsg() returns, that is after sock_recv_length has fired, and no
 * syscall exit program is attached to read it there (see "socket-layer
 * data path"). udp_recvmsg() hands it to the cgroup UDP4/UDP6_RECVMSG
 * hooks just before, in the receiving task, whenever the kernel has an
 * address buffer for it: in recvmsg always, in recvfrom when the caller
 * passed an address, in read() never. These programs, linked to the
 * cgroup v2 root by tracer/program.py (so they run for every such receive
 * on the host, and return at once outside the scope), keep it in the
 * task's stash, tagged with the sock, for the receive's record. */
/* a sock_addr hook's address as the 32 sockaddr bytes sa_to_remote() reads */
static __always_inline void ctx_sockaddr(u8 *sa, struct bpf_sock_addr *ctx, const u16 family)
{
    __builtin_memset(sa, 0, 32);
    *(u16 *)sa = family;
    *(u16 *)(sa + 2) = (u16)ctx->user_port;  /* network order, like sockaddr's */
    if (family == L_AF_INET) {
        *(u32 *)(sa + 4) = ctx->user_ip4;
    } else {
        *(u32 *)(sa + 8) = ctx->user_ip6[0];
        *(u32 *)(sa + 12) = ctx->user_ip6[1];
        *(u32 *)(sa + 16) = ctx->user_ip6[2];
        *(u32 *)(sa + 20) = ctx->user_ip6[3];
    }
}

static __always_inline int keep_udp_source(struct bpf_sock_addr *ctx, const u16 family)
{
    u64 task = CURRENT_TASK();
    struct stash *st = scoped_stash(task);
    if (!st)
        return 1;
    ctx_sockaddr(st->src, ctx, family);
    st->src_sk = (u64)ctx->sk;
    return 1;  /* the receive goes on unchanged */
}

int cgroup_udp4_recvmsg(struct bpf_sock_addr *ctx) { return keep_udp_source(ctx, L_AF_INET); }
int cgroup_udp6_recvmsg(struct bpf_sock_addr *ctx) { return keep_udp_source(ctx, L_AF_INET6); }

RAW_TRACEPOINT_PROBE(sock_send_length) {
    SOCK_IO_PROLOGUE;
    struct stash *st = scoped_stash(task);
    if (!st)
        return 0;
    int own = in_own_call(task, regs);  /* after the scope check: the host's calls skip it */
    if (!own) {
        /* I/O the call did not do itself: see other_io */
    } else if (nr == NR_WRITE) {
        if (SEND_IO(SYS_WRITE, REG(regs, 1), REG(regs, 2), 0, 0, 0, MODE_BUF))
            return 0;
    } else if (nr == NR_WRITEV) {
        if (SEND_IO(SYS_WRITEV, REG(regs, 1), REG(regs, 2), 0, 0, 0, MODE_IOV))
            return 0;
    } else if (nr == NR_SENDTO) {
        if (SEND_IO(SYS_SENDTO, REG(regs, 1), REG(regs, 2), REG(regs, 4), (s32)REG(regs, 5),
                    (u32)REG(regs, 3), MODE_BUF))
            return 0;
    } else if (nr == NR_SENDMSG) {
        if (SEND_IO(SYS_SENDMSG, REG(regs, 1), 0, 0, 0, (u32)REG(regs, 2), MODE_MSG))
            return 0;
    } else if (nr == NR_SENDMMSG) {
        if (st->sys == SYS_SENDMMSG) {  /* its entry program ran (send triggers) */
            entry_taken(st, sk);  /* recorded at its exit */
            return 0;
        }
        if (mmsg_io(st, task, sk, ret, SYS_SENDMMSG, SYS_SENDMSG, (s32)REG(regs, 0), REG(regs, 1),
                    (u32)REG(regs, 2), (u32)REG(regs, 3), MODE_MSG))
            return 0;
    }
    /* sendfile(out_fd, in_fd, offset, count) and splice(in, off, out, off,
     * len, flags) name the socket's fd; any other call, or one whose fd
     * names another file: see other_io */
    u16 sys = SYS_SEND_OTHER;
    s64 fd = -1;
    u64 count = nr;
    u32 flags = (u32)ctx->args[2];
    if (own && nr == NR_SENDFILE) {
        sys = SYS_SENDFILE, fd = (s32)REG(regs, 0), count = REG(regs, 3), flags = 0;
    } else if (own && nr == NR_SPLICE) {
        sys = SYS_SPLICE, fd = (s32)REG(regs, 2), count = REG(regs, 4), flags = 0;
    }
    return other_io(st, task, sk, ret, sys, fd, count, flags, nr, 1);
}

/* --------------------------------------------------- socket life cycle */

/* socket, bind, connect (UDP) and close are recorded where cgroup hooks
 * see them, listen, connect (TCP) and shutdown where the TCP state changes,
 * and nothing is attached to a syscall tracepoint for them: attaching any
 * syscall tracepoint puts every system call of every task on the host on
 * the slow path (docs/performance.md, "Sixth session"). The hooks run in
 * the calling task; which system call it is in, and its fd, come from the
 * saved user registers. What they cannot see is filled in after the run
 * (tracer/lifecycle.py): socket's fd (the new fd is installed after the
 * hook) and connect's local port (chosen after it), from the sock's later
 * records, and accept, which no hook sees at all, from the accepted sock's
 * first use. */
#define NR_CLOSE    3
#define NR_CONNECT  42
#define NR_SHUTDOWN 48
#define NR_BIND     49
#define NR_LISTEN   50
#define L_TCP_SYN_SENT 2
#define L_TCP_FIN_WAIT1 4
#define L_TCP_LAST_ACK 9
#define L_TCP_LISTEN 10

/* One life-cycle record of the current task on `sk`: its fd from the
 * registers when the task is in system call `nr`, else -1 (a close at
 * exit, say). */
static __always_inline void life_cycle(struct stash *st, u64 task, u64 sk, const u16 sys,
                                       const u64 nr, u64 count, u8 *sa)
{
    u64 cg = st->cg;
    if (faults_armed() && dead_cgroups.lookup(&cg))
        return;  /* a crashed node's: it dies at its next send or receive (no signal from here) */
    u64 regs = USER_REGS();
    /* a bind or connect run by io_uring (task work, a worker) is not the
     * call the registers name; a last close may come after its call
     * returned (a deferred fput), still with that call's fd */
    s64 fd = LD(u64, regs, OFF_REGS_ORIG_AX) == nr
             && (sys == SYS_CLOSE || in_own_call(task, regs)) ? (s32)REG(regs, 0) : -1;
    struct ev_sock *e = reserve_record(RECORD_SIZE);
    if (!e)
        return;
    st->mmsg_vec = 0;  /* the thread's last record is no mmsg message any more */
    fill_hdr_task(&e->h, EV_SOCK, st->cg, task);
    e->ts_enter = e->h.ts;
    e->ret = sys == SYS_SOCKET ? -1 : 0;  /* socket's fd: see lifecycle.py */
    e->count = count;
    e->fd = sys == SYS_SOCKET ? -1 : fd;
    e->sys = sys;
    e->flags = sys == SYS_CLOSE ? F_AT_ENTRY : F_NO_ENTRY;
    e->msg_flags = 0;
    e->msg_idx = 0;
    e->cap = 0;
    fill_sock(e, sk);
    if (sa)
        sa_to_remote(e, sa);
    if (e->proto == L_IPPROTO_TCP) {
        if (sys == SYS_SOCKET || sys == SYS_CONNECT)
            known_socks.update(&sk, &cg);  /* owner of this sock, for softirq state changes */
        if (sys == SYS_LISTEN) {
            u64 key = ((u64)e->h.netns << 16) | e->lport;
            listen_ports.update(&key, &cg);
        }
    }
    submit_record(e);
}

/* socket(), a successful bind (a failed one is not recorded) and the last
 * close of a TCP or UDP socket */
static __always_inline int sock_hook(struct bpf_sock *ctx, const u16 sys, const u64 nr)
{
    u32 proto = ctx->protocol;
    if (proto != L_IPPROTO_TCP && proto != L_IPPROTO_UDP)
        return 1;
    u64 task = CURRENT_TASK();
    struct stash *st = scoped_stash(task);
    if (st)
        life_cycle(st, task, (u64)ctx, sys, nr, sys == SYS_SOCKET ? ctx->type : 0, 0);
    return 1;  /* 1: the call goes on */
}

int cgroup_sock_create(struct bpf_sock *ctx) { return sock_hook(ctx, SYS_SOCKET, 0); }

int cgroup_post_bind4(struct bpf_sock *ctx) { return sock_hook(ctx, SYS_BIND, NR_BIND); }
int cgroup_post_bind6(struct bpf_sock *ctx) { return sock_hook(ctx, SYS_BIND, NR_BIND); }

/* before a UDP connect (TCP's are recorded at SYN_SENT, below): the
 * address it asks for */
static __always_inline int udp_connect(struct bpf_sock_addr *ctx, const u16 family)
{
    if (ctx->protocol != L_IPPROTO_UDP)
        return 1;
    u64 task = CURRENT_TASK();
    struct stash *st = scoped_stash(task);
    if (!st)
        return 1;
    u8 sa[32];
    ctx_sockaddr(sa, ctx, family);
    life_cycle(st, task, (u64)ctx->sk, SYS_CONNECT, NR_CONNECT, 0, sa);
    return 1;
}
int cgroup_connect4(struct bpf_sock_addr *ctx) { return udp_connect(ctx, L_AF_INET); }
int cgroup_connect6(struct bpf_sock_addr *ctx) { return udp_connect(ctx, L_AF_INET6); }

/* the last close of a socket (closing one of several fds of a socket
 * releases nothing, and is not recorded) */
int cgroup_sock_release(struct bpf_sock *ctx) { return sock_hook(ctx, SYS_CLOSE, NR_CLOSE); }

/* listen (CLOSE -> LISTEN), connect (CLOSE -> SYN_SENT) and shutdown of a
 * TCP sock, from its state change, when that runs inside the caller's
 * system call on the caller's own fd: on loopback the peer's changes run
 * there too (the server's SYN_RECV -> ESTABLISHED inside the client's
 * connect), and must not be taken for the caller's. A shutdown that
 * changes no state (SHUT_RD, or a second one) is not recorded. */
static __always_inline void state_change_call(u64 sk, int oldstate, int newstate)
{
    u64 task = CURRENT_TASK();
    u64 regs = USER_REGS();
    u64 nr = LD(u64, regs, OFF_REGS_ORIG_AX);
    u16 sys;
    if (nr == NR_LISTEN && newstate == L_TCP_LISTEN)
        sys = SYS_LISTEN;
    else if (nr == NR_CONNECT && oldstate == L_TCP_CLOSE && newstate == L_TCP_SYN_SENT)
        sys = SYS_CONNECT;
    else if (nr == NR_SHUTDOWN && (newstate == L_TCP_FIN_WAIT1 || newstate == L_TCP_LAST_ACK
                                   || (newstate == L_TCP_CLOSE && (oldstate == L_TCP_LISTEN
                                                                   || oldstate == L_TCP_SYN_SENT))))
        sys = SYS_SHUTDOWN;  /* the change shutdown makes, not the peer's ACK it then processes */
    else
        return;
    struct stash *st = scoped_stash(task);
    if (!st || fd_to_sk(task, (s32)REG(regs, 0)) != sk)
        return;
    /* count: listen's backlog, shutdown's how */
    life_cycle(st, task, sk, sys, nr, sys == SYS_CONNECT ? 0 : (s32)REG(regs, 1), 0);
}

/* ------------------------------------------------------- process events */

/* A process record with the header filled and every field zeroed, or NULL
 * (counted as lost) when the ring buffer is full. */
static __always_inline struct ev_proc *reserve_proc(u32 kind, u64 cg)
{
    struct ev_proc *e = reserve_record(RECORD_SIZE);
    if (!e)
        return 0;
    fill_hdr(&e->h, kind, cg);
    e->ppid = 0;
    e->child_pid = 0;
    e->child_tid = 0;
    e->exit_code = 0;
    e->flags = 0;
    e->_pad = 0;
    e->filename[0] = 0;
    return e;
}

RAW_TRACEPOINT_PROBE(sched_process_fork) {
    u64 cg;
    if (!traced(&cg))
        return 0;
    struct ev_proc *e = reserve_proc(EV_FORK, cg);
    if (!e)
        return 0;
    u64 parent = ctx->args[0], child = ctx->args[1];
    parent = CAST(parent, TASK);
    child = CAST(child, TASK);
    u32 ptgid = LD(u32, parent, OFF_TASK_TGID);
    u32 cpid = LD(u32, child, OFF_TASK_PID);
    u32 ctgid = LD(u32, child, OFF_TASK_TGID);
    e->ppid = ptgid;
    e->child_pid = ctgid;
    e->child_tid = cpid;
    e->flags = ctgid == ptgid;  /* CLONE_THREAD */
    submit_record(e);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exec) {
    u64 cg;
    if (!traced(&cg))
        return 0;
    struct ev_proc *e = reserve_proc(EV_EXEC, cg);
    if (!e)
        return 0;
    e->ppid = args->old_pid;
    u32 off = args->data_loc_filename & 0xFFFF;
    bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), (char *)args + off);
    submit_record(e);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit) {
    u64 cg;
    if (!traced(&cg))
        return 0;
    struct ev_proc *e = reserve_proc(EV_EXIT, cg);
    if (!e)
        return 0;
    e->exit_code = LD(s32, CURRENT_TASK(), OFF_TASK_EXIT_CODE);
    e->flags = args->group_dead;
    submit_record(e);
    return 0;
}

/* -------------------------------------------------- TCP state changes */
/* Often runs in softirq (SYN/SYN-ACK/FIN receipt). On loopback the softirq
 * runs in the context of the task that SENT the packet, which may be another
 * traced node: the current task's cgroup must not be trusted there, and a
 * tracepoint program cannot tell softirq from process context (the common_
 * fields of the record are not readable: direct access below offset 8 is
 * refused and bpf_probe_read of them returns garbage on the perf path). So
 * the owner of a sock is decided by (1) known_socks (filled at the socket()
 * and connect() of traced tasks), then (2) listen_ports (server-
 * side child socks, which exist before accept() returns them), and only
 * then (3) the current task's cgroup (socks older than the tracer). */
TRACEPOINT_PROBE(sock, inet_sock_set_state) {
    if (args->protocol != L_IPPROTO_TCP)
        return 0;
    u64 sk = (u64)args->skaddr;
    state_change_call(sk, args->oldstate, args->newstate);
    u64 cg = 0;
    u8 owner_by;
    u32 netns = sk_netns(CAST(sk, SOCK));
    u64 *kcg = known_socks.lookup(&sk);
    if (kcg) {
        cg = *kcg;
        owner_by = OWNER_KNOWN_SOCK;
    } else {
        u64 key = ((u64)netns << 16) | args->sport;
        u64 *lcg = listen_ports.lookup(&key);
        if (lcg) {
            cg = *lcg;
            owner_by = OWNER_LISTEN;
        } else if (traced(&cg)) {
            owner_by = OWNER_CURRENT;
        } else {
            return 0;
        }
        if (args->newstate != L_TCP_CLOSE)
            known_socks.update(&sk, &cg);
    }
    /* byte by byte: a memcpy from the context compiled into a call or a
     * modified-ctx dereference, both of which the verifier refuses */
    u32 saddr4 = args->saddr[0] | args->saddr[1] << 8 | args->saddr[2] << 16
                 | (u32)args->saddr[3] << 24;
    u32 daddr4 = args->daddr[0] | args->daddr[1] << 8 | args->daddr[2] << 16
                 | (u32)args->daddr[3] << 24;
    fault_tcp_state(sk, cg, args->oldstate, args->newstate, args->family, saddr4, daddr4,
                    args->sport, args->dport);
    struct ev_tcpstate *e = reserve_record(RECORD_SIZE);
    if (!e)
        return 0;
    e->h.ts = bpf_ktime_get_ns();
    e->h.kind = EV_TCPSTATE;
    e->h.pid = 0;
    e->h.tid = 0;
    e->h.netns = netns;
    e->h.cgroup = cg;
    __builtin_memset(e->h.comm, 0, 16);
    e->sk = sk;
    e->oldstate = args->oldstate;
    e->newstate = args->newstate;
    e->family = args->family;
    e->proto = args->protocol;
    e->lport = args->sport;
    e->rport = args->dport;
    if (args->family == L_AF_INET6) {
        __builtin_memcpy(e->laddr, args->saddr_v6, 16);
        __builtin_memcpy(e->raddr, args->daddr_v6, 16);
    } else {
        __builtin_memset(e->laddr, 0, 16);
        __builtin_memset(e->raddr, 0, 16);
        __builtin_memcpy(e->laddr, args->saddr, 4);
        __builtin_memcpy(e->raddr, args->daddr, 4);
    }
    e->owner_by = owner_by;
    e->sk_err = (u8)LD(s32, CAST(sk, SOCK), OFF_SOCK_ERR);
    __builtin_memset(e->_pad, 0, 6);
    if (args->newstate == L_TCP_CLOSE)
        known_socks.delete(&sk);
    submit_record(e);
    return 0;
}
