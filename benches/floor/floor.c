/*
 * floor.c: the least a server can do on one epoll thread. benches/load.sh runs it beside
 * sockloop and nginx, pinned the same way, and prints sockloop's CPU time per request or
 * message as a multiple of this one's: whatever sockloop spends above the floor is the price
 * of what it does and the floor does not (parse HTTP, keep timers, lend buffers, log, ...).
 *
 *   cc -O2 -o floor benches/floor/floor.c
 *   ./floor --mode http                             # 127.0.0.1:8889, as sockloop
 *   ./floor --mode echo --addr 127.0.0.1:0          # any free port; the start-up line says which
 *   ./floor --mode echo --offset 16                 # read buffer 16 bytes into a page
 *
 * What it does, and nothing more:
 *  - echo: read(2) into one buffer, write(2) the same bytes back.
 *  - http: count the request heads in what was read (each "\r\n\r\n" ends one, also when it
 *    is split across two reads) and answer all of them with one write(2) of that many canned
 *    200 responses, each as long as sockloop's and shaped the same, with a fixed Date. No
 *    parsing: a request body, a bad request, Connection: close are all ignored.
 *
 * What it does not skimp on, because a floor that cuts corners measures nothing:
 *  - short writes: the unsent rest is kept, the connection waits for EPOLLOUT and reads
 *    nothing more until the rest is out (so a client that does not read cannot make us
 *    buffer without bound, and echoed bytes stay in order);
 *  - the peer's FIN (read returns 0) and RST (ECONNRESET, EPIPE) close that connection only.
 *
 * epoll is level-triggered here (epoll(7); without EPOLLET that is the default, epoll_ctl(2),
 * and it is what Redis uses): a socket with bytes left after our one read is simply reported
 * again by the next epoll_wait, so one read(2) per readiness is always correct. An
 * edge-triggered loop like sockloop must instead read until EAGAIN, or know when a short
 * read has drained the socket, and remember a socket it left undrained.
 *
 * The start-up line on stdout, "floor: listening on ADDR:PORT ...", gives the real port when
 * --addr asks for port 0. The process runs until a signal ends it (SIGTERM's default action).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

/* The reference size: one 64 KiB read holds a whole echo message of the benchmark's
 * largest size, and any pipelined batch wrk sends. */
#define DEFAULT_BUFFER_SIZE (64 * 1024)
/* sockloop's default backlog. listen(2): the kernel silently caps it to
 * /proc/sys/net/core/somaxconn. */
#define BACKLOG 1024
/* Events taken per epoll_wait, as sockloop's mio::Events::with_capacity(1024). */
#define MAX_EVENTS 1024

/* sockloop's 200 page for the body benches/load.sh checks (BODY there), head for head:
 * the same header names in the same order, values of the same length. "sl-floor" has as
 * many letters as "sockloop", and the Date is RFC 9110's example, 29 bytes like any
 * IMF-fixdate, fixed because the floor does no clock work. An HTTP/1.1 keep-alive answer
 * has no Connection header, as sockloop's has none. */
static const char RESPONSE[] =
    "HTTP/1.1 200 OK\r\n"
    "Server: sl-floor\r\n"
    "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
    "Content-Type: text/html; charset=utf-8\r\n"
    "Content-Length: 58\r\n"
    "\r\n"
    "<html>\r\n<body>\r\n<h1>Hello, World!</h1>\r\n</body>\r\n</html>\r\n";
#define RESPONSE_LEN (sizeof(RESPONSE) - 1)

/* The four bytes that end a request head (RFC 9112 §2.1: the empty line after the fields). */
static const char HEAD_END[4] = {'\r', '\n', '\r', '\n'};

enum mode { ECHO, HTTP };

/* One connection, found by its descriptor (conns[fd]): descriptors are small integers the
 * kernel reuses lowest-first (open(2)), so an array indexed by them is the whole table. */
struct conn {
    /* What we still owe the peer after a short write, or NULL. It points into `spare`
     * (echo) or into the canned block (http), never into the shared read buffer, which the
     * next read on any connection overwrites. */
    const char *pending;
    size_t pending_len;
    /* echo: where a short write's rest is kept; allocated at the first short write and kept
     * until close. Same size and page offset as the read buffer (see keep_rest). */
    char *spare;
    /* http: how many bytes of "\r\n\r\n" the last read ended with (0..3), so that a head
     * whose end is split across two reads is still counted once. */
    unsigned head_end_matched;
};

