/*
 * loadgen: a single-threaded WebSocket load client for the wsplugin
 * benchmarks (tracker issue 6).
 *
 * epoll, non-blocking sockets, RFC 6455 client framing (every frame masked
 * with a fresh key), plain TCP only, IPv4 loopback in practice.
 *
 * Build:  gcc -O2 -o benchmarks/build/loadgen benchmarks/loadgen.c -lz
 *
 * Subcommands (all print one JSON object as their last stdout line; the
 * measured phase is framed by "MARK start" / "MARK end" lines so the harness
 * can sample the server's CPU time over exactly that window):
 *
 *   echo       N connections, K messages in flight on each, SIZE-byte text or
 *              binary messages echoed back; msgs/s and MB/s (payload bytes
 *              received back, 1 MB = 1e6 bytes).             (workloads A, C)
 *   latency    one connection, one message in flight, COUNT round trips after
 *              WARMUP ones; p50/p90/p99/mean/max in microseconds.   (B)
 *   bcast      N connections; connection 0 sends SIZE-byte text messages, each
 *              of which the server relays to every connected client (sender
 *              included). WINDOW broadcasts are kept outstanding: a new one is
 *              sent when every client has received an earlier one. Counts
 *              deliveries (messages received over all connections) per second.
 *              With --deflate every connection offers permessage-deflate with
 *              no context takeover in either direction (RFC 7692); the
 *              server must accept, and every message received must be
 *              compressed (RSV1) and inflate to SIZE bytes.        (D, G)
 *   idle       opens N connections, prints "READY <n> <seconds>", holds them
 *              (answering pings) until a line or EOF arrives on stdin or
 *              --hold seconds pass, then closes them.               (E)
 *   handshake  C concurrent connectors, each repeatedly: TCP connect, opening
 *              handshake, close frame, wait for the server's close frame,
 *              reset the socket (see conn_close); cycles per second.  (F)
 *
 * The client's own CPU time (getrusage, user+sys) over the measured window is
 * reported as cpu_s and cpu_share (= cpu_s / window), so a run can show that
 * the client was not the bottleneck.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

/* ------------------------------------------------------------------ utils */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static void die(const char *msg) {
    fprintf(stderr, "loadgen: %s\n", msg);
    printf("{\"error\": \"%s\"}\n", msg);
    fflush(stdout);
    exit(2);
}

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n);
    if (!q) die("out of memory");
    return q;
}

static uint32_t rng_state = 0x9e3779b9u;
static uint32_t rng(void) {
    uint32_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return rng_state = x;
}

static void mark(const char *what) {
    printf("MARK %s\n", what);
    fflush(stdout);
}

/* ---------------------------------------------------------------- buffers */

typedef struct {
    uint8_t *data;
    size_t off, len, cap; /* live bytes are data[off .. off+len) */
} buf_t;

static void buf_reserve(buf_t *b, size_t extra) {
    if (b->off + b->len + extra <= b->cap) return;
    if (b->off) {
        memmove(b->data, b->data + b->off, b->len);
        b->off = 0;
    }
    if (b->len + extra <= b->cap) return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra) cap *= 2;
    b->data = xrealloc(b->data, cap);
    b->cap = cap;
}

static void buf_consume(buf_t *b, size_t n) {
    b->off += n;
    b->len -= n;
    if (!b->len) b->off = 0;
}

/* ------------------------------------------------------------ connections */

enum { ST_FREE, ST_CONNECTING, ST_HANDSHAKE, ST_OPEN, ST_CLOSING };

typedef struct {
    int fd;
    uint32_t gen; /* bumped on every connect: tells stale epoll events apart */
    int state;
    int want_out; /* EPOLLOUT registered */
    int close_sent;
    buf_t in, out;
    int frag_op; /* opcode of a fragmented message being received */
    int frag_rsv1; /* its first frame was compressed */
    uint64_t frag_len;
    uint64_t received; /* data messages received */
    uint64_t t0_ns;    /* send time (latency) */
} conn_t;

/* options */
static const char *opt_host = "127.0.0.1";
static int opt_port = 0;
static const char *opt_path = "/";
static int opt_conns = 1;
static int opt_inflight = 1;
static size_t opt_size = 64;
static int opt_binary = 0;
static int opt_deflate = 0;
static double opt_duration = 5.0;
static double opt_warmup = 1.0;
static long opt_count = 10000;
static long opt_warmup_count = 1000;
static int opt_window = 8;
static int opt_concurrency = 32;
static int opt_pending = 32; /* handshakes in progress at once when opening many */
static double opt_hold = 60.0;
static double opt_timeout = 0; /* 0: derived */

