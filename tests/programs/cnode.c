/* A node that is not Python, for the tracer's end-to-end tests: a TCP
 * server that accepts one connection, read()s one request, write()s
 * "re:" + request, reads until EOF, then waits to be stopped. Before its
 * read it makes one 32-bit system call on the connection, read(conn, 0, 0)
 * through int $0x80: ia32 read is number 3, x86_64's close, and the tracer
 * must not take it for a close (a tracer keyed on raw system call numbers,
 * as on raw_syscalls, would).
 *
 *     gcc -O2 -o cnode cnode.c && ./cnode PORT
 *
 * `cnode mmsg HOST PORT WORKDIR [N]` instead sends N (default ten) UDP
 * datagrams "m0".."m9" to HOST:PORT with ONE sendmmsg() call, then, when N
 * is given, one more, "after", with sendto(); then creates WORKDIR/ok.
 *
 * `cnode ia32 PORT` serves one request like the default mode, but reads it
 * and writes the reply with 32-bit system calls (int $0x80, a buffer below
 * 4 GiB): socket I/O through calls whose numbers name no x86_64 call.
 *
 * `cnode uring WORKDIR` moves bytes through io_uring over a TCP connection
 * to itself (127.0.0.1), the three ways io_uring runs a request: a child
 * process writes "ping" to one end once the parent, which submitted a
 * receive on the other end beforehand, is blocked in read() on a pipe: the
 * receive runs as task work on the way out of that read (system call 0, fd
 * the pipe's). The child's "more" is then received inline, in
 * io_uring_enter, and "pong" is sent back by an io-wq worker thread
 * (IOSQE_ASYNC). Creates WORKDIR/ok when all of it went as planned.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/io_uring.h>
#include <linux/tcp.h>  /* struct tcp_info with tcpi_bytes_received */
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define MMSG_N 10

static int send_mmsg(const char *host, int port, const char *workdir, int n, int after)
{
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (s < 0)
        return 1;
    struct sockaddr_in to;
    memset(&to, 0, sizeof(to));
    to.sin_family = AF_INET;
    to.sin_port = htons(port);
    if (inet_pton(AF_INET, host, &to.sin_addr) != 1)
        return 1;
    char text[MMSG_N][4];
    struct iovec iov[MMSG_N];
    struct mmsghdr msgs[MMSG_N];
    memset(msgs, 0, sizeof(msgs));
    for (int i = 0; i < MMSG_N; i++) {
        snprintf(text[i], sizeof(text[i]), "m%d", i);
        iov[i].iov_base = text[i];
        iov[i].iov_len = 2;
        msgs[i].msg_hdr.msg_name = &to;
        msgs[i].msg_hdr.msg_namelen = sizeof(to);
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    if (n < 1 || n > MMSG_N || sendmmsg(s, msgs, n, 0) != n)
        return 1;
    if (after && sendto(s, "after", 5, 0, (struct sockaddr *)&to, sizeof(to)) != 5)
        return 1;
    close(s);
    char path[4096];
    snprintf(path, sizeof(path), "%s/ok", workdir);
    FILE *f = fopen(path, "w");
    return f ? fclose(f) : 1;
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static int accept_one(int port);

#if defined(__x86_64__)
static long ia32_call(long nr, long a, long b, long c)
{
    long ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(a), "c"(b), "d"(c) : "memory");
    return ret;
}

static __attribute__((noreturn)) int serve_ia32(int port)
{
    char *buf = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT,
                     -1, 0);
    if (buf == MAP_FAILED)
        die("mmap");
    int conn = accept_one(port);
    memcpy(buf, "re:", 3);
    long n = ia32_call(3, conn, (long)(buf + 3), 4000);  /* ia32 read */
    if (n <= 0)
        die("ia32 read");
    if (ia32_call(4, conn, (long)buf, n + 3) != n + 3)  /* ia32 write */
        die("ia32 write");
    while (read(conn, buf, 4096) > 0)
        ;
    close(conn);
    for (;;)
        pause();
}
#endif

/* io_uring by its system calls (Debian 12 has no liburing-dev) */
struct ring {
    int fd;
    unsigned *sq_tail, *sq_mask, *sq_array, *cq_head, *cq_tail, *cq_mask;
    struct io_uring_sqe *sqes;
    struct io_uring_cqe *cqes;
};

