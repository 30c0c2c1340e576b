/*
 * ringbench — the io_uring HTTP load generator that verifies what it measures (SPEC §5).
 *
 * This file: main and the run loop — the worker threads (one bench_run() each, pinned), their
 * callbacks (request bytes, response accounting), per-second accounting and the progress
 * line, and the summing of the workers into the report. The command line is rb_args, the
 * scenarios (request bytes, set-up, verification) rb_scen, the io_uring engine uring/bench.c;
 * parsing, histogram and output are the other rb_* modules next to this file.
 *
 * Threads: main (arguments, set-up requests, progress, verification, report) and one worker
 * per -t. A worker owns everything in its struct worker; the only shared state is struct run:
 * the event (and --spread-seq) sequence and stop flag (atomics) and the per-second series
 * (mutex, taken once per second per worker, never per request).
 *
 * Exit: 0 ok; 1 failed run (event/increment/counter: any error status, socket error,
 * unanswered request or verification mismatch; raw: no response at all); 2 usage error.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "decimal.h"
#include "rb_args.h"
#include "rb_hist.h"
#include "rb_report.h"
#include "rb_resp.h"
#include "rb_scen.h"

#define NSEC 1000000000ull
/* A second's progress line is printed this long after the second ended, so that every
   worker (they tick every 10 ms) has published it. */
#define PUBLISH_GRACE_NS 150000000ull

/* One second of the run being collected from the workers. */
struct slot {
    uint64_t sec, resp, err;
    struct rb_hist h;
};

/* Seconds [next_final, next_final + SLOTS) are open; a worker that publishes an already
   finalized second (it was stalled longer than PUBLISH_GRACE_NS) adds to the oldest open one. */
#define SLOTS 4
struct series {
    pthread_mutex_t mu;
    uint64_t next_final;
    struct slot slot[SLOTS];
    struct rb_row *rows;
    size_t nrows, cap;
};

struct run {
    const struct rb_opts *o;
    const struct rb_req *req; /* the scenario's */
    uint16_t ok_lo, ok_hi;
    uint64_t start_ns;
    uint64_t seq;  /* event, --spread-seq: next global request number (atomic) */
    int stop;      /* atomic: SIGINT/SIGTERM asked to stop sending */
    unsigned done; /* atomic: workers finished */
    struct series ser;
};

struct pend {
    uint64_t t;   /* intended send time (ns) */
    uint64_t seq; /* request number */
};

struct wconn {
    struct rb_resp rp;
    struct pend *q; /* FIFO of outstanding requests: HTTP/1.1 answers in order */
    uint32_t head, tail;
};

struct worker {
    struct run *run;
    int cpu;
    pthread_t th;
    int rc;
    struct bench_cfg cfg;
    struct bench_result res;
    struct wconn *wc;
    uint32_t qmask;
    uint64_t local_seq;
    uint64_t salt; /* --spread: (thread index + 1) << 48, hashed with local_seq: threads differ */
    uint64_t cur_sec, sec_end, sec_resp, sec_err;
    uint64_t responses, unanswered;
    uint64_t status[RB_STATUS_MAX];
    uint64_t ends[BENCH__END_COUNT];
    uint64_t acked;  /* event: 200 responses */
    dec_t acked_sum; /* event: exact sum of their values */
    uint8_t users_acked[RB_EV_BITMAP], users_sent[RB_EV_BITMAP];
    struct rb_hist ih;   /* the current second */
    struct rb_hist hist; /* everything published so far */
};

/* ---- small helpers ---------------------------------------------------------------------- */

static inline void bit_set(uint8_t *b, uint32_t i)
{
    b[i >> 3] |= (uint8_t)(1u << (i & 7));
}

static uint64_t popcount_bits(const uint8_t *b, size_t n)
{
    uint64_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += (uint64_t)__builtin_popcount(b[i]);
    return c;
}

/* ---- per-second series ------------------------------------------------------------------ */

static void series_init(struct series *s)
{
    pthread_mutex_init(&s->mu, NULL);
    for (uint64_t i = 0; i < SLOTS; i++) {
        s->slot[i].sec = i;
        rb_hist_reset(&s->slot[i].h);
    }
}

