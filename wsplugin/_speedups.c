/*
 * wsplugin._speedups: the WebSocket frame codec (RFC 6455) in C.
 *
 * The same API, events, errors and close codes as the pure-Python
 * wsplugin/_pycodec.py, which is the reference: read its docstrings for the
 * semantics; the tests fuzz the two against each other.  docs/codec.md
 * explains the design.  Written against the CPython C API only (no Cython),
 * so building it needs nothing but a C compiler; setup.py makes it optional.
 *
 * A FrameReader is a sans-I/O state machine: feed() takes the bytes of one
 * read and returns a list of event tuples.  Payload is unmasked straight
 * into the bytes object that becomes the message (grown with
 * _PyBytes_Resize), UTF-8 is validated as it arrives, and only a cut frame
 * header (at most 13 bytes) is kept between feeds.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#define OP_CONTINUATION 0x0
#define OP_TEXT 0x1
#define OP_BINARY 0x2
#define OP_CLOSE 0x8
#define OP_PING 0x9
#define OP_PONG 0xA
#define EV_FRAGMENT 0x10
#define EV_ERROR 0x20

#define CLOSE_PROTOCOL_ERROR 1002
#define CLOSE_INVALID_PAYLOAD 1007
#define CLOSE_MESSAGE_TOO_BIG 1009

#define MAX_LENGTH 0x7FFFFFFFFFFFFFFFULL
/* Reserve up to this much of a frame's announced payload ahead of its
 * arrival: a 64 KiB message cut across two reads is then allocated once. */
#define AHEAD 65536
/* Text payloads up to this size are unmasked on the stack before decoding. */
#define STACK_TEXT 1024

#define R_UTF8 "invalid UTF-8 in a text message"
#define R_UTF8_END "text message ends inside a UTF-8 code point"
#define R_MINIMAL "frame length not in its shortest encoding"
#define R_TOP_BIT "frame length with the most significant bit set"

/* ------------------------------------------------------------------ */
/* UTF-8 validation (RFC 3629), incremental and failing at the first byte
 * that no valid text can continue with, as RFC 6455 section 8.1 asks.
 * State 0 is "between code points"; otherwise it packs the continuation
 * bytes still needed and the range the next one must fall in. */

#define UTF8_REJECT 0xFFFFFFFFu

static uint32_t
utf8_scan(uint32_t state, const unsigned char *s, Py_ssize_t n)
{
    const unsigned char *e = s + n;
    unsigned need = state >> 16;
    unsigned lo = (state >> 8) & 0xFF;
    unsigned hi = state & 0xFF;

    while (s < e) {
        unsigned c;
        if (need == 0) {
            /* ASCII runs, 8 bytes at a time */
            while (e - s >= 8) {
                uint64_t w;
                memcpy(&w, s, 8);
                if (w & 0x8080808080808080ULL)
                    break;
                s += 8;
            }
            if (s == e)
                break;
            c = *s++;
            if (c < 0x80)
                continue;
            if (c < 0xC2)
                return UTF8_REJECT; /* continuation byte, or overlong C0/C1 */
            if (c < 0xE0) {
                need = 1;
                lo = 0x80;
                hi = 0xBF;
            }
            else if (c < 0xF0) {
                need = 2;
                lo = c == 0xE0 ? 0xA0 : 0x80; /* overlong */
                hi = c == 0xED ? 0x9F : 0xBF; /* surrogates */
            }
            else if (c < 0xF5) {
                need = 3;
                lo = c == 0xF0 ? 0x90 : 0x80; /* overlong */
                hi = c == 0xF4 ? 0x8F : 0xBF; /* above U+10FFFF */
            }
            else {
                return UTF8_REJECT;
            }
        }
        else {
            c = *s++;
            if (c < lo || c > hi)
                return UTF8_REJECT;
            need--;
            lo = 0x80;
            hi = 0xBF;
        }
    }
    return need ? (need << 16 | lo << 8 | hi) : 0;
}

/* ------------------------------------------------------------------ */
/* Masking (RFC 6455 section 5.3): dst = src XOR mask, starting `phase`
 * bytes into the mask.  dst may be src. */