static void *map_ring(int fd, size_t size, off_t what)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, what);
    if (p == MAP_FAILED)
        die("mmap io_uring");
    return p;
}

static void ring_init(struct ring *r)
{
    struct io_uring_params p;
    memset(&p, 0, sizeof(p));
    r->fd = syscall(__NR_io_uring_setup, 4, &p);
    if (r->fd < 0)
        die("io_uring_setup");
    char *sq = map_ring(r->fd, p.sq_off.array + p.sq_entries * sizeof(unsigned),
                        IORING_OFF_SQ_RING);
    char *cq = map_ring(r->fd, p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe),
                        IORING_OFF_CQ_RING);
    r->sqes = map_ring(r->fd, p.sq_entries * sizeof(struct io_uring_sqe), IORING_OFF_SQES);
    r->sq_tail = (unsigned *)(sq + p.sq_off.tail);
    r->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
    r->sq_array = (unsigned *)(sq + p.sq_off.array);
    r->cq_head = (unsigned *)(cq + p.cq_off.head);
    r->cq_tail = (unsigned *)(cq + p.cq_off.tail);
    r->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
    r->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
}

/* submit one request; wait for `wait` completions */
static void ring_submit(struct ring *r, int op, int fd, const void *buf, unsigned len,
                        unsigned sqe_flags, unsigned wait)
{
    unsigned tail = *r->sq_tail, idx = tail & *r->sq_mask;
    struct io_uring_sqe *sqe = &r->sqes[idx];
    memset(sqe, 0, sizeof(*sqe));
    sqe->opcode = op;
    sqe->fd = fd;
    sqe->addr = (unsigned long)buf;
    sqe->len = len;
    sqe->flags = sqe_flags;
    r->sq_array[idx] = idx;
    __atomic_store_n(r->sq_tail, tail + 1, __ATOMIC_RELEASE);
    if (syscall(__NR_io_uring_enter, r->fd, 1, wait, wait ? IORING_ENTER_GETEVENTS : 0, NULL, 0)
        != 1)
        die("io_uring_enter");
}

/* the next completion's result */
static int ring_reap(struct ring *r)
{
    unsigned head = *r->cq_head;
    while (head == __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE))
        if (syscall(__NR_io_uring_enter, r->fd, 0, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0)
            die("io_uring_enter");
    int res = r->cqes[head & *r->cq_mask].res;
    __atomic_store_n(r->cq_head, head + 1, __ATOMIC_RELEASE);
    return res;
}

#define WAIT_STEPS 1000  /* of 5 ms: 5 s */

/* Is process `pid` blocked in read() on fd `fd`? (/proc/PID/syscall:
 * "0 0x<fd> ..." while it is) */
static int blocked_in_read(pid_t pid, int fd)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/syscall", (int)pid);
    for (int i = 0; i < WAIT_STEPS; i++, usleep(5000)) {
        FILE *f = fopen(path, "r");
        long nr = -1;
        unsigned long arg = 0;
        int got = f ? fscanf(f, "%ld 0x%lx", &nr, &arg) : 0;
        if (f)
            fclose(f);
        if (got == 2 && nr == 0 && arg == (unsigned long)fd)
            return 1;
    }
    return 0;
}

/* bytes waiting in a socket's receive queue (an ioctl: not traced) */
static int queued(int s)
{
    int n = -1;
    return ioctl(s, FIONREAD, &n) == 0 ? n : -1;
}

static int wait_queued(int s, int n)
{
    for (int i = 0; i < WAIT_STEPS; i++, usleep(5000))
        if (queued(s) >= n)
            return 1;
    return 0;
}

