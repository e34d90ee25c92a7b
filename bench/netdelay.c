/* netdelay: a userspace switch with a fixed one-way delay, for emulating
 * hosts with network namespaces where the kernel has no netem.
 *
 *   netdelay [-n N] [-d US] [-r MBIT] [-q SLOTS] PREFIX
 *
 * Creates N TUN devices PREFIX0 .. PREFIX{N-1} (default 3) in the calling
 * namespace and prints "ready" on stdout; the caller then moves device i
 * into host i's namespace and gives it address NET.(i+1)/24 there.  Every
 * IPv4 packet read from a device goes out of device j, where j + 1 is the
 * last octet of its destination, US microseconds later (default 0), after
 * the packets queued on that link before it, and, with -r, after its own
 * transmit time at MBIT megabits per second.  Other packets (IPv6 router
 * chatter) are dropped.  A link holds SLOTS packets (default 4096); past
 * that a packet is dropped and counted, as a switch would, and TCP resends.
 * SIGINT or SIGTERM ends it with a summary on stderr: packets and bytes
 * forwarded, dropped, and how late packets left against their due time
 * (median and 99th percentile), which is the delay's own error.
 *
 * Timing: the thread sleeps in ppoll until the next packet is due, with the
 * timer slack at 1 ns; it does not spin, so it costs no core while idle.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#define MAX_LINKS 64
#define PKT_MAX 2048 /* above the devices' MTU of 1500 */
#define LATE_BINS 4096 /* microseconds late, 1 µs per bin, the last bin open-ended */

typedef struct {
    uint64_t due; /* ns, CLOCK_MONOTONIC */
    uint16_t len;
    uint8_t data[PKT_MAX];
} packet;

typedef struct {
    int fd;
    packet *q;        /* [slots] ring of packets waiting to leave through this device */
    int head, count;
    uint64_t free_at; /* ns: when the link's transmitter is free (-r) */
} link_t;

static volatile sig_atomic_t g_stop;
static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static int tun_open(const char *name)
{
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return -1;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int late_pct(const uint64_t *bins, uint64_t n, double pct)
{
    uint64_t want = (uint64_t)(pct / 100.0 * (double)n), seen = 0;
    for (int i = 0; i < LATE_BINS; i++)
        if ((seen += bins[i]) > want) return i;
    return LATE_BINS - 1;
}

int main(int argc, char **argv)
{
    int n = 3, slots = 4096;
    double delay_us = 0, mbit = 0;
    const char *prefix = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-n") && i + 1 < argc) n = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-d") && i + 1 < argc) delay_us = atof(argv[++i]);
        else if (!strcmp(argv[i], "-r") && i + 1 < argc) mbit = atof(argv[++i]);
        else if (!strcmp(argv[i], "-q") && i + 1 < argc) slots = atoi(argv[++i]);
        else if (argv[i][0] != '-' && !prefix) prefix = argv[i];
        else {
            fprintf(stderr, "usage: netdelay [-n N] [-d US] [-r MBIT] [-q SLOTS] PREFIX\n");
            return 2;
        }
    }
    if (!prefix || n < 2 || n > MAX_LINKS || delay_us < 0 || mbit < 0 || slots < 1 || strlen(prefix) > 12) {
        fprintf(stderr, "netdelay: need PREFIX (at most 12 characters), 2 <= N <= %d, US >= 0, MBIT >= 0, "
                        "SLOTS >= 1\n", MAX_LINKS);
        return 2;
    }
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    link_t links[MAX_LINKS];
    struct pollfd pfd[MAX_LINKS];
    for (int i = 0; i < n; i++) {
        char name[IFNAMSIZ];
        snprintf(name, sizeof name, "%s%d", prefix, i);
        links[i] = (link_t){.fd = tun_open(name)};
        if (links[i].fd < 0) {
            fprintf(stderr, "netdelay: cannot create TUN device %s: %s\n", name, strerror(errno));
            return 1;
        }
        links[i].q = malloc(sizeof(packet) * (size_t)slots);
        if (!links[i].q) {
            fprintf(stderr, "netdelay: out of memory for %d packets per link\n", slots);
            return 1;
        }
        pfd[i] = (struct pollfd){.fd = links[i].fd, .events = POLLIN};
    }
    printf("ready\n");
    fflush(stdout);

    const uint64_t delay = (uint64_t)(delay_us * 1e3);
    const double ns_per_byte = mbit > 0 ? 8e3 / mbit : 0; /* 8 bits / (MBIT · 1e6 / 1e9 ns) */
    uint64_t fwd = 0, bytes = 0, dropped = 0, other = 0, late[LATE_BINS] = {0};
    while (!g_stop) {
        /* send what is due */
        uint64_t t = now_ns(), next = UINT64_MAX;
        for (int i = 0; i < n; i++) {
            link_t *l = &links[i];
            while (l->count && l->q[l->head].due <= t) {
                packet *p = &l->q[l->head];
                if (write(l->fd, p->data, p->len) == (ssize_t)p->len) {
                    fwd++;
                    bytes += p->len;
                    uint64_t us = (t - p->due) / 1000;
                    late[us < LATE_BINS ? us : LATE_BINS - 1]++;
                } else {
                    dropped++;
                }
                l->head = (l->head + 1) % slots;
                l->count--;
            }
            if (l->count && l->q[l->head].due < next) next = l->q[l->head].due;
        }
        /* sleep until a packet arrives or the next one is due */
        struct timespec to, *top = NULL;
        if (next != UINT64_MAX) {
            uint64_t w = next > t ? next - t : 0;
            to.tv_sec = (time_t)(w / 1000000000ull);
            to.tv_nsec = (long)(w % 1000000000ull);
            top = &to;
        }
        if (ppoll(pfd, (nfds_t)n, top, NULL) < 0 && errno != EINTR) {
            perror("netdelay: ppoll");
            return 1;
        }
        /* take in every packet waiting on every device */
        for (int i = 0; i < n; i++) {
            if (!(pfd[i].revents & POLLIN)) continue;
            for (;;) {
                uint8_t buf[PKT_MAX];
                ssize_t got = read(links[i].fd, buf, sizeof buf);
                if (got <= 0) break;
                if (got < 20 || (buf[0] >> 4) != 4) {
                    other++;
                    continue;
                }
                int j = buf[19] - 1; /* last octet of the IPv4 destination */
                if (j < 0 || j >= n || j == i) {
                    other++;
                    continue;
                }
                link_t *l = &links[j];
                if (l->count == slots) {
                    dropped++;
                    continue;
                }
                uint64_t arrive = now_ns(), due = arrive + delay;
                if (ns_per_byte > 0) {
                    uint64_t start = l->free_at > arrive ? l->free_at : arrive;
                    l->free_at = start + (uint64_t)(ns_per_byte * (double)got);
                    due = l->free_at + delay;
                }
                packet *p = &l->q[(l->head + l->count) % slots];
                p->due = due;
                p->len = (uint16_t)got;
                memcpy(p->data, buf, (size_t)got);
                l->count++;
            }
        }
    }
    fprintf(stderr,
            "netdelay: %llu packets (%llu bytes) forwarded, %llu dropped, %llu not for a link; "
            "late against the due time: median %d us, p99 %d us\n",
            (unsigned long long)fwd, (unsigned long long)bytes, (unsigned long long)dropped,
            (unsigned long long)other, late_pct(late, fwd, 50), late_pct(late, fwd, 99));
    for (int i = 0; i < n; i++) {
        close(links[i].fd);
        free(links[i].q);
    }
    return 0;
}