static void series_add(struct series *s, uint64_t sec, uint64_t resp, uint64_t err,
                       const struct rb_hist *h)
{
    pthread_mutex_lock(&s->mu);
    if (sec < s->next_final) sec = s->next_final;
    if (sec >= s->next_final + SLOTS)
        sec = s->next_final + SLOTS - 1; /* main is more than 3 s behind: cannot happen */
    struct slot *sl = &s->slot[sec % SLOTS];
    sl->resp += resp;
    sl->err += err;
    rb_hist_merge(&sl->h, h);
    pthread_mutex_unlock(&s->mu);
}

/* Close second next_final (window_s long); keep a row unless the window is a sliver. Returns
   the row added, or NULL. */
static const struct rb_row *series_final(struct series *s, double window_s)
{
    const struct rb_row *row = NULL;
    pthread_mutex_lock(&s->mu);
    uint64_t sec = s->next_final;
    struct slot *sl = &s->slot[sec % SLOTS];
    /* The drain after -d usually leaves a few ms in the last second: 0.1 s is the shortest
       window whose rate is still a meaningful per-second figure. */
    if (window_s >= 0.1) {
        if (s->nrows == s->cap) {
            size_t cap = s->cap ? s->cap * 2 : 64;
            struct rb_row *r = realloc(s->rows, cap * sizeof(*r));
            if (r) {
                s->rows = r;
                s->cap = cap;
            }
        }
        if (s->nrows < s->cap) {
            struct rb_row *r = &s->rows[s->nrows++];
            r->sec = (uint32_t)sec;
            r->rps = (double)sl->resp / window_s;
            r->p99_us = (double)rb_hist_percentile(&sl->h, 99) / 1000.0;
            r->errors = sl->err;
            row = r;
        }
    }
    sl->resp = sl->err = 0;
    rb_hist_reset(&sl->h);
    sl->sec = sec + SLOTS;
    s->next_final = sec + 1;
    pthread_mutex_unlock(&s->mu);
    return row;
}

static void print_progress(const struct rb_row *r)
{
    fprintf(stderr, "ringbench: [%4us] %10.0f req/s  errors %-6" PRIu64 " p99 %.3f ms\n",
            r->sec + 1, r->rps, r->errors, r->p99_us / 1000.0);
}

/* ---- worker callbacks (worker thread) --------------------------------------------------- */

static void publish(struct worker *w, uint64_t now)
{
    struct run *r = w->run;
    rb_hist_merge(&w->hist, &w->ih);
    series_add(&r->ser, w->cur_sec, w->sec_resp, w->sec_err, &w->ih);
    if (w->ih.count) rb_hist_reset(&w->ih);
    w->sec_resp = w->sec_err = 0;
    w->cur_sec = now > r->start_ns ? (now - r->start_ns) / NSEC : 0;
    w->sec_end = r->start_ns + (w->cur_sec + 1) * NSEC;
}


static size_t w_fill(void *arg, uint32_t conn, char *buf, uint32_t n, uint64_t t0, uint64_t step)
{
    struct worker *w = arg;
    struct run *r = w->run;
    struct wconn *c = &w->wc[conn];
    bool ev = r->o->scen == RB_EVENT, spread = r->req->spread_at != 0;
    uint64_t seq;
    if (ev || r->o->spread_seq) /* one atomic per fill, not per request */
        seq = __atomic_fetch_add(&r->seq, n, __ATOMIC_RELAXED);
    else
        seq = w->local_seq, w->local_seq += n;
    char *p = buf;
    for (uint32_t k = 0; k < n; k++, seq++) {
        struct pend *e = &c->q[c->tail++ & w->qmask];
        e->t = t0 + k * step;
        e->seq = seq;
        if (ev) {
            p = rb_scen_put_event(r->req, r->o->half, p, seq);
            bit_set(w->users_sent, (uint32_t)(seq % RB_EV_USERS));
        } else if (spread) {
            p = rb_scen_put_spread(r->req, p, rb_scen_spread_num(r->o, seq, w->salt));
        } else {
            memcpy(p, r->req->bytes, r->req->len);
            p += r->req->len;
        }
    }
    return (size_t)(p - buf);
}