static void
xor_copy(unsigned char *dst, const unsigned char *src, Py_ssize_t n,
         const unsigned char *mask, unsigned phase)
{
    unsigned char m[8];
    uint64_t k;
    Py_ssize_t i = 0;
    int j;

    for (j = 0; j < 8; j++)
        m[j] = mask[(phase + j) & 3];
    memcpy(&k, m, 8);
    for (; i + 16 <= n; i += 16) {
        uint64_t a, b;
        memcpy(&a, src + i, 8);
        memcpy(&b, src + i + 8, 8);
        a ^= k;
        b ^= k;
        memcpy(dst + i, &a, 8);
        memcpy(dst + i + 8, &b, 8);
    }
    for (; i < n; i++)
        dst[i] = src[i] ^ m[i & 7];
}

/* ------------------------------------------------------------------ */
/* The reader */

typedef struct {
    PyObject_HEAD
    unsigned long long max_frame;
    unsigned long long max_message;
    char validate;
    char by_frame;
    char require_mask;
    char broken;     /* an exception (MemoryError) left it half-way */
    char ready;      /* __init__ ran */
    PyObject *error; /* the ERROR event, once failed */
    unsigned char head[14];
    int head_len;
    /* current frame; remaining is -1 between frames */
    long long remaining;
    int opcode;
    int fin;
    int masked;
    unsigned char mask[4];
    unsigned phase;
    /* current message */
    int in_message;
    int msg_opcode;
    int utf8_on;
    uint32_t utf8_state;
    unsigned long long declared;
    PyObject *msg; /* bytes object grown as payload arrives, or NULL */
    Py_ssize_t msg_len;
    Py_ssize_t msg_cap;
    /* current control frame */
    unsigned char ctrl[125];
    int ctrl_len;
} FrameReader;

typedef struct {
    int opcode;
    int fin;
    int masked;
    unsigned char mask[4];
    unsigned long long length;
} Header;

static int
append_steal(PyObject *events, PyObject *item)
{
    int rc;
    if (item == NULL)
        return -1;
    rc = PyList_Append(events, item);
    Py_DECREF(item);
    return rc;
}

static PyObject *
pair(long kind, PyObject *value) /* steals value */
{
    PyObject *t;
    if (value == NULL)
        return NULL;
    t = PyTuple_New(2);
    if (t == NULL) {
        Py_DECREF(value);
        return NULL;
    }
    PyTuple_SET_ITEM(t, 0, PyLong_FromLong(kind)); /* small ints: cached */
    PyTuple_SET_ITEM(t, 1, value);
    return t;
}

static void
drop_message(FrameReader *self)
{
    Py_CLEAR(self->msg);
    self->msg_len = 0;
    self->msg_cap = 0;
}

/* Record the ERROR event and append it.  Returns 0, or -1 on an exception. */
static int
fail(FrameReader *self, PyObject *events, int code, PyObject *reason)
{
    PyObject *ev;
    if (reason == NULL)
        return -1;
    ev = Py_BuildValue("(iiN)", EV_ERROR, code, reason);
    if (ev == NULL)
        return -1;
    Py_XSETREF(self->error, ev);
    drop_message(self);
    self->ctrl_len = 0;
    self->head_len = 0;
    self->utf8_on = 0;
    return PyList_Append(events, ev);
}

static int
fail_str(FrameReader *self, PyObject *events, int code, const char *reason)
{
    return fail(self, events, code, PyUnicode_FromString(reason));
}

/* What is wrong with a frame's first two bytes (Autobahn's checks, in its
 * order; each a protocol error), as a new str, or Py_None (borrowed). */
static PyObject *
start_problem(FrameReader *self, unsigned b0, unsigned b1)
{
    unsigned rsv = (b0 >> 4) & 7;
    unsigned opcode = b0 & 0xF;
    if (rsv)
        return PyUnicode_FromFormat(
            "reserved bits set (RSV=%u) without a negotiated extension", rsv);
    if (self->require_mask && !(b1 & 0x80))
        return PyUnicode_FromString("unmasked client frame");
    if (opcode > 7) {
        unsigned length = b1 & 0x7F;
        if (!(b0 & 0x80))
            return PyUnicode_FromString("fragmented control frame");
        if (length > 125)
            return PyUnicode_FromString("control frame payload over 125 bytes");
        if (opcode > OP_PONG)
            return PyUnicode_FromFormat("reserved control opcode %u", opcode);
        if (opcode == OP_CLOSE && length == 1)
            return PyUnicode_FromString("close frame with a 1-byte payload");
    }
    else if (opcode > OP_BINARY) {
        return PyUnicode_FromFormat("reserved data opcode %u", opcode);
    }
    else if (opcode == OP_CONTINUATION) {
        if (!self->in_message)
            return PyUnicode_FromString(
                "continuation frame outside a fragmented message");
    }
    else if (self->in_message) {
        return PyUnicode_FromString("new data frame inside a fragmented message");
    }
    return Py_None;
}