static enum mode mode = ECHO;
static size_t buffer_size = DEFAULT_BUFFER_SIZE;
static size_t page_offset;   /* --offset: where in its page the read buffer starts */
static long page_size;
static char *read_buffer;    /* shared by every connection: it holds bytes only during a call */
static char *canned;         /* http: RESPONSE repeated, so N answers are its first N*len bytes */
static size_t canned_count;
static struct conn *conns;
static int max_fds;
static int epoll_fd;

static void die(const char *what)
{
    fprintf(stderr, "floor: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void usage(void)
{
    fprintf(stderr, "usage: floor [--mode echo|http] [--addr IPV4:PORT] [--offset BYTES] "
                    "[--buffer BYTES]\n");
    exit(2);
}

/* Memory that starts `offset` bytes into a page. posix_memalign gives the page start; the
 * offset is what the [offsets] section of benches/load.sh varies, because every byte echoed
 * is copied by the kernel into this buffer (read) and out of it (write), and where the
 * buffer starts decides how those copies are aligned on our side. (The copy into it is
 * copy_user_generic, arch/x86/include/asm/uaccess_64.h: a `rep movsb` on x86-64 CPUs with
 * FSRM, `grep -w fsrm /proc/cpuinfo`.) */
static char *page_placed(size_t len, size_t offset)
{
    void *memory;
    if ((errno = posix_memalign(&memory, (size_t)page_size, offset + len)) != 0)
        die("posix_memalign");
    /* Touch every page now, so the first messages do not pay for page faults. */
    memset(memory, 0, offset + len);
    return (char *)memory + offset;
}

static void watch(int fd, int op, unsigned events)
{
    struct epoll_event event = {.events = events, .data.fd = fd};
    if (epoll_ctl(epoll_fd, op, fd, &event) < 0)
        die("epoll_ctl");
}

/* Closing a socket whose receive queue still holds bytes makes the kernel send RST instead
 * of FIN (tcp_close() in net/ipv4/tcp.c, after RFC 2525 §2.17). We close after read(2)
 * returned 0, i.e. after everything up to the peer's FIN was read, or after an error that
 * already ended the connection, so no answer the peer still wants is destroyed.
 * close(2) also takes the socket out of the epoll set (epoll(7): once no other descriptor
 * refers to it, and we never dup one). */
static void close_conn(int fd)
{
    struct conn *c = &conns[fd];
    free(c->spare ? c->spare - page_offset : NULL);
    memset(c, 0, sizeof(*c));
    close(fd);
}

/* Count the request heads that end in data[0..len), carrying a split "\r\n\r\n" over from
 * the previous read in *matched and leaving the one this read ends with there. */
static size_t count_heads(const char *data, size_t len, unsigned *matched)
{
    size_t heads = 0, i = 0;

    /* The end of a head that began in the previous read: finish or drop it byte by byte.
     * On a mismatch the only way to be partway into "\r\n\r\n" again is to be on a '\r'. */
    while (*matched > 0 && i < len) {
        if (data[i] == HEAD_END[*matched]) {
            if (++*matched == 4) {
                heads++;
                *matched = 0;
            }
        } else {
            *matched = data[i] == '\r';
        }
        i++;
    }
    if (i == len)
        return heads;

    /* Whole "\r\n\r\n"s: memmem is glibc's vectorised search, far cheaper than a byte loop
     * over 16 pipelined requests. */
    const char *end;
    while ((end = memmem(data + i, len - i, HEAD_END, sizeof(HEAD_END))) != NULL) {
        heads++;
        i = (size_t)(end - data) + sizeof(HEAD_END);
    }

    /* The longest start of "\r\n\r\n" that the read ends with, if any. */
    for (unsigned m = 3; m > 0; m--) {
        if (len - i >= m && memcmp(data + len - m, HEAD_END, m) == 0) {
            *matched = m;
            break;
        }
    }
    return heads;
}

/* A short write: keep the rest for EPOLLOUT and stop reading meanwhile (EPOLLOUT alone).
 * Echo's rest is in the shared read buffer, which the next read overwrites, so it is copied
 * to the connection's spare buffer, to the same offset it had: every byte keeps its place in
 * its page, and the kernel's copy of the rest lines up as the first write's did. */
static void keep_rest(int fd, const char *rest, size_t len)
{
    struct conn *c = &conns[fd];
    if (mode == ECHO) {
        if (c->spare == NULL)
            c->spare = page_placed(buffer_size, page_offset);
        char *copy = c->spare + (rest - read_buffer);
        memcpy(copy, rest, len);
        rest = copy;
    }
    c->pending = rest;
    c->pending_len = len;
    watch(fd, EPOLL_CTL_MOD, EPOLLOUT);
}

/* Write as much of data as the socket's send buffer takes. Returns the bytes not written, or
 * -1 after closing the connection on an error (EPIPE, ECONNRESET: the peer is gone; SIGPIPE
 * is ignored, so write(2) reports EPIPE instead of the signal killing us). */
static ssize_t send_some(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n > 0) {
            data += n;
            len -= (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break; /* send buffer full: the rest waits for EPOLLOUT */
        } else {
            close_conn(fd);
            return -1;
        }
    }
    return (ssize_t)len;
}

/* Reply to what one read brought in: echo it, or answer each head it completed. */
static void answer(int fd, size_t got)
{
    const char *out = read_buffer;
    size_t out_len = got;
    if (mode == HTTP) {
        size_t heads = count_heads(read_buffer, got, &conns[fd].head_end_matched);
        if (heads == 0)
            return; /* only part of a head so far */
        out = canned;
        out_len = heads * RESPONSE_LEN;
    }
    ssize_t unsent = send_some(fd, out, out_len);
    if (unsent > 0)
        keep_rest(fd, out + (out_len - (size_t)unsent), (size_t)unsent);
}

/* EPOLLIN: one read(2). Level-triggered, so what it leaves is reported again. */
static void on_readable(int fd)
{
    ssize_t got = read(fd, read_buffer, buffer_size);
    if (got > 0)
        answer(fd, (size_t)got);
    else if (got == 0)
        close_conn(fd); /* FIN: the peer sends no more, and we owe it nothing */
    else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        close_conn(fd); /* ECONNRESET and the like */
}

/* EPOLLOUT: the send buffer has room again. Once the rest is out, read again. */
static void on_writable(int fd)
{
    struct conn *c = &conns[fd];
    ssize_t unsent = send_some(fd, c->pending, c->pending_len);
    if (unsent < 0)
        return;
    c->pending += c->pending_len - (size_t)unsent;
    c->pending_len = (size_t)unsent;
    if (unsent == 0) {
        c->pending = NULL;
        watch(fd, EPOLL_CTL_MOD, EPOLLIN);
    }
}

/* Take every connection waiting in the backlog. Level-triggered epoll would report the
 * listener again for each, but one accept4(2) loop saves an epoll_wait per connection when
 * 10,000 arrive at once. */
static void accept_all(int listener)
{
    for (;;) {
        int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue; /* accept(2): a connection reset while queued; take the next */
            /* EAGAIN: the backlog is empty. Anything else (EMFILE: out of descriptors)
             * leaves the connection queued, and the listener is reported again at once,
             * so the loop spins until a descriptor is free: the floor raised its limit at
             * start so that this does not happen in benches/load.sh, and unlike sockloop
             * it keeps no reserve descriptor to shed such connections. */
            return;
        }
        if (fd >= max_fds) {
            close(fd);
            continue;
        }
        /* tcp(7) TCP_NODELAY: send what we write now rather than wait, as Nagle's algorithm
         * does, for the ACK of a previous small segment. sockloop sets it too; each of our
         * writes is already a whole answer. */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        watch(fd, EPOLL_CTL_ADD, EPOLLIN);
    }
}