/* until `n` bytes arrived on s and none wait: someone took them */
static int wait_taken(int s, unsigned n)
{
    for (int i = 0; i < WAIT_STEPS; i++, usleep(5000)) {
        struct tcp_info ti;
        socklen_t len = sizeof(ti);
        if (getsockopt(s, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 && ti.tcpi_bytes_received >= n
            && queued(s) == 0)
            return 1;
    }
    return 0;
}

static int uring(const char *workdir)
{
    int lst = socket(AF_INET, SOCK_STREAM, 0), a = socket(AF_INET, SOCK_STREAM, 0), p[2];
    struct sockaddr_in addr;
    socklen_t len = sizeof(addr);
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (lst < 0 || a < 0 || bind(lst, (struct sockaddr *)&addr, sizeof(addr)) < 0
        || listen(lst, 1) < 0 || getsockname(lst, (struct sockaddr *)&addr, &len) < 0
        || connect(a, (struct sockaddr *)&addr, sizeof(addr)) < 0 || pipe(p) < 0)
        die("uring set-up");
    int b = accept(lst, NULL, NULL);
    if (b < 0)
        die("accept");
    pid_t child = fork();
    if (child < 0)
        die("fork");
    if (child == 0) {
        char reply[4];
        /* "ping" once the parent waits in read() on the pipe; "more" once
         * "ping" was taken, and the pipe's byte once "more" is queued: b
         * is the parent's socket too, whose queues the child can see */
        if (!blocked_in_read(getppid(), p[0]) || write(a, "ping", 4) != 4
            || !wait_taken(b, 4) || write(a, "more", 4) != 4 || !wait_queued(b, 4)
            || write(p[1], "x", 1) != 1 || read(a, reply, 4) != 4 || memcmp(reply, "pong", 4) != 0)
            _exit(1);
        _exit(0);
    }
    close(p[1]);  /* a child that gave up ends the parent's read with EOF */
    struct ring r;
    char ping[4], more[4], x;
    ring_init(&r);
    ring_submit(&r, IORING_OP_RECV, b, ping, 4, 0, 0);  /* nothing to receive yet: polled */
    if (read(p[0], &x, 1) != 1)  /* "ping" arrives: the receive runs as this read's task work */
        die("read pipe");
    ring_submit(&r, IORING_OP_RECV, b, more, 4, 0, 1);  /* "more" is queued: inline */
    if (ring_reap(&r) != 4 || ring_reap(&r) != 4 || memcmp(ping, "ping", 4) || memcmp(more, "more", 4))
        die("io_uring recv");
    ring_submit(&r, IORING_OP_SEND, b, "pong", 4, IOSQE_ASYNC, 1);  /* an io-wq worker */
    int status;
    if (ring_reap(&r) != 4 || waitpid(child, &status, 0) != child || status != 0)
        die("io_uring send");
    char path[4096];
    snprintf(path, sizeof(path), "%s/ok", workdir);
    FILE *f = fopen(path, "w");
    if (!f || fclose(f))
        die("ok");
    for (;;)
        pause();
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "uring") == 0)
        return uring(argv[2]);
    if (argc == 5 && strcmp(argv[1], "mmsg") == 0)
        return send_mmsg(argv[2], atoi(argv[3]), argv[4], MMSG_N, 0);
    if (argc == 6 && strcmp(argv[1], "mmsg") == 0)
        return send_mmsg(argv[2], atoi(argv[3]), argv[4], atoi(argv[5]), 1);
#if defined(__x86_64__)
    if (argc == 3 && strcmp(argv[1], "ia32") == 0)
        return serve_ia32(atoi(argv[2]));
#endif
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 2;
    }
    int conn = accept_one(atoi(argv[1]));
#if defined(__x86_64__)
    long ia32_ret = ia32_call(3, conn, 0, 0);  /* a read of 0 bytes */
    if (ia32_ret != 0 && ia32_ret != -38)  /* -ENOSYS: no ia32 emulation */
        die("ia32 read");
#endif
    char buf[4096 + 3] = "re:";
    ssize_t n = read(conn, buf + 3, 4096);
    if (n <= 0)
        die("read");
    if (write(conn, buf, n + 3) != n + 3)
        die("write");
    while (read(conn, buf, sizeof(buf)) > 0)
        ;
    close(conn);
    for (;;)
        pause();
}

/* listen on PORT (any address), accept one connection */
static int accept_one(int port)
{
    int lst = socket(AF_INET, SOCK_STREAM, 0);
    if (lst < 0)
        die("socket");
    int one = 1;
    setsockopt(lst, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    if (bind(lst, (struct sockaddr *)&addr, sizeof(addr)) < 0)
        die("bind");
    if (listen(lst, 16) < 0)
        die("listen");
    int conn = accept(lst, NULL, NULL);
    if (conn < 0)
        die("accept");
    return conn;
}