/* Parse a header from p[0:avail].  Returns its size, 0 when more bytes are
 * needed, -1 after appending an ERROR event, -2 on an exception. */
static Py_ssize_t
parse_header(FrameReader *self, const unsigned char *p, Py_ssize_t avail,
             PyObject *events, Header *h)
{
    PyObject *problem;
    unsigned len1;
    Py_ssize_t size;

    if (avail < 2)
        return 0;
    problem = start_problem(self, p[0], p[1]);
    if (problem != Py_None) {
        if (problem == NULL || fail(self, events, CLOSE_PROTOCOL_ERROR, problem))
            return -2;
        return -1;
    }
    len1 = p[1] & 0x7F;
    h->masked = p[1] & 0x80;
    size = len1 < 126 ? 2 : len1 == 126 ? 4 : 10;
    if (h->masked)
        size += 4;
    if (avail < size)
        return 0;
    if (len1 == 126) {
        h->length = (unsigned long long)p[2] << 8 | p[3];
        if (h->length < 126)
            return fail_str(self, events, CLOSE_PROTOCOL_ERROR, R_MINIMAL) ? -2 : -1;
    }
    else if (len1 == 127) {
        int i;
        h->length = 0;
        for (i = 2; i < 10; i++)
            h->length = h->length << 8 | p[i];
        if (h->length > MAX_LENGTH)
            return fail_str(self, events, CLOSE_PROTOCOL_ERROR, R_TOP_BIT) ? -2 : -1;
        if (h->length < 65536)
            return fail_str(self, events, CLOSE_PROTOCOL_ERROR, R_MINIMAL) ? -2 : -1;
    }
    else {
        h->length = len1;
    }
    if (h->masked)
        memcpy(h->mask, p + size - 4, 4);
    else
        memset(h->mask, 0, 4);
    h->opcode = p[0] & 0xF;
    h->fin = (p[0] & 0x80) != 0;
    return size;
}

/* The text of a whole payload that failed to decode: why it is not UTF-8. */
static const char *
utf8_problem(const unsigned char *s, Py_ssize_t n)
{
    return utf8_scan(0, s, n) == UTF8_REJECT ? R_UTF8 : R_UTF8_END;
}

/* Emit a whole single-frame data message found complete in the input.
 * Returns 0, or -1 on an exception (an ERROR event returns 0). */
static int
whole_message(FrameReader *self, PyObject *events, const Header *h,
              const unsigned char *src)
{
    Py_ssize_t n = (Py_ssize_t)h->length;
    PyObject *value;

    if (h->opcode == OP_BINARY) {
        value = PyBytes_FromStringAndSize(NULL, n);
        if (value == NULL)
            return -1;
        if (h->masked)
            xor_copy((unsigned char *)PyBytes_AS_STRING(value), src, n, h->mask, 0);
        else
            memcpy(PyBytes_AS_STRING(value), src, n);
    }
    else {
        unsigned char stack[STACK_TEXT];
        unsigned char *buf = stack;
        const unsigned char *text = src;
        if (h->masked) {
            if (n > STACK_TEXT) {
                buf = PyMem_Malloc(n);
                if (buf == NULL) {
                    PyErr_NoMemory();
                    return -1;
                }
            }
            xor_copy(buf, src, n, h->mask, 0);
            text = buf;
        }
        value = PyUnicode_DecodeUTF8((const char *)text, n,
                                     self->validate ? NULL : "replace");
        if (value == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
            int rc;
            PyErr_Clear();
            rc = fail_str(self, events, CLOSE_INVALID_PAYLOAD, utf8_problem(text, n));
            if (buf != stack)
                PyMem_Free(buf);
            return rc;
        }
        if (buf != stack)
            PyMem_Free(buf);
        if (value == NULL)
            return -1;
    }
    return append_steal(events, pair(h->opcode, value));
}

/* Room for `need` payload bytes in the message buffer.  `bound` is where
 * the buffer will end if known (the end of a final frame, or of any frame
 * in frame-by-frame mode), else 0; `ahead` is the rest of the frame. */
