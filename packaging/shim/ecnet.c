/*
 * ecnet: the CNI binary a runtime execs, as a static forwarder to the node agent.
 *
 * It runs on the host, where there may be no Python (Flatcar, Bottlerocket, Talos), and its
 * start-up is paid on every ADD, DEL, CHECK and every 5 s STATUS poll: ~0.5 ms static against
 * ~8 ms for `python3 -IS`. So it is a dumb pipe, the same one as cni/shim.py (the fallback when
 * no compiler was around), and one test suite holds both to the same answers:
 *   - VERSION is answered here;
 *   - everything else is sent verbatim: b"ECNET1 <env-len>\n" + CNI_* env ("K=V\0" each) +
 *     stdin, then half-close; the answer is b"<exit-code>\n" + bytes for stdout;
 *   - agent unreachable or no answer: CNI error 11, or 6 when stdin is not JSON at all (a
 *     broken config never gets better on retry).
 * libc only; no logic beyond framing, VERSION and errors.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define SUPPORTED "[\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\",\"1.1.0\"]"
#define DEFAULT_SOCKET "/run/ecnet/agent.sock"
#define TIMEOUT 180.0 /* below kubelet's 4-minute runtime request timeout */

extern char **environ;

struct buf { char *p; size_t n, cap; };

static void put(struct buf *b, const void *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) { fputs("ecnet: out of memory\n", stderr); exit(1); }
        b->p = p; b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

/* Value of a top-level string field, found without a JSON parser, exactly as cni/shim.py
 * does: paths and versions have no escapes; anything odd gives "" (the default). */
static void string_field(const struct buf *in, const char *key, char *out, size_t outsz) {
    char pat[64];
    out[0] = 0;
    snprintf(pat, sizeof pat, "\"%s\"", key);
    const char *i = memmem(in->p, in->n, pat, strlen(pat)), *end = in->p + in->n;
    if (!i) return;
    const char *j = memchr(i + strlen(pat), ':', (size_t)(end - i - strlen(pat)));
    if (!j) return;
    const char *k = memchr(j, '"', (size_t)(end - j));
    if (!k) return;
    const char *e = memchr(k + 1, '"', (size_t)(end - k - 1));
    if (!e) return;
    for (const char *c = j + 1; c < k; c++)
        if (!strchr(" \t\n\r\f\v", *c)) return;
    if (memchr(k + 1, '\\', (size_t)(e - k - 1)) || (size_t)(e - k - 1) >= outsz) return;
    memcpy(out, k + 1, (size_t)(e - k - 1));
    out[e - k - 1] = 0;
}

/* Is stdin JSON at all (RFC 8259, UTF-8)? Asked only when the agent cannot be reached, to tell
 * code 6 from 11; an iterative scan, so no input can exhaust the stack. */
static const char *ws(const char *p, const char *e) {
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}
static const char *utf8(const char *p, const char *e) {
    unsigned char c = (unsigned char)*p;
    int n = c < 0x80 ? 0 : c >= 0xC2 && c <= 0xDF ? 1 : c >= 0xE0 && c <= 0xEF ? 2
          : c >= 0xF0 && c <= 0xF4 ? 3 : -1;
    if (n < 0 || e - p <= n) return NULL;
    for (int i = 1; i <= n; i++)
        if (((unsigned char)p[i] & 0xC0) != 0x80) return NULL;
    if ((c == 0xE0 && (unsigned char)p[1] < 0xA0) || (c == 0xED && (unsigned char)p[1] > 0x9F) ||
        (c == 0xF0 && (unsigned char)p[1] < 0x90) || (c == 0xF4 && (unsigned char)p[1] > 0x8F))
        return NULL;
    return p + n + 1;
}
static const char *str(const char *p, const char *e) {
    for (p++; p < e; ) {
        if (*p == '"') return p + 1;
        if ((unsigned char)*p < 0x20) return NULL;
        if (*p == '\\') {
            if (++p >= e) return NULL;
            if (*p == 'u') {
                for (int i = 1; i <= 4; i++)
                    if (p + i >= e || !strchr("0123456789abcdefABCDEF", p[i]) || !p[i]) return NULL;
                p += 5;
            } else if (*p && strchr("\"\\/bfnrt", *p)) p++;
            else return NULL;
        } else if (!(p = utf8(p, e))) return NULL;
    }
    return NULL;
}
static const char *num(const char *p, const char *e) {
    if (p < e && *p == '-') p++;
    if (p < e && *p == '0') p++;
    else if (p < e && *p >= '1' && *p <= '9') while (p < e && *p >= '0' && *p <= '9') p++;
    else return NULL;
    if (p < e && *p == '.') {
        if (++p >= e || *p < '0' || *p > '9') return NULL;
        while (p < e && *p >= '0' && *p <= '9') p++;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        if (++p < e && (*p == '+' || *p == '-')) p++;
        if (p >= e || *p < '0' || *p > '9') return NULL;
        while (p < e && *p >= '0' && *p <= '9') p++;
    }
    return p;
}
static int is_json(const struct buf *in) {
    enum { MAXDEPTH = 512 };
    char stack[MAXDEPTH]; /* '{' or '[' */
    int depth = 0;
    const char *p = in->p, *e = in->p + in->n;
    for (;;) { /* expecting a value */
        p = ws(p, e);
        if (p >= e) return 0;
        if (*p == '{' || *p == '[') {
            if (depth == MAXDEPTH) return 0;
            stack[depth++] = *p;
            p = ws(p + 1, e);
            if (p < e && *p == (stack[depth - 1] == '{' ? '}' : ']')) { depth--; p++; goto after; }
            if (stack[depth - 1] == '{') goto key;
            continue;
        }
        if (*p == '"') p = str(p, e);
        else if (e - p >= 4 && !memcmp(p, "true", 4)) p += 4;
        else if (e - p >= 5 && !memcmp(p, "false", 5)) p += 5;
        else if (e - p >= 4 && !memcmp(p, "null", 4)) p += 4;
        else p = num(p, e);
        if (!p) return 0;
    after:
        p = ws(p, e);
        if (!depth) return p == e;
        if (p < e && *p == ',') {
            p = ws(p + 1, e);
            if (stack[depth - 1] == '[') continue;
            goto key;
        }
        if (p < e && *p == (stack[depth - 1] == '{' ? '}' : ']')) { depth--; p++; goto after; }
        return 0;
    key:
        if (p >= e || *p != '"' || !(p = str(p, e))) return 0;
        p = ws(p, e);
        if (p >= e || *p != ':') return 0;
        p++;
    }
}

