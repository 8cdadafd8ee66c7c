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
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
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

int main(int argc, char **argv)
{
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