static int
reserve(FrameReader *self, Py_ssize_t need, unsigned long long bound,
        unsigned long long ahead)
{
    unsigned long long cap;
    if (need <= self->msg_cap)
        return 0;
    /* grow by half, and take up to AHEAD of this frame's announced rest */
    cap = (unsigned long long)self->msg_cap + (self->msg_cap >> 1);
    if (cap < (unsigned long long)need)
        cap = need;
    if (ahead > AHEAD)
        ahead = AHEAD;
    if (cap < (unsigned long long)need + ahead)
        cap = (unsigned long long)need + ahead;
    if (bound && cap > bound)
        cap = bound;
    if (self->max_message && cap > self->max_message && !self->by_frame)
        cap = self->max_message;
    if (cap < (unsigned long long)need) /* cannot happen; belt and braces */
        cap = need;
    if (cap > (unsigned long long)PY_SSIZE_T_MAX) {
        PyErr_NoMemory();
        return -1;
    }
    if (self->msg == NULL) {
        self->msg = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)cap);
        if (self->msg == NULL)
            goto nomem;
    }
    /* _PyBytes_Resize is documented C API ("only use this to build up a
     * brand new bytes object"), which is what this buffer is: nothing else
     * sees it until it is complete.  It lets the message grow in place and
     * be handed over without a copy. */
    else if (_PyBytes_Resize(&self->msg, (Py_ssize_t)cap) < 0) {
        goto nomem;
    }
    self->msg_cap = (Py_ssize_t)cap;
    return 0;
nomem:
    self->msg = NULL;
    self->msg_len = 0;
    self->msg_cap = 0;
    return -1;
}

/* The message buffer as a bytes object of exactly its length; resets it. */
static PyObject *
take_message(FrameReader *self)
{
    PyObject *b = self->msg;
    Py_ssize_t n = self->msg_len;
    self->msg = NULL;
    self->msg_len = 0;
    self->msg_cap = 0;
    if (b == NULL)
        return PyBytes_FromStringAndSize(NULL, 0);
    if (PyBytes_GET_SIZE(b) != n && _PyBytes_Resize(&b, n) < 0)
        return NULL;
    return b;
}

/* The current frame's payload is complete: emit what it finishes.
 * Returns 1 to go on, 0 after an ERROR event, -1 on an exception. */
static int
end_frame(FrameReader *self, PyObject *events)
{
    int fin = self->fin;
    self->remaining = -1;
    if (self->opcode > 7) {
        PyObject *payload = PyBytes_FromStringAndSize((const char *)self->ctrl,
                                                      self->ctrl_len);
        self->ctrl_len = 0;
        return append_steal(events, pair(self->opcode, payload)) ? -1 : 1;
    }
    if (fin && self->utf8_on && self->utf8_state != 0)
        return fail_str(self, events, CLOSE_INVALID_PAYLOAD, R_UTF8_END) ? -1 : 0;
    if (self->by_frame) {
        PyObject *ev, *payload = take_message(self);
        if (payload == NULL)
            return -1;
        ev = Py_BuildValue("(iiNO)", EV_FRAGMENT, self->msg_opcode, payload,
                           fin ? Py_True : Py_False);
        if (append_steal(events, ev))
            return -1;
    }
    else if (fin) {
        PyObject *payload;
        if (self->msg_opcode == OP_BINARY) {
            payload = take_message(self);
        }
        else {
            /* valid when validated; otherwise bad bytes become U+FFFD */
            payload = PyUnicode_DecodeUTF8(
                self->msg ? PyBytes_AS_STRING(self->msg) : "", self->msg_len,
                "replace");
            drop_message(self);
        }
        if (append_steal(events, pair(self->msg_opcode, payload)))
            return -1;
    }
    if (fin) {
        self->in_message = 0;
        self->declared = 0;
        self->utf8_on = 0;
    }
    return 1;
}