static uint32_t w_recv(void *arg, uint32_t conn, const char *p, size_t n, uint64_t now,
                       unsigned *flags)
{
    struct worker *w = arg;
    struct run *r = w->run;
    struct wconn *c = &w->wc[conn];
    uint32_t done = 0;
    if (now >= w->sec_end) publish(w, now);
    while (n) {
        struct rb_resp_info info;
        int rc = rb_resp_next(&c->rp, &p, &n, &info);
        if (rc == 0) break;
        if (rc < 0 || c->head == c->tail) {
            *flags |= BENCH_RECV_PROTO; /* garbage, or a response nobody asked for */
            break;
        }
        const struct pend *e = &c->q[c->head++ & w->qmask];
        rb_hist_record(&w->ih, now > e->t ? now - e->t : 0);
        w->status[info.status]++;
        w->responses++;
        w->sec_resp++;
        if (info.status < r->ok_lo || info.status > r->ok_hi)
            w->sec_err++;
        else if (r->o->scen == RB_EVENT) {
            w->acked++;
            w->acked_sum += rb_scen_event_value(e->seq, r->o->half);
            bit_set(w->users_acked, (uint32_t)(e->seq % RB_EV_USERS));
        }
        done++;
        if (info.close) {
            *flags |= BENCH_RECV_CLOSE;
            break;
        }
    }
    return done;
}

static void w_closed(void *arg, uint32_t conn, enum bench_end why, uint32_t lost, uint64_t now)
{
    struct worker *w = arg;
    struct wconn *c = &w->wc[conn];
    if (now >= w->sec_end) publish(w, now);
    w->unanswered += lost;
    if (why != BENCH_END_OK) {
        uint64_t k = why == BENCH_END_TIMEOUT ? lost : 1;
        w->ends[why] += k;
        w->sec_err += k;
    }
    c->head = c->tail = 0;
    rb_resp_reset(&c->rp);
}

static void w_tick(void *arg, uint64_t now)
{
    struct worker *w = arg;
    if (now >= w->sec_end) publish(w, now);
}