static int listen_on(const char *addr_text)
{
    char host[64];
    const char *colon = strrchr(addr_text, ':');
    if (colon == NULL || (size_t)(colon - addr_text) >= sizeof(host))
        usage();
    memcpy(host, addr_text, (size_t)(colon - addr_text));
    host[colon - addr_text] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (*end != '\0' || port < 0 || port > 65535 || inet_pton(AF_INET, host, &addr.sin_addr) != 1)
        usage();

    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    /* SO_REUSEADDR, socket(7): bind even while connections of an earlier run on this port
     * sit in TIME_WAIT. */
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
        die("setsockopt SO_REUSEADDR");
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
        die("bind");
    if (listen(fd, BACKLOG) < 0)
        die("listen");
    /* Port 0 asked the kernel to choose one: getsockname tells which. */
    socklen_t addr_len = sizeof(addr);
    if (getsockname(fd, (struct sockaddr *)&addr, &addr_len) < 0)
        die("getsockname");
    printf("floor: listening on %s:%u mode=%s buffer=%zu at page offset %zu, level-triggered "
           "epoll, one thread\n",
           host, ntohs(addr.sin_port), mode == ECHO ? "echo" : "http", buffer_size,
           page_offset);
    fflush(stdout);
    return fd;
}

int main(int argc, char **argv)
{
    const char *addr_text = NULL;
    page_size = sysconf(_SC_PAGESIZE);
    for (int i = 1; i < argc; i++) {
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--mode") == 0 && value) {
            if (strcmp(value, "echo") == 0)
                mode = ECHO;
            else if (strcmp(value, "http") == 0)
                mode = HTTP;
            else
                usage();
        } else if (strcmp(argv[i], "--addr") == 0 && value) {
            addr_text = value;
        } else if (strcmp(argv[i], "--offset") == 0 && value) {
            page_offset = strtoul(value, NULL, 10);
        } else if (strcmp(argv[i], "--buffer") == 0 && value) {
            buffer_size = strtoul(value, NULL, 10);
        } else {
            usage();
        }
        i++;
    }
    if (page_offset >= (size_t)page_size || buffer_size == 0)
        usage();
    if (addr_text == NULL)
        addr_text = mode == ECHO ? "127.0.0.1:8888" : "127.0.0.1:8889";

    /* A peer that resets while we write would otherwise kill us with SIGPIPE (write(2),
     * EPIPE); ignored, the write returns EPIPE and that connection is closed. */
    signal(SIGPIPE, SIG_IGN);

    /* C10K needs 10,000 descriptors and more: raise the soft limit to the hard one. */
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
        limit.rlim_cur = limit.rlim_max;
        setrlimit(RLIMIT_NOFILE, &limit);
        getrlimit(RLIMIT_NOFILE, &limit);
    }
    max_fds = limit.rlim_cur > (1 << 20) ? (1 << 20) : (int)limit.rlim_cur;
    conns = calloc((size_t)max_fds, sizeof(*conns));
    if (conns == NULL)
        die("calloc");

    read_buffer = page_placed(buffer_size, page_offset);
    if (mode == HTTP) {
        /* One read can complete at most one head begun in the previous read plus one per
         * 4 bytes, so this many copies cover any read, and answering never copies. */
        canned_count = buffer_size / sizeof(HEAD_END) + 1;
        canned = page_placed(canned_count * RESPONSE_LEN, 0);
        for (size_t i = 0; i < canned_count; i++)
            memcpy(canned + i * RESPONSE_LEN, RESPONSE, RESPONSE_LEN);
    }

    epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (epoll_fd < 0)
        die("epoll_create1");
    int listener = listen_on(addr_text);
    watch(listener, EPOLL_CTL_ADD, EPOLLIN);

    /* The loop: wait, then hand each ready descriptor to the one step its state calls for.
     * EPOLLERR and EPOLLHUP are reported whatever we asked for; the read or write that
     * follows returns the error (or 0), and that step closes the connection. */
    static struct epoll_event events[MAX_EVENTS];
    for (;;) {
        int ready = epoll_wait(epoll_fd, events, MAX_EVENTS, -1);
        if (ready < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < ready; i++) {
            int fd = events[i].data.fd;
            if (fd == listener)
                accept_all(listener);
            else if (conns[fd].pending != NULL)
                on_writable(fd);
            else
                on_readable(fd);
        }
    }
}