static PyObject *
FrameReader_feed(FrameReader *self, PyObject *arg)
{
    Py_buffer view;
    const unsigned char *data;
    Py_ssize_t pos = 0, end;
    PyObject *events;

    if (self->error != NULL) {
        PyErr_Format(PyExc_RuntimeError,
                     "this FrameReader failed with close code %S; it takes no "
                     "more input (fail the connection)",
                     PyTuple_GET_ITEM(self->error, 1));
        return NULL;
    }
    if (self->broken || !self->ready) {
        PyErr_SetString(PyExc_RuntimeError,
                        self->ready ? "this FrameReader stopped on an exception; "
                                      "it takes no more input (fail the connection)"
                                    : "FrameReader.__init__ was not called");
        return NULL;
    }
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    events = PyList_New(0);
    if (events == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    data = view.buf;
    end = view.len;

    while (pos < end) {
        Header h;
        Py_ssize_t size;

        if (self->remaining >= 0) {
            /* inside a frame: take what there is of its payload */
            Py_ssize_t take = end - pos;
            if ((long long)take > self->remaining)
                take = (Py_ssize_t)self->remaining;
            if (self->opcode > 7) {
                unsigned char *dst = self->ctrl + self->ctrl_len;
                if (self->masked)
                    xor_copy(dst, data + pos, take, self->mask, self->phase);
                else
                    memcpy(dst, data + pos, take);
                self->ctrl_len += (int)take;
            }
            else {
                unsigned char *dst;
                unsigned long long rest = (unsigned long long)self->remaining;
                unsigned long long bound = 0;
                if (self->fin || self->by_frame)
                    bound = (unsigned long long)self->msg_len + rest;
                if (reserve(self, self->msg_len + take, bound, rest - take))
                    goto error;
                dst = (unsigned char *)PyBytes_AS_STRING(self->msg) + self->msg_len;
                if (self->masked)
                    xor_copy(dst, data + pos, take, self->mask, self->phase);
                else
                    memcpy(dst, data + pos, take);
                if (self->utf8_on) {
                    self->utf8_state = utf8_scan(self->utf8_state, dst, take);
                    if (self->utf8_state == UTF8_REJECT) {
                        if (fail_str(self, events, CLOSE_INVALID_PAYLOAD, R_UTF8))
                            goto error;
                        goto done;
                    }
                }
                self->msg_len += take;
            }
            pos += take;
            self->phase = (self->phase + (unsigned)(take & 3)) & 3;
            self->remaining -= take;
            if (self->remaining == 0) {
                int rc = end_frame(self, events);
                if (rc < 0)
                    goto error;
                if (rc == 0)
                    goto done;
            }
            continue;
        }

        /* between frames: parse a header */
        if (self->head_len) {
            /* a header cut by the previous read: complete it from this one */
            int old = self->head_len;
            Py_ssize_t copy = end - pos;
            if (copy > (Py_ssize_t)sizeof(self->head) - old)
                copy = (Py_ssize_t)sizeof(self->head) - old;
            memcpy(self->head + old, data + pos, copy);
            size = parse_header(self, self->head, old + copy, events, &h);
            if (size == 0) {
                self->head_len = old + (int)copy; /* copy was all of the rest */
                pos = end;
                break;
            }
            if (size == -1)
                goto done;
            if (size < 0)
                goto error;
            self->head_len = 0;
            pos += size - old;
        }
        else {
            size = parse_header(self, data + pos, end - pos, events, &h);
            if (size == 0)
                break;
            if (size == -1)
                goto done;
            if (size < 0)
                goto error;
            pos += size;
        }

        if (h.opcode > 7) {
            if ((unsigned long long)(end - pos) >= h.length) {
                /* the whole control frame is here (the common case) */
                PyObject *payload = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)h.length);
                if (payload == NULL)
                    goto error;
                if (h.masked)
                    xor_copy((unsigned char *)PyBytes_AS_STRING(payload), data + pos,
                             (Py_ssize_t)h.length, h.mask, 0);
                else
                    memcpy(PyBytes_AS_STRING(payload), data + pos, (size_t)h.length);
                pos += (Py_ssize_t)h.length;
                if (append_steal(events, pair(h.opcode, payload)))
                    goto error;
                continue;
            }
        }
        else {
            /* a data frame: check the limits as soon as its length is known */
            unsigned long long declared =
                self->by_frame ? h.length : self->declared + h.length;
            if (self->max_message && declared > self->max_message) {
                if (fail(self, events, CLOSE_MESSAGE_TOO_BIG,
                         PyUnicode_FromFormat(
                             "message of %llu bytes is over the limit of %llu",
                             declared, self->max_message)))
                    goto error;
                goto done;
            }
            if (self->max_frame && h.length > self->max_frame) {
                if (fail(self, events, CLOSE_MESSAGE_TOO_BIG,
                         PyUnicode_FromFormat(
                             "frame of %llu bytes is over the limit of %llu",
                             h.length, self->max_frame)))
                    goto error;
                goto done;
            }
            if (h.fin && h.opcode && !self->by_frame &&
                (unsigned long long)(end - pos) >= h.length) {
                /* a whole single-frame message is here (the common case) */
                if (whole_message(self, events, &h, data + pos))
                    goto error;
                if (self->error != NULL)
                    goto done;
                pos += (Py_ssize_t)h.length;
                continue;
            }
            self->declared = declared;
            if (!self->in_message) {
                self->in_message = 1;
                self->msg_opcode = h.opcode;
                self->utf8_on = h.opcode == OP_TEXT && self->validate;
                self->utf8_state = 0;
            }
        }
        /* a frame whose payload comes in pieces, or a fragment */
        self->opcode = h.opcode;
        self->fin = h.fin;
        self->masked = h.masked;
        memcpy(self->mask, h.mask, 4);
        self->phase = 0;
        self->remaining = (long long)h.length;
        if (h.length == 0) {
            int rc = end_frame(self, events);
            if (rc < 0)
                goto error;
            if (rc == 0)
                goto done;
        }
    }
    if (pos < end) {
        /* a cut header: fewer than 14 bytes */
        memcpy(self->head, data + pos, end - pos);
        self->head_len = (int)(end - pos);
    }