static int epfd = -1;
static conn_t *conns = NULL;
static int nconns = 0;
static struct sockaddr_in server_addr;
static struct sockaddr_in server_addr2; /* --port2: odd connections go there */
static int opt_port2 = 0;
static char *request = NULL;
static size_t request_len = 0;
static uint8_t *payload = NULL; /* the message every send uses */

static uint64_t errors = 0;     /* failed connects/handshakes, resets, bad echoes */
static char first_error[160] = "";
static void note_error(const char *fmt, const char *detail) {
    errors++;
    if (!first_error[0]) snprintf(first_error, sizeof first_error, fmt, detail);
}

static void ep_ctl(int op, conn_t *c, uint32_t events) {
    struct epoll_event ev;
    ev.events = events;
    ev.data.u32 = (uint32_t)(c - conns);
    if (epoll_ctl(epfd, op, c->fd, &ev) < 0 && op != EPOLL_CTL_DEL) die("epoll_ctl");
}

/* Close the socket with a reset (SO_LINGER 0): by then the WebSocket closing
 * handshake is done or not wanted, and a plain close would leave a TIME_WAIT
 * socket behind. Tens of thousands of those (E opens 10,000 connections, F
 * cycles thousands a second) make later connects and accepts slower, so
 * results would depend on the order servers and workloads ran in. */
static void conn_close(conn_t *c) {
    if (c->state == ST_FREE) return;
    struct linger lg = {1, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(c->fd); /* also removes it from epoll */
    c->fd = -1;
    c->state = ST_FREE;
    c->want_out = 0;
    c->close_sent = 0;
    c->in.off = c->in.len = 0;
    c->out.off = c->out.len = 0;
    c->frag_op = 0;
    c->frag_len = 0;
}

static void b64(const uint8_t *in, size_t n, char *out) {
    static const char t[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i, o = 0;
    for (i = 0; i + 2 < n; i += 3) {
        uint32_t v = (in[i] << 16) | (in[i + 1] << 8) | in[i + 2];
        out[o++] = t[(v >> 18) & 63];
        out[o++] = t[(v >> 12) & 63];
        out[o++] = t[(v >> 6) & 63];
        out[o++] = t[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = in[i] << 16;
        out[o++] = t[(v >> 18) & 63];
        out[o++] = t[(v >> 12) & 63];
        out[o++] = '=';
        out[o++] = '=';
    } else if (n - i == 2) {
        uint32_t v = (in[i] << 16) | (in[i + 1] << 8);
        out[o++] = t[(v >> 18) & 63];
        out[o++] = t[(v >> 12) & 63];
        out[o++] = t[(v >> 6) & 63];
        out[o++] = '=';
    }
    out[o] = 0;
}

static void build_request(void) {
    uint8_t key[16];
    char k64[32];
    for (int i = 0; i < 16; i++) key[i] = (uint8_t)rng();
    b64(key, 16, k64);
    char tmp[1024];
    int n = snprintf(tmp, sizeof tmp,
                     "GET %s HTTP/1.1\r\n"
                     "Host: %s:%d\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n"
                     "%s"
                     "\r\n",
                     opt_path, opt_host, opt_port, k64,
                     opt_deflate ? "Sec-WebSocket-Extensions: permessage-deflate; "
                                   "server_no_context_takeover; client_no_context_takeover\r\n"
                                 : "");
    request = strdup(tmp);
    request_len = (size_t)n;
}

/* Start a non-blocking connect on slot c. */
static void conn_start(conn_t *c) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket() failed (file descriptor limit?)");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->gen++;
    c->state = ST_CONNECTING;
    c->received = 0;
    struct sockaddr_in *to = opt_port2 && (c - conns) % 2 ? &server_addr2 : &server_addr;
    int r = connect(fd, (struct sockaddr *)to, sizeof *to);
    if (r < 0 && errno != EINPROGRESS) {
        note_error("connect: %s", strerror(errno));
        close(fd);
        c->fd = -1;
        c->state = ST_FREE;
        return;
    }
    ep_ctl(EPOLL_CTL_ADD, c, EPOLLIN | EPOLLOUT);
    c->want_out = 1;
}

/* Write as much of the output buffer as the socket takes. Returns -1 if the
 * connection failed (and was closed). */
static int stopping = 0; /* no new sends */
static void on_closed(conn_t *c, int clean);
static int conn_flush(conn_t *c) {
    while (c->out.len) {
        ssize_t n = send(c->fd, c->out.data + c->out.off, c->out.len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            if (errno == EINTR) continue;
            if (!stopping) note_error("send: %s", strerror(errno));
            on_closed(c, stopping);
            return -1;
        }
        buf_consume(&c->out, (size_t)n);
    }
    int want = c->out.len > 0 || c->state == ST_CONNECTING;
    if (want != c->want_out) {
        ep_ctl(EPOLL_CTL_MOD, c, want ? (EPOLLIN | EPOLLOUT) : EPOLLIN);
        c->want_out = want;
    }
    return 0;
}

static void mask_copy(uint8_t *dst, const uint8_t *src, size_t n, uint32_t key) {
    uint8_t k[4];
    memcpy(k, &key, 4);
    uint64_t k64 = (uint64_t)key | ((uint64_t)key << 32);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, src + i, 8);
        v ^= k64;
        memcpy(dst + i, &v, 8);
    }
    for (; i < n; i++) dst[i] = src[i] ^ k[i & 3];
}

