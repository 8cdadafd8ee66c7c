/* The tiny programs `ldfi doctor` loads to find out what this kernel really
 * does. All of them live in this one file so bcc compiles once (clang is the
 * slow part); tracer/probes.py then loads and attaches them one at a time.
 *
 * Naming: bcc attaches functions named tracepoint__*, kprobe__*, kfunc__* and
 * lsm__* by itself at compile time. The tracepoint and kprobe programs here are
 * named otherwise so that each probe attaches its own program and sees its own
 * error; bcc still generates the tracepoint argument structs from the
 * parameter type. kfunc__/lsm__ names cannot be avoided (bcc finds the BTF id
 * to attach to from the name), so user space turns bcc's autoload off.
 *
 * Every program filters on a tgid or port that user space writes into
 * `config`, so other processes on the machine never change a result. */
#include <uapi/linux/bpf.h>
#include <uapi/linux/in.h>
#include <uapi/linux/pkt_cls.h>
#include "probes.h"

#define SIGKILL 9

BPF_ARRAY(config, u32, CFG_MAX);
BPF_ARRAY(hits, u64, HIT_MAX);

static __always_inline u32 config_get(u32 slot)
{
    u32 *value = config.lookup(&slot);
    return value ? *value : 0;
}

static __always_inline void hit(u32 slot)
{
    u64 *count = hits.lookup(&slot);
    if (count)
        __sync_fetch_and_add(count, 1);
}

static __always_inline int is_self(void)
{
    return (u32)(bpf_get_current_pid_tgid() >> 32) == config_get(CFG_SELF_TGID);
}

/* syscalls:sys_enter_getppid: the tracer's bread and butter is a syscall
 * tracepoint, so count ours to show it fires for a known pid. */
int count_syscall(struct tracepoint__syscalls__sys_enter_getppid *args)
{
    if (is_self())
        hit(HIT_SYSCALL);
    return 0;
}

/* sock:inet_sock_set_state: how the tracer learns TCP connections open and
 * close. Ports in this tracepoint are in host byte order. */
int sock_state(struct tracepoint__sock__inet_sock_set_state *args)
{
    u16 port = config_get(CFG_TCP_PORT);
    if (args->protocol == IPPROTO_TCP && port != 0 &&
        (args->sport == port || args->dport == port))
        hit(HIT_SOCK);
    return 0;
}

/* sock:sock_send_length / sock_recv_length (raw tracepoints: sk, ret,
 * flags): where the tracer records read/write/send on sockets. */
int sock_send(struct bpf_raw_tracepoint_args *ctx)
{
    if (is_self())
        hit(HIT_SOCK_SEND);
    return 0;
}

int sock_recv(struct bpf_raw_tracepoint_args *ctx)
{
    if (is_self())
        hit(HIT_SOCK_RECV);
    return 0;
}


/* syscalls:sys_enter_sched_yield: crash faults kill a node at an exact event
 * with bpf_send_signal; only the victim child's tgid is ever signalled. */
int kill_victim(struct tracepoint__syscalls__sys_enter_sched_yield *args)
{
    u32 victim = config_get(CFG_VICTIM_TGID);
    if (victim == 0 || (u32)(bpf_get_current_pid_tgid() >> 32) != victim)
        return 0;
    if (bpf_send_signal(SIGKILL) == 0)
        hit(HIT_SIGNAL);
    return 0;
}

/* tc clsact egress, direct action: drop everything on the doctor's throwaway
 * veth, the same mechanism network faults use to cut a flow. */
int tc_drop(struct __sk_buff *skb)
{
    hit(HIT_TC_DROP);
    return TC_ACT_SHOT;
}

/* cgroup_skb egress: returning 0 drops, and the sender sees EPERM. */
int cgroup_drop(struct __sk_buff *skb)
{
    hit(HIT_CGROUP_DROP);
    return 0;
}

/* cgroup socket hooks, linked to the cgroup v2 root: where the tracer sees
 * socket() and the last close (sock_create, sock_release, CGROUP_SOCK) and
 * takes a UDP receive's source address (UDP4_RECVMSG, CGROUP_SOCK_ADDR).
 * They count the doctor's own calls; recvmsg only datagrams from the port
 * user space wrote. The tracer's hooks also need the current task as a BTF
 * pointer (for its task-local stash); task storage itself has its own row.
 * 1: the call goes on. */
int sock_create(struct bpf_sock *ctx)
{
    if (is_self() && ctx->protocol == IPPROTO_UDP)
        hit(HIT_SOCK_CREATE);
    return 1;
}

int sock_release(struct bpf_sock *ctx)
{
    if (is_self() && ctx->protocol == IPPROTO_UDP)
        hit(HIT_SOCK_RELEASE);
    return 1;
}

int udp_source(struct bpf_sock_addr *ctx)
{
    struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
    if (task && is_self() && ctx->user_port == bpf_htons(config_get(CFG_UDP_PORT)))
        hit(HIT_UDP_SOURCE);
    return 1;
}

/* Optional extras from here on: attached to the getppid syscall function so
 * the same trigger as count_syscall shows whether they fire. */
int on_kprobe(struct pt_regs *ctx)
{
    if (is_self())
        hit(HIT_KPROBE);
    return 0;
}

/* __do_sys_getppid is what the getppid syscall runs on every architecture
 * (the __x64_sys_ wrapper is not in this kernel's BTF, which fentry needs). */
KFUNC_PROBE(__do_sys_getppid)
{
    if (is_self())
        hit(HIT_FENTRY);
    return 0;
}

/* security_task_getsid runs on getsid(pid) for a non-zero pid. */
LSM_PROBE(task_getsid, void *task)
{
    if (is_self())
        hit(HIT_LSM);
    return 0;
}