done:
    PyBuffer_Release(&view);
    return events;
error:
    self->broken = 1;
    drop_message(self);
    PyBuffer_Release(&view);
    Py_DECREF(events);
    return NULL;
}

static int
to_limit(PyObject *value, const char *name, unsigned long long *out)
{
    int overflow = 0;
    long long v;
    if (!PyLong_Check(value) || PyBool_Check(value))
        goto bad;
    v = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (overflow > 0) {
        *out = ~0ULL; /* beyond any frame length: as good as the value */
        return 0;
    }
    if (overflow < 0 || v < 0)
        goto bad;
    *out = (unsigned long long)v;
    return 0;
bad:
    PyErr_Format(PyExc_ValueError,
                 "%s must be an int >= 0 (0 for no limit), not %R", name, value);
    return -1;
}

static int
FrameReader_init(FrameReader *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"max_frame_size", "max_message_size",
                             "utf8_validation", "frame_by_frame", "require_mask",
                             NULL};
    PyObject *max_frame, *max_message;
    int validate = 1, by_frame = 0, require_mask = 1;

    self->ready = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|$ppp:FrameReader", kwlist,
                                     &max_frame, &max_message, &validate,
                                     &by_frame, &require_mask))
        return -1;
    if (to_limit(max_frame, "max_frame_size", &self->max_frame) ||
        to_limit(max_message, "max_message_size", &self->max_message))
        return -1;
    self->validate = (char)validate;
    self->by_frame = (char)by_frame;
    self->require_mask = (char)require_mask;
    self->broken = 0;
    Py_CLEAR(self->error);
    self->head_len = 0;
    self->remaining = -1;
    self->opcode = 0;
    self->fin = 0;
    self->masked = 0;
    self->phase = 0;
    self->in_message = 0;
    self->msg_opcode = 0;
    self->utf8_on = 0;
    self->utf8_state = 0;
    self->declared = 0;
    drop_message(self);
    self->ctrl_len = 0;
    self->ready = 1;
    return 0;
}