/* Queue one masked frame (FIN set). Does not flush. */
static void ws_queue(conn_t *c, int opcode, const uint8_t *data, size_t n) {
    buf_reserve(&c->out, n + 14);
    uint8_t *p = c->out.data + c->out.off + c->out.len;
    size_t h = 0;
    p[h++] = (uint8_t)(0x80 | opcode);
    if (n < 126) {
        p[h++] = (uint8_t)(0x80 | n);
    } else if (n < 65536) {
        p[h++] = 0x80 | 126;
        p[h++] = (uint8_t)(n >> 8);
        p[h++] = (uint8_t)n;
    } else {
        p[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--) p[h++] = (uint8_t)((uint64_t)n >> (8 * i));
    }
    uint32_t key = rng();
    memcpy(p + h, &key, 4);
    h += 4;
    mask_copy(p + h, data, n, key);
    c->out.len += h + n;
}

static void ws_queue_close(conn_t *c) {
    static const uint8_t code[2] = {0x03, 0xe8}; /* 1000 */
    if (c->close_sent || c->state != ST_OPEN) return;
    ws_queue(c, 8, code, 2);
    c->close_sent = 1;
}

/* ------------------------------------------------------------------ modes */

enum { M_ECHO, M_LATENCY, M_BCAST, M_IDLE, M_HANDSHAKE };
static int mode;

static int measuring = 0; /* inside the measured window */
static uint64_t m_msgs = 0, m_bytes = 0;
static int open_count = 0;
static int ever_opened = 0;

/* latency */
static double *rtts = NULL;
static long rtt_n = 0, rtt_total = 0;

/* bcast */
static uint32_t *bc_ring = NULL; /* per broadcast: clients that have it */
static int bc_ring_n = 0;
static uint64_t bc_sent = 0, bc_done = 0;

static double lat_c0 = 0, lat_t0 = 0;
static void lat_begin(void) {
    mark("start");
    lat_c0 = cpu_s();
    lat_t0 = now_s();
}

/* handshake */
static uint64_t hs_done = 0;

static void send_payload(conn_t *c) {
    ws_queue(c, opt_binary ? 2 : 1, payload, opt_size);
}

static void on_open(conn_t *c) {
    open_count++;
    ever_opened++;
    switch (mode) {
    case M_ECHO:
        if (!stopping)
            for (int i = 0; i < opt_inflight; i++) send_payload(c);
        break;
    case M_LATENCY:
        if (opt_warmup_count == 0) lat_begin();
        c->t0_ns = now_ns();
        send_payload(c);
        break;
    case M_HANDSHAKE:
        ws_queue_close(c);
        break;
    default:
        break;
    }
}

static void bcast_send(void) {
    conn_t *c0 = &conns[0];
    if (c0->state != ST_OPEN || c0->close_sent) return;
    ws_queue(c0, 1, payload, opt_size);
    bc_sent++;
    if (conn_flush(c0) < 0) return;
}

/* --deflate: messages received compressed, and inflate checks */
static uint64_t m_compressed = 0, m_plain = 0;
static z_stream inflater;
static uint8_t inflate_out[1 << 16];

/* Inflate one single-frame compressed message (the server keeps no context,
 * so each message is a stream of its own); 0 when it inflates to SIZE bytes. */
