/* Record structs shared by trace.bpf.c (kernel side) and tracer/decode.py
 * (user side, which reads the #defines of this file). Every record starts
 * with struct ev_hdr, so the decoder dispatches on hdr.kind. Keep every field
 * naturally aligned and every struct a multiple of 8 bytes: decode.py's
 * struct formats mirror the layout and are checked against the *_SIZE
 * constants below at import.
 *
 * PAYLOAD_N (bytes of payload captured per socket event, 0 = off) and
 * TASK_COMM_LEN are compile-time constants passed by the loader.
 */
#ifndef LDFI_TRACE_H
#define LDFI_TRACE_H

#ifndef PAYLOAD_N
#define PAYLOAD_N 64
#endif

/* hdr.kind */
#define EV_SOCK   1   /* one socket system call (or one message of sendmmsg/recvmmsg) */
#define EV_FORK   2
#define EV_EXEC   3
#define EV_EXIT   4
#define EV_TCPSTATE 5 /* sock:inet_sock_set_state */

/* ev_sock.sys: our own ids, not syscall numbers (x86_64 has no send/recv
 * system calls: libc's send()/recv() are sendto/recvfrom) */
#define SYS_SOCKET    1
#define SYS_BIND      2
#define SYS_LISTEN    3
#define SYS_CONNECT   4
#define SYS_ACCEPT    5
#define SYS_ACCEPT4   6
#define SYS_READ      7
#define SYS_WRITE     8
#define SYS_READV     9
#define SYS_WRITEV    10
#define SYS_SENDTO    11
#define SYS_SENDMSG   12
#define SYS_SENDMMSG  13
#define SYS_RECVFROM  14
#define SYS_RECVMSG   15
#define SYS_RECVMMSG  16
#define SYS_SHUTDOWN  17
#define SYS_CLOSE     18
#define SYS_SENDFILE  19  /* sendfile to a socket (no payload: the bytes come from a file) */
#define SYS_SPLICE    20  /* splice from a pipe to a socket (no payload) */
#define SYS_SEND_OTHER 21 /* a send by any other call (io_uring, an ia32 call), or on a
                             sock the call's fd does not name (io_uring task work, io-wq
                             workers): fd -1, count = the call's number in orig_ax, no payload */
#define SYS_RECV_OTHER 22 /* a receive by any other call: likewise */

/* ev_sock.flags */
#define F_RADDR_ARG   0x01 /* remote endpoint taken from the sockaddr argument, not the sock */
#define F_AT_ENTRY    0x02 /* emitted before the call's end (close): ret is not known */
#define F_SEQ         0x04 /* seq_w/seq_r are valid (TCP) */
#define F_PAYLOAD_ERR 0x08 /* reading the user buffer failed (page not present?) */
#define F_MMSG        0x10 /* one message of sendmmsg/recvmmsg: ret = msg_len; count = vlen
                              (recorded at a send-trigger exit: messages returned) */
#define F_NO_ENTRY    0x20 /* no entry program saw the call: ts_enter is the record's own time */

struct ev_hdr {
    __u64 ts;        /* bpf_ktime_get_ns() (CLOCK_MONOTONIC) at emission */
    __u32 kind;      /* EV_* */
    __u32 pid;       /* tgid */
    __u32 tid;
    __u32 netns;     /* net namespace inode (socket's net; 0 if unknown) */
    __u64 cgroup;    /* cgroup v2 id of the current task */
    char  comm[16];
};                   /* 48 bytes */