static int fail(const char *version, int code, const char *msg, const char *details) {
    struct buf o = {0};
    char head[256];
    snprintf(head, sizeof head, "{\"cniVersion\":\"%s\",\"code\":%d,\"msg\":\"%s\",\"details\":\"",
             version, code, msg);
    put(&o, head, strlen(head));
    for (const char *c = details; *c; c++) {
        char ch = *c == '"' ? '\'' : *c == '\n' ? ' ' : *c;
        if (ch == '\\') put(&o, "\\", 1);
        put(&o, &ch, 1);
    }
    put(&o, "\"}\n", 3);
    fwrite(o.p, 1, o.n, stdout);
    return 1;
}

static int unreachable(const struct buf *in, const char *version, const char *path, int err) {
    char details[sizeof(((struct sockaddr_un *)0)->sun_path) + 128];
    if (!is_json(in))
        return fail(version, 6, "failed to decode content", "network config is not JSON");
    snprintf(details, sizeof details, "%s: %s", path,
             err == EAGAIN || err == EWOULDBLOCK ? "timed out" : strerror(err));
    return fail(version, 11, "ecnet agent unreachable, try again later", details);
}

int main(void) {
    struct buf in = {0}, req = {0}, env = {0}, ans = {0};
    char chunk[65536], version[64], path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    ssize_t n;

    while ((n = read(0, chunk, sizeof chunk)) > 0 || (n < 0 && errno == EINTR))
        if (n > 0) put(&in, chunk, (size_t)n);
    put(&in, "", 0);
    string_field(&in, "cniVersion", version, sizeof version);
    if (!version[0] || strspn(version, "0123456789.") != strlen(version) ||
        strspn(version, ".") == strlen(version))
        strcpy(version, "1.0.0");
    const char *command = getenv("CNI_COMMAND");
    if (command && !strcmp(command, "VERSION")) {
        printf("{\"cniVersion\":\"%s\",\"supportedVersions\":%s}\n", version, SUPPORTED);
        return 0;
    }
    string_field(&in, "agentSocket", path, sizeof path);
    if (!path[0]) {
        const char *p = getenv("ECNET_AGENT_SOCKET");
        snprintf(path, sizeof path, "%s", p ? p : DEFAULT_SOCKET);
    }
    for (char **e = environ; *e; e++)
        if (!strncmp(*e, "CNI_", 4)) put(&env, *e, strlen(*e) + 1);
    snprintf(chunk, sizeof chunk, "ECNET1 %zu\n", env.n);
    put(&req, chunk, strlen(chunk));
    put(&req, env.p ? env.p : "", env.n);
    put(&req, in.p, in.n);

    double t = TIMEOUT;
    const char *ts = getenv("ECNET_SHIM_TIMEOUT");
    if (ts && atof(ts) > 0 && atof(ts) < 1e6) t = atof(ts);
    struct timeval tv = {(time_t)t, (suseconds_t)((t - (double)(time_t)t) * 1e6)};
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path) return unreachable(&in, version, path, ENAMETOOLONG);
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return unreachable(&in, version, path, errno);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        return unreachable(&in, version, path, errno);
    for (size_t off = 0; off < req.n; off += (size_t)n)
        if ((n = send(fd, req.p + off, req.n - off, MSG_NOSIGNAL)) < 0) {
            if (errno == EINTR) { n = 0; continue; }
            if (errno == EPIPE || errno == ECONNRESET) break; /* refused the rest: read why */
            return unreachable(&in, version, path, errno);
        }
    shutdown(fd, SHUT_WR);
    while ((n = read(fd, chunk, sizeof chunk)) != 0) {
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == ECONNRESET) break; /* hung up: what came before is all there is */
            return unreachable(&in, version, path, errno);
        }
        put(&ans, chunk, (size_t)n);
    }
    close(fd);
    char *nl = ans.p ? memchr(ans.p, '\n', ans.n) : NULL;
    size_t hl = nl ? (size_t)(nl - ans.p) : 0, a = 0, b = hl;
    while (a < b && strchr(" \t\r\f\v", ans.p[a])) a++;
    while (b > a && strchr(" \t\r\f\v", ans.p[b - 1])) b--;
    int code = 0, digits = b > a && b - a < 4;
    for (size_t i = a; digits && i < b; i++) {
        digits = ans.p[i] >= '0' && ans.p[i] <= '9';
        code = code * 10 + ans.p[i] - '0';
    }
    if (!nl || !digits) {
        snprintf(chunk, sizeof chunk, "%zu bytes from %s", ans.n, path);
        return fail(version, 11, "ecnet agent gave no answer, try again later", chunk);
    }
    fwrite(nl + 1, 1, ans.n - hl - 1, stdout);
    return code;
}
