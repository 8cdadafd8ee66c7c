/* The loop bench/syscall_cost.py times: N rounds of each pair of system
 * calls, best of REPS, in ns per pair.
 *
 *   udp     send(32 bytes) + recv on a UDP socket connected to itself: two
 *           socket calls a tracer records (one send, one receive)
 *   pipe    write(1) + read(1) on a pipe: calls a tracer sees but skips
 *   getppid two calls no socket tracer hooks: what every other system call
 *           of every task pays while syscall tracepoints are attached
 *
 *     gcc -O2 -o syscall_loop syscall_loop.c && ./syscall_loop N REPS
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s N REPS\n", argv[0]);
        return 2;
    }
    int n = atoi(argv[1]), reps = atoi(argv[2]);
    int p[2];
    char buf[64] = {0};
    if (pipe(p) != 0)
        return 1;
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) != 0
        || getsockname(s, (struct sockaddr *)&a, &len) != 0
        || connect(s, (struct sockaddr *)&a, sizeof(a)) != 0)
        return 1;
    double udp = 1e18, pip = 1e18, other = 1e18;
    for (int r = 0; r < reps; r++) {
        double t0 = now_ns();
        for (int i = 0; i < n; i++) {
            if (send(s, buf, 32, 0) != 32 || recv(s, buf, sizeof(buf), 0) != 32)
                return 1;
        }
        double t1 = now_ns();
        for (int i = 0; i < n; i++) {
            if (write(p[1], buf, 1) != 1 || read(p[0], buf, 1) != 1)
                return 1;
        }
        double t2 = now_ns();
        for (int i = 0; i < n; i++) {
            getppid();
            getppid();
        }
        double t3 = now_ns();
        if ((t1 - t0) / n < udp) udp = (t1 - t0) / n;
        if ((t2 - t1) / n < pip) pip = (t2 - t1) / n;
        if ((t3 - t2) / n < other) other = (t3 - t2) / n;
    }
    printf("%.0f %.0f %.0f\n", udp, pip, other);
    return 0;
}