static int check_inflate(const uint8_t *data, uint64_t len) {
    static const uint8_t tail[4] = {0, 0, 0xff, 0xff};
    if (inflateReset(&inflater) != Z_OK) return -1;
    inflater.next_out = inflate_out;
    inflater.avail_out = sizeof inflate_out;
    inflater.next_in = (uint8_t *)data;
    inflater.avail_in = (uInt)len;
    int rc = inflate(&inflater, Z_SYNC_FLUSH);
    if (rc != Z_OK && rc != Z_BUF_ERROR) return -1;
    inflater.next_in = (uint8_t *)tail;
    inflater.avail_in = 4;
    rc = inflate(&inflater, Z_SYNC_FLUSH);
    if (rc != Z_OK && rc != Z_BUF_ERROR) return -1;
    return sizeof inflate_out - inflater.avail_out == opt_size ? 0 : -1;
}

/* A whole data message arrived: len payload bytes on the wire, rsv1 set when
 * it was compressed. */
static void on_message(conn_t *c, int op, uint64_t len, int rsv1) {
    c->received++;
    if (opt_deflate) {
        if (rsv1) m_compressed++;
        else m_plain++;
    }
    switch (mode) {
    case M_ECHO:
        if ((!rsv1 && len != opt_size) || op != (opt_binary ? 2 : 1)) note_error("%s", "echo mismatch");
        if (measuring) {
            m_msgs++;
            m_bytes += len;
        }
        if (!stopping && !c->close_sent) send_payload(c);
        break;
    case M_LATENCY: {
        double us = (double)(now_ns() - c->t0_ns) / 1000.0;
        if (!rsv1 && len != opt_size) note_error("%s", "echo mismatch");
        rtt_total++;
        if (rtt_total > opt_warmup_count) rtts[rtt_n++] = us;
        if (rtt_total == opt_warmup_count) lat_begin();
        if (rtt_n < opt_count) {
            c->t0_ns = now_ns();
            send_payload(c);
        } else {
            stopping = 1;
        }
        break;
    }
    case M_BCAST: {
        if (measuring) {
            m_msgs++;
            m_bytes += len;
        }
        uint64_t v = c->received; /* this client now has broadcast v */
        uint32_t *slot = &bc_ring[v % (uint64_t)bc_ring_n];
        if (++*slot == (uint32_t)nconns) {
            *slot = 0;
            bc_done++;
            if (!stopping) bcast_send();
        }
        break;
    }
    default:
        break;
    }
}

static void on_closed(conn_t *c, int clean) {
    int was_open = c->state == ST_OPEN || c->state == ST_CLOSING;
    if (was_open) open_count--;
    if (mode == M_HANDSHAKE) {
        if (clean) {
            if (measuring) hs_done++;
        } else {
            note_error("%s", "handshake cycle failed");
        }
        conn_close(c);
        if (!stopping) conn_start(c);
        return;
    }
    if (!clean && !stopping) note_error("%s", "connection lost");
    conn_close(c);
}

/* Parse the HTTP response head. Returns 1 when open, 0 if incomplete, -1 bad. */
static int parse_handshake(conn_t *c) {
    uint8_t *p = c->in.data + c->in.off;
    size_t n = c->in.len;
    uint8_t *end = memmem(p, n, "\r\n\r\n", 4);
    if (!end) return n > 65536 ? -1 : 0;
    if (n < 12 || memcmp(p, "HTTP/1.1 101", 12) != 0) return -1;
    if (opt_deflate) {
        /* the answer must accept permessage-deflate (any letter case) */
        size_t hn = (size_t)(end - p);
        int found = 0;
        for (size_t i = 0; i + 18 <= hn && !found; i++)
            found = strncasecmp((const char *)p + i, "permessage-deflate", 18) == 0;
        if (!found) {
            note_error("%s", "server did not accept permessage-deflate");
            return -1;
        }
    }
    buf_consume(&c->in, (size_t)(end - p) + 4);
    return 1;
}