struct ev_sock {
    struct ev_hdr h;
    __u64 ts_enter;  /* sys_enter time (sends while fault triggers are armed); ts for
                        calls recorded without it (F_NO_ENTRY) */
    __u64 sk;        /* struct sock * : identity of the socket while it lives */
    __s64 ret;       /* syscall return (for F_MMSG: that message's msg_len) */
    __u64 count;     /* requested bytes (read/write/send/recv len), vlen/iovlen for vectors,
                        backlog for listen, how for shutdown, type for socket() */
    __s32 fd;        /* the fd argument (accept: the listening fd; the new fd is ret) */
    __u16 sys;       /* SYS_* */
    __u16 family;    /* socket's family: AF_INET 2 / AF_INET6 10 */
    __u16 proto;     /* IPPROTO_TCP 6 / IPPROTO_UDP 17 */
    __u16 sotype;    /* SOCK_STREAM 1 / SOCK_DGRAM 2 */
    __u16 lport;     /* host byte order */
    __u16 rport;     /* host byte order */
    __u16 rfamily;   /* family of raddr (differs from family only for sockaddr-derived v4 on v6) */
    __u8  state;     /* skc_state at exit (TCP_ESTABLISHED 1, ... TCP_LISTEN 10) */
    __u8  flags;     /* F_* */
    __u32 msg_flags; /* flags argument of send/recv (MSG_PEEK 2 matters for byte ranges) */
    __u32 seq_w;     /* TCP: tp->write_seq at exit (send bytes = [seq_w - ret, seq_w)) */
    __u32 seq_r;     /* TCP: tp->copied_seq at exit (recv bytes = [seq_r - ret, seq_r)) */
    __u32 msg_idx;   /* index of the message for F_MMSG */
    __u32 cap;       /* payload bytes captured in data[] */
    __u8  laddr[16]; /* IPv4: first 4 bytes, network order */
    __u8  raddr[16];
    __u8  data[PAYLOAD_N];
    /* padded by the compiler to a multiple of 8 */
};
#define EV_SOCK_SIZE_BASE 152 /* sizeof(struct ev_sock) with PAYLOAD_N == 0 */

struct ev_proc {
    struct ev_hdr h;
    __u32 ppid;       /* FORK: parent tgid; EXEC: old_pid */
    __u32 child_pid;  /* FORK: child tgid */
    __u32 child_tid;  /* FORK: child tid (== child_pid unless a thread) */
    __s32 exit_code;  /* EXIT: task->exit_code (wait status: code<<8 | signal) */
    __u32 flags;      /* FORK: 1 = new thread (CLONE_THREAD); EXIT: 1 = group_dead (last thread) */
    __u32 _pad;
    char  filename[64]; /* EXEC */
};
#define EV_PROC_SIZE 136

struct ev_tcpstate {
    struct ev_hdr h;
    __u64 sk;
    __s32 oldstate;
    __s32 newstate;
    __u16 family;
    __u16 proto;
    __u16 lport;      /* host order (tracepoint's sport) */
    __u16 rport;      /* host order (tracepoint's dport) */
    __u8  laddr[16];
    __u8  raddr[16];
    __u8  owner_by;    /* how h.cgroup (the sock's owner) was found: OWNER_* */
    __u8  sk_err;      /* the sock's pending error (errno) at the change: why a connect failed */
    __u8  _pad[6];
};
#define EV_TCPSTATE_SIZE 112
/* ev_tcpstate.owner_by. h.pid/tid/comm are always 0: the tracepoint often
 * runs in softirq, where the current task is unrelated (on loopback it is
 * the task that SENT the packet, possibly another node). Join on sk with
 * the syscall records to get the owning process. */
#define OWNER_KNOWN_SOCK 1 /* sk seen at a traced socket()/accept()/connect() exit */
#define OWNER_LISTEN     2 /* local port is listened on by a traced task in that netns */
#define OWNER_CURRENT    3 /* fallback: current task's cgroup (socks older than the tracer) */

/* counters[] (per-CPU array) */
#define CNT_LOST_RINGBUF 0 /* ringbuf reserve failed: event dropped */
#define CNT_LOST_STASH   1 /* per-tid stash map full: syscall not recorded */
#define CNT_EMITTED      2 /* records submitted */
#define CNT_PAYLOAD_ERR  3 /* user-memory reads that failed */
#define CNT_LOST_MMSG    4 /* sendmmsg/recvmmsg messages past MMSG_MAX: not recorded */
#define CNT_N            5

#endif