static void
FrameReader_dealloc(FrameReader *self)
{
    Py_XDECREF(self->error);
    Py_XDECREF(self->msg);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
FrameReader_get_error(FrameReader *self, void *closure)
{
    PyObject *e = self->error ? self->error : Py_None;
    Py_INCREF(e);
    return e;
}

static PyObject *
FrameReader_get_buffered(FrameReader *self, void *closure)
{
    return PyLong_FromSsize_t(self->head_len + self->msg_len + self->ctrl_len);
}

static PyMethodDef FrameReader_methods[] = {
    {"feed", (PyCFunction)FrameReader_feed, METH_O,
     "feed(data) -> list of events\n\n"
     "Parse the next bytes from the peer; return the events they complete."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef FrameReader_getset[] = {
    {"error", (getter)FrameReader_get_error, NULL,
     "The ERROR event the reader failed with, or None.", NULL},
    {"buffered", (getter)FrameReader_get_buffered, NULL,
     "Bytes held between feeds: a cut header, message and control payload.",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject FrameReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "wsplugin._speedups.FrameReader",
    .tp_basicsize = sizeof(FrameReader),
    .tp_dealloc = (destructor)FrameReader_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "FrameReader(max_frame_size, max_message_size, *, "
              "utf8_validation=True, frame_by_frame=False, require_mask=True)\n\n"
              "Parses the frames a client sends into events (see "
              "wsplugin._pycodec.FrameReader).",
    .tp_methods = FrameReader_methods,
    .tp_getset = FrameReader_getset,
    .tp_init = (initproc)FrameReader_init,
    .tp_new = PyType_GenericNew,
};

/* ------------------------------------------------------------------ */
/* Encoding */

static Py_ssize_t
header_size(unsigned long long length)
{
    return length <= 125 ? 2 : length <= 0xFFFF ? 4 : 10;
}

static unsigned char *
write_header(unsigned char *p, int opcode, int fin, int rsv,
             unsigned long long length)
{
    *p++ = (unsigned char)((fin ? 0x80 : 0) | (rsv & 7) << 4 | (opcode & 0xF));
    if (length <= 125) {
        *p++ = (unsigned char)length;
    }
    else if (length <= 0xFFFF) {
        *p++ = 126;
        *p++ = (unsigned char)(length >> 8);
        *p++ = (unsigned char)length;
    }
    else {
        int i;
        *p++ = 127;
        for (i = 7; i >= 0; i--)
            *p++ = (unsigned char)(length >> (8 * i));
    }
    return p;
}

/* A payload argument: a str (sent as UTF-8) or any bytes-like object. */
typedef struct {
    Py_buffer view;
    int is_view;
    const char *buf;
    Py_ssize_t len;
} Payload;

static int
get_payload(PyObject *obj, Payload *out)
{
    if (PyUnicode_Check(obj)) {
        out->is_view = 0;
        out->buf = PyUnicode_AsUTF8AndSize(obj, &out->len);
        return out->buf == NULL ? -1 : 0;
    }
    if (PyObject_GetBuffer(obj, &out->view, PyBUF_SIMPLE) < 0)
        return -1;
    out->is_view = 1;
    out->buf = out->view.buf;
    out->len = out->view.len;
    return 0;
}

static void
release_payload(Payload *p)
{
    if (p->is_view)
        PyBuffer_Release(&p->view);
}

static PyObject *
frame_header(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"opcode", "length", "fin", "rsv", NULL};
    int opcode, fin = 1, rsv = 0, overflow = 0;
    PyObject *length_obj;
    long long length;
    unsigned char buf[10];
    unsigned char *end;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iO!|pi:frame_header", kwlist,
                                     &opcode, &PyLong_Type, &length_obj, &fin,
                                     &rsv))
        return NULL;
    length = PyLong_AsLongLongAndOverflow(length_obj, &overflow);
    if (length == -1 && PyErr_Occurred())
        return NULL;
    if (overflow || length < 0) {
        PyErr_Format(PyExc_ValueError,
                     "a frame payload is 0 to 2**63-1 bytes, not %R", length_obj);
        return NULL;
    }
    end = write_header(buf, opcode, fin, rsv, (unsigned long long)length);
    return PyBytes_FromStringAndSize((const char *)buf, end - buf);
}

static PyObject *
encode_frame(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"opcode", "payload", "fin", "rsv", "mask", NULL};
    int opcode, fin = 1, rsv = 0;
    PyObject *obj, *mask_obj = Py_None, *out;
    Payload pl;
    Py_buffer mask;
    unsigned char *p;
    Py_ssize_t extra = 0;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iO|piO:encode_frame", kwlist,
                                     &opcode, &obj, &fin, &rsv, &mask_obj))
        return NULL;
    if (mask_obj != Py_None) {
        if (PyObject_GetBuffer(mask_obj, &mask, PyBUF_SIMPLE) < 0)
            return NULL;
        if (mask.len != 4) {
            PyErr_Format(PyExc_ValueError, "a masking key is 4 bytes, not %zd",
                         mask.len);
            PyBuffer_Release(&mask);
            return NULL;
        }
        extra = 4;
    }
    if (get_payload(obj, &pl) < 0) {
        if (extra)
            PyBuffer_Release(&mask);
        return NULL;
    }
    out = PyBytes_FromStringAndSize(NULL, header_size(pl.len) + extra + pl.len);
    if (out != NULL) {
        p = write_header((unsigned char *)PyBytes_AS_STRING(out), opcode, fin, rsv,
                         (unsigned long long)pl.len);
        if (extra) {
            PyBytes_AS_STRING(out)[1] |= (char)0x80;
            memcpy(p, mask.buf, 4);
            xor_copy(p + 4, (const unsigned char *)pl.buf, pl.len, mask.buf, 0);
        }
        else {
            memcpy(p, pl.buf, pl.len);
        }
    }
    release_payload(&pl);
    if (extra)
        PyBuffer_Release(&mask);
    return out;
}