/* Parse and handle complete frames. Returns -1 if the connection ended. */
static int parse_frames(conn_t *c) {
    while (c->in.len >= 2) {
        uint8_t *p = c->in.data + c->in.off;
        size_t n = c->in.len;
        int fin = p[0] & 0x80;
        int rsv1 = (p[0] & 0x40) != 0;
        int op = p[0] & 0x0f;
        int masked = p[1] & 0x80;
        uint64_t len = p[1] & 0x7f;
        size_t h = 2;
        if (len == 126) {
            if (n < 4) break;
            len = ((uint64_t)p[2] << 8) | p[3];
            h = 4;
        } else if (len == 127) {
            if (n < 10) break;
            len = 0;
            for (int i = 0; i < 8; i++) len = (len << 8) | p[2 + i];
            h = 10;
        }
        if (masked) h += 4;
        if (len > (1u << 30)) {
            note_error("%s", "frame too large");
            on_closed(c, 0);
            return -1;
        }
        if (n < h + len) {
            buf_reserve(&c->in, h + len - n + 4096); /* read the rest in big chunks */
            break;
        }
        if (rsv1 && (!opt_deflate || op == 0 || op >= 8)) {
            note_error("%s", "RSV1 set where no extension allows it");
            on_closed(c, 0);
            return -1;
        }
        if (rsv1 && fin && !masked && check_inflate(p + h, len) != 0) {
            note_error("%s", "compressed message did not inflate to SIZE bytes");
            on_closed(c, 0);
            return -1;
        }
        buf_consume(&c->in, h + (size_t)len);
        switch (op) {
        case 0:
            c->frag_len += len;
            if (fin) {
                int fop = c->frag_op;
                c->frag_op = 0;
                on_message(c, fop, c->frag_len, c->frag_rsv1);
            }
            break;
        case 1:
        case 2:
            if (fin) {
                on_message(c, op, len, rsv1);
            } else {
                c->frag_op = op;
                c->frag_len = len;
                c->frag_rsv1 = rsv1;
            }
            break;
        case 8: /* close */
            if (mode == M_HANDSHAKE || c->close_sent) {
                on_closed(c, 1);
                return -1;
            }
            /* server-initiated close: answer it, then drop */
            ws_queue_close(c);
            if (conn_flush(c) == 0) on_closed(c, stopping);
            return -1;
        case 9: { /* ping: answer with a pong carrying the same payload */
            uint8_t tmp[125];
            size_t m = len > 125 ? 125 : (size_t)len;
            memcpy(tmp, p + h, m);
            if (masked) {
                uint8_t *k = p + h - 4;
                for (size_t i = 0; i < m; i++) tmp[i] ^= k[i & 3];
            }
            ws_queue(c, 10, tmp, m);
            break;
        }
        case 10:
            break;
        default:
            note_error("%s", "bad opcode");
            on_closed(c, 0);
            return -1;
        }
        if (c->state == ST_FREE) return -1;
    }
    return 0;
}

static void on_readable(conn_t *c) {
    for (int rounds = 0; rounds < 4; rounds++) {
        if (c->in.cap - c->in.off - c->in.len < 4096) buf_reserve(&c->in, 16384);
        size_t space = c->in.cap - c->in.off - c->in.len;
        ssize_t n = recv(c->fd, c->in.data + c->in.off + c->in.len, space, 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            if (errno == EINTR) continue;
            if (!stopping) note_error("recv: %s", strerror(errno));
            on_closed(c, stopping);
            return;
        }
        if (n == 0) {
            /* EOF: clean if we were closing or in a handshake cycle that
             * already exchanged close frames */
            on_closed(c, c->close_sent && (mode != M_HANDSHAKE));
            return;
        }
        c->in.len += (size_t)n;
        if (c->state == ST_HANDSHAKE) {
            int r = parse_handshake(c);
            if (r < 0) {
                note_error("%s", "handshake rejected");
                on_closed(c, 0);
                return;
            }
            if (r == 0) continue;
            c->state = ST_OPEN;
            on_open(c);
        }
        if (c->state == ST_OPEN && parse_frames(c) < 0) return;
        if ((size_t)n < space) break; /* drained */
    }
    if (c->state != ST_FREE) conn_flush(c);
}

static void on_writable(conn_t *c) {
    if (c->state == ST_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            note_error("connect: %s", strerror(err));
            on_closed(c, 0);
            return;
        }
        c->state = ST_HANDSHAKE;
        buf_reserve(&c->out, request_len);
        memcpy(c->out.data + c->out.off + c->out.len, request, request_len);
        c->out.len += request_len;
    }
    conn_flush(c);
}

/* One pass of the event loop, waiting at most timeout_ms. */
static int stdin_event = 0;
static void loop_once(int timeout_ms) {
    struct epoll_event evs[512];
    int n = epoll_wait(epfd, evs, 512, timeout_ms);
    if (n < 0) {
        if (errno == EINTR) return;
        die("epoll_wait");
    }
    for (int i = 0; i < n; i++) {
        uint32_t id = evs[i].data.u32;
        if (id == UINT32_MAX) {
            stdin_event = 1;
            continue;
        }
        conn_t *c = &conns[id];
        if (c->state == ST_FREE) continue;
        uint32_t gen = c->gen; /* a handshake slot may reconnect: then the event is stale */
        uint32_t e = evs[i].events;
        if (e & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
            if (c->state == ST_CONNECTING) {
                on_writable(c); /* reports the connect error */
                if (c->state == ST_FREE || c->gen != gen) continue;
            }
            on_readable(c);
            if (c->state == ST_FREE || c->gen != gen) continue;
        }
        if (e & EPOLLOUT) on_writable(c);
    }
}