static const struct bench_ops OPS = {
    .fill = w_fill, .recv = w_recv, .closed = w_closed, .tick = w_tick};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    if (w->cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET((size_t)w->cpu, &set);
        pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
    }
    w->rc = bench_run(&w->cfg, &OPS, w, &w->res);
    publish(w, bench_now_ns());
    __atomic_add_fetch(&w->run->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* ---- main ------------------------------------------------------------------------------- */

/* What main keeps between the phases. */
struct ctx {
    struct rb_opts o;
    struct rb_scen sc;
    struct run run;
    struct worker **ws;
    uint32_t started;
};

static int pick_cpus(int *cpus, int max)
{
    cpu_set_t set;
    int n = 0;
    if (sched_getaffinity(0, sizeof(set), &set) < 0) return 0;
    for (int c = 0; c < CPU_SETSIZE && n < max; c++)
        if (CPU_ISSET((size_t)c, &set)) cpus[n++] = c;
    return n;
}

static uint32_t conns_of(const struct rb_opts *o, uint32_t i)
{
    return o->conns / o->threads + (i < o->conns % o->threads ? 1 : 0);
}

/* Allocate and configure the workers (does not start them). 0 or -ENOMEM. */
static int make_workers(struct ctx *x)
{
    const struct rb_opts *o = &x->o;
    struct run *run = &x->run;
    int cpus[1024], ncpu = pick_cpus(cpus, 1024);
    uint32_t qcap = 1;
    while (qcap < o->depth)
        qcap *= 2;
    x->ws = calloc(o->threads, sizeof(*x->ws));
    if (!x->ws) return -ENOMEM;
    uint64_t q_left = o->nreq;
    for (uint32_t i = 0; i < o->threads; i++) {
        struct worker *w = calloc(1, sizeof(*w));
        if (!w) return -ENOMEM;
        x->ws[i] = w;
        uint32_t nc = conns_of(o, i);
        w->run = run;
        w->cpu = ncpu ? cpus[i % (uint32_t)ncpu] : -1;
        w->qmask = qcap - 1;
        w->salt = (uint64_t)(i + 1) << 48;
        w->wc = calloc(nc, sizeof(*w->wc));
        if (!w->wc) return -ENOMEM;
        for (uint32_t c = 0; c < nc; c++) {
            rb_resp_init(&w->wc[c].rp, run->req->head_method);
            w->wc[c].q = malloc(qcap * sizeof(struct pend));
            if (!w->wc[c].q) return -ENOMEM;
        }
        rb_hist_reset(&w->ih);
        rb_hist_reset(&w->hist);
        struct bench_cfg *cfg = &w->cfg;
        cfg->addr = (const struct sockaddr *)&o->url.addr;
        cfg->addrlen = o->url.addrlen;
        cfg->conns = nc;
        cfg->depth = o->depth;
        cfg->max_req_bytes = run->req->max;
        cfg->rate = o->rate * nc / o->conns; /* every connection gets the same share */
        if (o->nreq) {
            /* quotas proportional to connections; the last thread takes the remainder */
            uint64_t q = i == o->threads - 1 ? q_left : o->nreq / o->conns * nc;
            cfg->quota = q;
            q_left -= q;
        } else {
            cfg->quota = UINT64_MAX;
        }
        cfg->drain_ns = (uint64_t)(o->timeout_s * 1e9);
        cfg->timeout_ns = cfg->drain_ns;
        cfg->stop = &run->stop;
    }
    return 0;
}

/* Start the workers, print a progress line per second until all are done, join them. */
static void run_workers(struct ctx *x, const sigset_t *sigs)
{
    const struct rb_opts *o = &x->o;
    struct run *run = &x->run;
    run->start_ns = bench_now_ns();
    for (uint32_t i = 0; i < o->threads; i++) {
        struct worker *w = x->ws[i];
        w->sec_end = run->start_ns + NSEC;
        w->cfg.start_ns = run->start_ns;
        w->cfg.end_ns = o->nreq ? UINT64_MAX : run->start_ns + (uint64_t)(o->duration_s * 1e9);
    }
    for (; x->started < o->threads; x->started++) {
        int rc = pthread_create(&x->ws[x->started]->th, NULL, worker_main, x->ws[x->started]);
        if (rc) {
            fprintf(stderr, "ringbench: pthread_create: %s\n", strerror(rc));
            __atomic_store_n(&run->stop, 1, __ATOMIC_RELAXED);
            break;
        }
    }
    int nsig = 0;
    while (__atomic_load_n(&run->done, __ATOMIC_ACQUIRE) < x->started) {
        struct timespec ts = {0, 50000000}; /* 50 ms: progress lines are at most this late */
        if (sigtimedwait(sigs, NULL, &ts) > 0) {
            if (++nsig >= 2) {
                fprintf(stderr, "ringbench: interrupted twice, exiting\n");
                _exit(130);
            }
            fprintf(stderr, "ringbench: stopping (waiting for outstanding responses)\n");
            __atomic_store_n(&run->stop, 1, __ATOMIC_RELAXED);
        }
        uint64_t now = bench_now_ns();
        while (now >= run->start_ns + (run->ser.next_final + 1) * NSEC + PUBLISH_GRACE_NS) {
            const struct rb_row *row = series_final(&run->ser, 1.0);
            if (row) print_progress(row);
        }
    }
    for (uint32_t i = 0; i < x->started; i++)
        pthread_join(x->ws[i]->th, NULL);
}

static void write_out(const struct ctx *x)
{
    const struct rb_opts *o = &x->o;
    size_t pl = strlen(o->out) + 5;
    char *p = malloc(pl), title[600];
    int rc;
    if (!p) return;
    snprintf(title, sizeof(title), "ringbench %s %s (c=%u p=%u%s)", rb_args_scenarios[o->scen], o->url_s,
             o->conns, o->depth, o->rate > 0 ? ", open loop" : "");
    snprintf(p, pl, "%s.csv", o->out);
    if ((rc = rb_report_csv(p, x->run.ser.rows, x->run.ser.nrows)) < 0)
        fprintf(stderr, "ringbench: %s: %s\n", p, strerror(-rc));
    snprintf(p, pl, "%s.svg", o->out);
    if ((rc = rb_report_svg(p, title, x->run.ser.rows, x->run.ser.nrows)) < 0)
        fprintf(stderr, "ringbench: %s: %s\n", p, strerror(-rc));
    free(p);
}


/* Sum the workers into hist, status, ends, sent, t and *end_ns (when the last of them sent or
   got its last response). 0, or -1 when a worker could not set up its ring (printed). */
static int sum_workers(const struct ctx *x, struct rb_hist *hist, uint64_t *status,
                       uint64_t *ends, uint64_t *sent, struct rb_totals *t, uint64_t *end_ns)
{
    uint8_t ua[RB_EV_BITMAP] = {0}, usent[RB_EV_BITMAP] = {0};
    for (uint32_t i = 0; i < x->started; i++) {
        struct worker *w = x->ws[i];
        if (w->rc < 0) {
            fprintf(stderr, "ringbench: thread %u could not set up io_uring: %s\n", i,
                    strerror(-w->rc));
            return -1;
        }
        rb_hist_merge(hist, &w->hist);
        for (unsigned s = 0; s < RB_STATUS_MAX; s++)
            status[s] += w->status[s];
        for (unsigned k = 0; k < BENCH__END_COUNT; k++)
            ends[k] += w->ends[k];
        *sent += w->res.sent;
        t->responses += w->responses;
        t->unanswered += w->unanswered;
        t->acked += w->acked;
        t->acked_sum += w->acked_sum;
        for (size_t b = 0; b < RB_EV_BITMAP; b++) {
            ua[b] |= w->users_acked[b];
            usent[b] |= w->users_sent[b];
        }
        uint64_t e = w->res.last_resp_ns > w->res.stop_ns ? w->res.last_resp_ns : w->res.stop_ns;
        if (e > *end_ns) *end_ns = e;
    }
    t->distinct_acked = popcount_bits(ua, RB_EV_BITMAP);
    t->distinct_sent = popcount_bits(usent, RB_EV_BITMAP);
    return 0;
}

/* Sum the workers, print the report and the verification; fill *row (if not NULL) with the
   run's figures for a sweep. Returns the exit code. */
static int report(struct ctx *x, struct rb_sweep_row *row)
{
    const struct rb_opts *o = &x->o;
    struct run *run = &x->run;
    struct rb_hist *hist = malloc(sizeof(*hist));
    uint64_t *status = calloc(RB_STATUS_MAX, sizeof(uint64_t));
    uint64_t ends[BENCH__END_COUNT] = {0}, sent = 0, end_ns = run->start_ns;
    struct rb_totals t = {0};
    int code = 1;
    if (!hist || !status) {
        fprintf(stderr, "ringbench: out of memory\n");
        goto out;
    }
    rb_hist_reset(hist);
    if (sum_workers(x, hist, status, ends, &sent, &t, &end_ns) < 0) goto out;
    if (x->started < o->threads) goto out;
    double duration = (double)(end_ns - run->start_ns) / 1e9;
    while ((double)run->ser.next_final < duration) { /* the rest, the last one partial */
        const struct rb_row *last =
            series_final(&run->ser, fmin(1.0, duration - (double)run->ser.next_final));
        if (last) print_progress(last);
    }

    struct rb_summary sum = {
        .scenario = rb_args_scenarios[o->scen],
        .url = o->url_s,
        .threads = o->threads,
        .conns = o->conns,
        .depth = o->depth,
        .rate = o->rate,
        .duration_s = duration,
        .requests = t.responses,
        .sent = sent,
        .unanswered = t.unanswered,
        .hist = hist,
        .status = status,
        .ok_lo = run->ok_lo,
        .ok_hi = run->ok_hi,
        .ends = ends,
    };
    for (unsigned s = run->ok_lo; s <= run->ok_hi; s++)
        t.ok += status[s];
    uint64_t errors = rb_report_errors(&sum);
    rb_report_text(stdout, &sum);
    if (row) {
        row->offered = o->rate;
        row->requests = t.responses;
        row->rps = duration > 0 ? (double)t.responses / duration : 0;
        row->p50_ms = (double)rb_hist_percentile(hist, 50) / 1e6;
        row->p99_ms = (double)rb_hist_percentile(hist, 99) / 1e6;
        row->errors = errors;
    }

    bool ok = true;
    if (o->scen != RB_RAW) {
        ok = rb_scen_verify(&x->sc, &t, errors);
        sum.verify = !x->sc.can_verify ? "skipped" : ok ? "ok" : "failed";
    }
    if (o->out) write_out(x);
    if (o->json) rb_report_json(stdout, &sum);
    fflush(stdout);
    if (o->scen == RB_RAW) {
        code = t.responses > 0 ? 0 : 1;
        if (code) fprintf(stderr, "ringbench: no responses\n");
    } else {
        code = ok ? 0 : 1;
        if (code)
            fprintf(stderr, "ringbench: %s run FAILED (see the verify lines)\n",
                    rb_args_scenarios[o->scen]);
    }
out:
    free(hist);
    free(status);
    return code;
}

/* Free one run's state (the options stay). */
static void free_run(struct ctx *x)
{
    if (x->ws) {
        for (uint32_t i = 0; i < x->o.threads; i++) {
            struct worker *w = x->ws[i];
            if (!w) continue;
            for (uint32_t c = 0; w->wc && c < conns_of(&x->o, i); c++) {
                rb_resp_free(&w->wc[c].rp);
                free(w->wc[c].q);
            }
            free(w->wc);
            free(w);
        }
        free(x->ws);
    }
    rb_scen_free(&x->sc);
    free(x->run.ser.rows);
    pthread_mutex_destroy(&x->run.ser.mu);
}

/* A fresh run with the parsed options x->o. */
static void init_run(struct ctx *x)
{
    memset(&x->sc, 0, sizeof(x->sc));
    memset(&x->run, 0, sizeof(x->run));
    x->ws = NULL;
    x->started = 0;
    x->run.o = &x->o;
    x->run.req = &x->sc.req;
    x->run.ok_lo = 200;
    /* 1MRC acknowledges with 200 only; unverified runs accept any 2xx (nginx: 204) */
    x->run.ok_hi = x->o.no_verify ? 299 : x->o.scen == RB_EVENT ? 200 : 399;
    series_init(&x->run.ser);
}

/* CPU time (user + system, every thread) of process pid in microseconds; -1 if unreadable.
   Its CPU-time clock first (ns: a 1 s sweep step at 500 req/s costs the server ~2 ms, under
   one 10 ms tick of /proc's utime+stime, which then read 0), /proc where that clock is
   refused. */
static long long proc_cpu_us(int pid)
{
    clockid_t cid;
    struct timespec ts;
    if (clock_getcpuclockid((pid_t)pid, &cid) == 0 && clock_gettime(cid, &ts) == 0)
        return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    unsigned long long ut, st;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (long long)((ut + st) * 1000000ull / (unsigned long long)sysconf(_SC_CLK_TCK));
}

/* One complete run (setup, load, report) with the options as they are. Returns the exit code
   and fills *row (if not NULL). */
static int run_once(struct ctx *x, const sigset_t *sigs, struct rb_sweep_row *row)
{
    init_run(x);
    int code = rb_scen_setup(&x->sc, &x->o);
    if (code) goto out;
    if (make_workers(x) < 0) {
        fprintf(stderr, "ringbench: out of memory\n");
        code = 1;
        goto out;
    }
    long long c0 = x->o.server_pid ? proc_cpu_us(x->o.server_pid) : -1;
    run_workers(x, sigs);
    long long c1 = x->o.server_pid ? proc_cpu_us(x->o.server_pid) : -1;
    code = report(x, row);
    if (row)
        row->cpu_us_per_req = c0 >= 0 && c1 >= c0 && row->requests
                                  ? (double)(c1 - c0) / (double)row->requests
                                  : -1;
out:
    free_run(x);
    return code;
}

/* --rate-sweep: one run per rate, then the table (and PREFIX-sweep.svg). Exit code: the worst. */
static int sweep(struct ctx *x, const sigset_t *sigs)
{
    struct rb_sweep_row rows[RB_SWEEP_MAX] = {0};
    int code = 0;
    const char *out = x->o.out;
    x->o.out = NULL; /* per-run series files would overwrite each other */
    for (unsigned i = 0; i < x->o.nsweep; i++) {
        x->o.rate = x->o.sweep[i];
        printf("sweep      %u/%u: offered %.0f req/s\n", i + 1, x->o.nsweep, x->o.rate);
        int rc = run_once(x, sigs, &rows[i]);
        if (rc > code) code = rc;
    }
    rb_report_sweep(stdout, rows, x->o.nsweep);
    if (out) {
        size_t pl = strlen(out) + 16;
        char *p = malloc(pl), title[600];
        if (p) {
            snprintf(p, pl, "%s-sweep.svg", out);
            snprintf(title, sizeof(title), "ringbench %s %s: server CPU per request (c=%u)",
                     rb_args_scenarios[x->o.scen], x->o.url_s, x->o.conns);
            int rc = rb_report_sweep_svg(p, title, rows, x->o.nsweep);
            if (rc < 0) fprintf(stderr, "ringbench: %s: %s\n", p, strerror(-rc));
            free(p);
        }
    }
    return code;
}

int main(int argc, char **argv)
{
    static struct ctx x; /* ~10 KB of paths: keep it off the stack */
    rb_args_parse(argc, argv, &x.o);
    signal(SIGPIPE, SIG_IGN);
    /* SIGINT/SIGTERM go to the main thread only (sigtimedwait in run_workers); the workers
       inherit the blocked mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    struct rb_sweep_row row;
    int code = x.o.nsweep ? sweep(&x, &sigs) : run_once(&x, &sigs, x.o.server_pid ? &row : NULL);
    if (!x.o.nsweep && x.o.server_pid && row.cpu_us_per_req >= 0)
        printf("server     %.2f us of CPU per request (pid %d)\n", row.cpu_us_per_req,
               x.o.server_pid);
    rb_args_free(&x.o);
    return code;
}