static PyObject *
encode_message(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"payload", "is_binary", "fragment_size", NULL};
    PyObject *obj, *out;
    int is_binary;
    Py_ssize_t fragment = 0, total, size, start;
    Payload pl;
    unsigned char *p;
    int opcode;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Op|n:encode_message", kwlist,
                                     &obj, &is_binary, &fragment))
        return NULL;
    if (fragment < 0) {
        PyErr_Format(PyExc_ValueError, "fragment_size must be >= 0, not %zd",
                     fragment);
        return NULL;
    }
    if (get_payload(obj, &pl) < 0)
        return NULL;
    opcode = is_binary ? OP_BINARY : OP_TEXT;
    total = pl.len;
    if (fragment == 0 || total <= fragment)
        fragment = total ? total : 1;
    /* size: every frame's header, then the payload */
    size = total;
    for (start = 0; start < total; start += fragment) {
        Py_ssize_t n = total - start < fragment ? total - start : fragment;
        size += header_size((unsigned long long)n);
    }
    if (total == 0)
        size = 2;
    out = PyBytes_FromStringAndSize(NULL, size);
    if (out != NULL) {
        p = (unsigned char *)PyBytes_AS_STRING(out);
        if (total == 0)
            write_header(p, opcode, 1, 0, 0);
        for (start = 0; start < total; start += fragment) {
            Py_ssize_t n = total - start < fragment ? total - start : fragment;
            p = write_header(p, start ? OP_CONTINUATION : opcode,
                             start + n >= total, 0, (unsigned long long)n);
            memcpy(p, pl.buf + start, n);
            p += n;
        }
    }
    release_payload(&pl);
    return out;
}

static PyMethodDef module_methods[] = {
    {"frame_header", (PyCFunction)(void (*)(void))frame_header,
     METH_VARARGS | METH_KEYWORDS,
     "frame_header(opcode, length, fin=True, rsv=0) -> bytes\n\n"
     "The header of an unmasked frame of `length` payload bytes."},
    {"encode_frame", (PyCFunction)(void (*)(void))encode_frame,
     METH_VARARGS | METH_KEYWORDS,
     "encode_frame(opcode, payload, fin=True, rsv=0, mask=None) -> bytes\n\n"
     "Encode one frame, unmasked, or masked with the 4-byte `mask`."},
    {"encode_message", (PyCFunction)(void (*)(void))encode_message,
     METH_VARARGS | METH_KEYWORDS,
     "encode_message(payload, is_binary, fragment_size=0) -> bytes\n\n"
     "Encode a whole message as unmasked frames of at most `fragment_size`\n"
     "payload bytes each (0: one frame)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "wsplugin._speedups",
    .m_doc = "The WebSocket frame codec in C; see wsplugin._pycodec for the "
             "reference semantics.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    PyObject *m;
    if (PyType_Ready(&FrameReaderType) < 0)
        return NULL;
    m = PyModule_Create(&speedups_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&FrameReaderType);
    if (PyModule_AddObject(m, "FrameReader", (PyObject *)&FrameReaderType) < 0) {
        Py_DECREF(&FrameReaderType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "TEXT", OP_TEXT) ||
        PyModule_AddIntConstant(m, "BINARY", OP_BINARY) ||
        PyModule_AddIntConstant(m, "CLOSE", OP_CLOSE) ||
        PyModule_AddIntConstant(m, "PING", OP_PING) ||
        PyModule_AddIntConstant(m, "PONG", OP_PONG) ||
        PyModule_AddIntConstant(m, "FRAGMENT", EV_FRAGMENT) ||
        PyModule_AddIntConstant(m, "ERROR", EV_ERROR) ||
        PyModule_AddIntConstant(m, "CLOSE_PROTOCOL_ERROR", CLOSE_PROTOCOL_ERROR) ||
        PyModule_AddIntConstant(m, "CLOSE_INVALID_PAYLOAD", CLOSE_INVALID_PAYLOAD) ||
        PyModule_AddIntConstant(m, "CLOSE_MESSAGE_TOO_BIG", CLOSE_MESSAGE_TOO_BIG)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