static double deadline = 0;
static void check_deadline(void) {
    if (now_s() > deadline) die("timeout");
}

/* Open all nconns connections, at most opt_pending handshakes at a time. */
static double open_all(void) {
    double t0 = now_s();
    int next = 0;
    while (1) {
        int pending = 0;
        for (int i = 0; i < next; i++)
            if (conns[i].state == ST_CONNECTING || conns[i].state == ST_HANDSHAKE) pending++;
        while (next < nconns && pending < opt_pending) {
            conn_start(&conns[next++]);
            pending++;
        }
        if (next == nconns && pending == 0) break;
        loop_once(50);
        check_deadline();
    }
    if (open_count < nconns) {
        char msg[256];
        snprintf(msg, sizeof msg, "only %d of %d connections opened (%s)", open_count, nconns,
                 first_error);
        die(msg);
    }
    return now_s() - t0;
}

/* Run the loop until t_end. */
static void run_until(double t_end) {
    double t;
    while ((t = now_s()) < t_end) {
        int ms = (int)((t_end - t) * 1000) + 1;
        loop_once(ms > 100 ? 100 : ms);
        check_deadline();
    }
}

/* Close every open connection with a close frame; wait at most `wait` s. */
static void close_all(double wait) {
    stopping = 1;
    for (int i = 0; i < nconns; i++) {
        conn_t *c = &conns[i];
        if (c->state == ST_OPEN) {
            ws_queue_close(c);
            conn_flush(c);
        } else if (c->state != ST_FREE) {
            conn_close(c);
        }
    }
    double t_end = now_s() + wait;
    while (now_s() < t_end) {
        int left = 0;
        for (int i = 0; i < nconns; i++) left += conns[i].state != ST_FREE;
        if (!left) break;
        loop_once(20);
    }
    for (int i = 0; i < nconns; i++) conn_close(&conns[i]);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, long n, double p) {
    if (n == 0) return 0;
    long i = (long)(p / 100.0 * (double)(n - 1) + 0.5);
    if (i >= n) i = n - 1;
    return v[i];
}

/* ------------------------------------------------------------------- main */

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen MODE --port P [options]\n"
            "modes: echo | latency | bcast | idle | handshake\n"
            "  --host H (127.0.0.1) --port P --path /\n"
            "  --port2 P2: odd-numbered connections go to P2 (two nodes)\n"
            "  --conns N --inflight K --size BYTES --binary|--text\n"
            "  --duration S --warmup S --timeout S\n"
            "  latency: --count M --warmup-count W\n"
            "  bcast:   --window W [--deflate]      idle: --hold S\n"
            "  handshake: --concurrency C   opening many: --pending P\n");
    exit(64);
}

int main(int argc, char **argv) {
    if (argc < 2) usage();
    const char *m = argv[1];
    if (!strcmp(m, "echo")) mode = M_ECHO;
    else if (!strcmp(m, "latency")) mode = M_LATENCY;
    else if (!strcmp(m, "bcast")) mode = M_BCAST;
    else if (!strcmp(m, "idle")) mode = M_IDLE;
    else if (!strcmp(m, "handshake")) mode = M_HANDSHAKE;
    else usage();
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (!strcmp(a, name) && v && (i++, 1))
        if (ARG("--host")) opt_host = v;
        else if (ARG("--port")) opt_port = atoi(v);
        else if (ARG("--port2")) opt_port2 = atoi(v);
        else if (ARG("--path")) opt_path = v;
        else if (ARG("--conns")) opt_conns = atoi(v);
        else if (ARG("--inflight")) opt_inflight = atoi(v);
        else if (ARG("--size")) opt_size = (size_t)atol(v);
        else if (ARG("--duration")) opt_duration = atof(v);
        else if (ARG("--warmup")) opt_warmup = atof(v);
        else if (ARG("--count")) opt_count = atol(v);
        else if (ARG("--warmup-count")) opt_warmup_count = atol(v);
        else if (ARG("--window")) opt_window = atoi(v);
        else if (ARG("--concurrency")) opt_concurrency = atoi(v);
        else if (ARG("--pending")) opt_pending = atoi(v);
        else if (ARG("--hold")) opt_hold = atof(v);
        else if (ARG("--timeout")) opt_timeout = atof(v);
        else if (ARG("--seed")) rng_state = (uint32_t)strtoul(v, NULL, 0) | 1u;
        else if (!strcmp(a, "--binary")) opt_binary = 1;
        else if (!strcmp(a, "--text")) opt_binary = 0;
        else if (!strcmp(a, "--deflate")) opt_deflate = 1;
        else usage();
#undef ARG
    }
    if (opt_port <= 0 || opt_conns < 1 || opt_inflight < 1 || opt_window < 1 ||
        opt_concurrency < 1 || opt_pending < 1 || opt_count < 1)
        usage();
    rng_state ^= (uint32_t)getpid() * 2654435761u;
    if (!rng_state) rng_state = 1;
    signal(SIGPIPE, SIG_IGN);

    /* as many descriptors as allowed */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    memset(&server_addr, 0, sizeof server_addr);
    server_addr.sin_family = AF_INET;
    server_addr.sin_port = htons((uint16_t)opt_port);
    if (inet_pton(AF_INET, opt_host, &server_addr.sin_addr) != 1) die("--host must be an IPv4 address");
    server_addr2 = server_addr;
    server_addr2.sin_port = htons((uint16_t)opt_port2);
    build_request();
    if (inflateInit2(&inflater, -15) != Z_OK) die("inflateInit2");

    payload = malloc(opt_size ? opt_size : 1);
    for (size_t i = 0; i < opt_size; i++) payload[i] = (uint8_t)('a' + i % 26);

    switch (mode) {
    case M_LATENCY: nconns = 1; break;
    case M_HANDSHAKE: nconns = opt_concurrency; break;
    default: nconns = opt_conns;
    }
    conns = calloc((size_t)nconns, sizeof(conn_t));
    for (int i = 0; i < nconns; i++) conns[i].fd = -1;
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) die("epoll_create1");

    if (opt_timeout <= 0) opt_timeout = opt_warmup + opt_duration + 60 + (mode == M_IDLE ? opt_hold : 0);
    deadline = now_s() + opt_timeout;

    if (mode == M_ECHO) {
        double t_open = open_all();
        run_until(now_s() + opt_warmup);
        double c0 = cpu_s(), t0 = now_s();
        measuring = 1;
        mark("start");
        run_until(t0 + opt_duration);
        measuring = 0;
        double c1 = cpu_s(), t1 = now_s();
        mark("end");
        int still_open = open_count;
        close_all(2.0);
        double w = t1 - t0;
        printf("{\"mode\": \"echo\", \"conns\": %d, \"inflight\": %d, \"size\": %zu, \"binary\": %s, "
               "\"open_s\": %.3f, \"window_s\": %.3f, \"msgs\": %llu, \"msgs_per_s\": %.1f, "
               "\"mb_per_s\": %.3f, \"cpu_s\": %.3f, \"cpu_share\": %.4f, \"open_at_end\": %d, "
               "\"errors\": %llu, \"first_error\": \"%s\"}\n",
               nconns, opt_inflight, opt_size, opt_binary ? "true" : "false", t_open, w,
               (unsigned long long)m_msgs, m_msgs / w, m_bytes / w / 1e6, c1 - c0, (c1 - c0) / w,
               still_open, (unsigned long long)errors, first_error);
    } else if (mode == M_LATENCY) {
        rtts = calloc((size_t)opt_count, sizeof(double));
        open_all();
        while (!stopping) {
            loop_once(100);
            check_deadline();
            if (open_count == 0) die("connection lost");
        }
        double c1 = cpu_s(), t1 = now_s(), c0 = lat_c0, t0 = lat_t0;
        mark("end");
        close_all(2.0);
        double sum = 0, mx = 0;
        for (long i = 0; i < rtt_n; i++) {
            sum += rtts[i];
            if (rtts[i] > mx) mx = rtts[i];
        }
        qsort(rtts, (size_t)rtt_n, sizeof(double), cmp_double);
        double w = t1 - t0;
        printf("{\"mode\": \"latency\", \"size\": %zu, \"count\": %ld, \"p50_us\": %.1f, "
               "\"p90_us\": %.1f, \"p99_us\": %.1f, \"mean_us\": %.1f, \"max_us\": %.1f, "
               "\"window_s\": %.3f, \"cpu_s\": %.3f, \"cpu_share\": %.4f, \"errors\": %llu, "
               "\"first_error\": \"%s\"}\n",
               opt_size, rtt_n, pct(rtts, rtt_n, 50), pct(rtts, rtt_n, 90), pct(rtts, rtt_n, 99),
               rtt_n ? sum / rtt_n : 0, mx, w, c1 - c0, (c1 - c0) / w, (unsigned long long)errors,
               first_error);
    } else if (mode == M_BCAST) {
        bc_ring_n = opt_window * 2 + 2;
        bc_ring = calloc((size_t)bc_ring_n, sizeof(uint32_t));
        double t_open = open_all();
        for (int i = 0; i < opt_window; i++) bcast_send();
        run_until(now_s() + opt_warmup);
        double c0 = cpu_s(), t0 = now_s();
        uint64_t d0 = bc_done;
        measuring = 1;
        mark("start");
        run_until(t0 + opt_duration);
        measuring = 0;
        double c1 = cpu_s(), t1 = now_s();
        uint64_t d1 = bc_done;
        mark("end");
        int still_open = open_count;
        close_all(3.0);
        double w = t1 - t0;
        printf("{\"mode\": \"bcast\", \"conns\": %d, \"window\": %d, \"size\": %zu, \"open_s\": %.3f, "
               "\"window_s\": %.3f, \"deliveries\": %llu, \"deliveries_per_s\": %.1f, "
               "\"broadcasts_per_s\": %.2f, \"cpu_s\": %.3f, \"cpu_share\": %.4f, "
               "\"open_at_end\": %d, \"deflate\": %d, \"compressed\": %llu, \"plain\": %llu, "
               "\"errors\": %llu, \"first_error\": \"%s\"}\n",
               nconns, opt_window, opt_size, t_open, w, (unsigned long long)m_msgs, m_msgs / w,
               (d1 - d0) / w, c1 - c0, (c1 - c0) / w, still_open, opt_deflate,
               (unsigned long long)m_compressed, (unsigned long long)m_plain,
               (unsigned long long)errors, first_error);
    } else if (mode == M_IDLE) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
        double t_open = open_all();
        printf("READY %d %.3f\n", open_count, t_open);
        fflush(stdout);
        epoll_ctl(epfd, EPOLL_CTL_ADD, 0, &ev);
        double t_end = now_s() + opt_hold;
        while (!stdin_event && now_s() < t_end) {
            loop_once(100);
            check_deadline();
        }
        int held = open_count;
        epoll_ctl(epfd, EPOLL_CTL_DEL, 0, NULL);
        stopping = 1;
        for (int i = 0; i < nconns; i++) conn_close(&conns[i]); /* plain TCP close */
        printf("{\"mode\": \"idle\", \"conns\": %d, \"open_s\": %.3f, \"held_at_end\": %d, "
               "\"errors\": %llu, \"first_error\": \"%s\"}\n",
               nconns, t_open, held, (unsigned long long)errors, first_error);
    } else if (mode == M_HANDSHAKE) {
        for (int i = 0; i < nconns; i++) conn_start(&conns[i]);
        run_until(now_s() + opt_warmup);
        uint64_t e0 = errors;
        double c0 = cpu_s(), t0 = now_s();
        measuring = 1;
        mark("start");
        run_until(t0 + opt_duration);
        measuring = 0;
        double c1 = cpu_s(), t1 = now_s();
        mark("end");
        stopping = 1;
        double t_end = now_s() + 2.0;
        while (now_s() < t_end) { /* let the cycles in progress finish */
            int left = 0;
            for (int i = 0; i < nconns; i++) left += conns[i].state != ST_FREE;
            if (!left) break;
            loop_once(20);
        }
        for (int i = 0; i < nconns; i++) conn_close(&conns[i]);
        double w = t1 - t0;
        printf("{\"mode\": \"handshake\", \"concurrency\": %d, \"window_s\": %.3f, "
               "\"handshakes\": %llu, \"handshakes_per_s\": %.1f, \"cpu_s\": %.3f, "
               "\"cpu_share\": %.4f, \"errors\": %llu, \"errors_in_window\": %llu, "
               "\"first_error\": \"%s\"}\n",
               nconns, w, (unsigned long long)hs_done, hs_done / w, c1 - c0, (c1 - c0) / w,
               (unsigned long long)errors, (unsigned long long)(errors - e0), first_error);
    }
    fflush(stdout);
    return 0;
}
