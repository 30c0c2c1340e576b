/* Unit tests for uring/ring on the real kernel: ring_create's flags and sizes (SINGLE_ISSUER
   enforced, a CQ of 4x) and its fallback chain (io_uring_queue_init_params is interposed to
   refuse flags), ring_probe's causes (a seccomp filter makes io_uring_setup or the buffer-ring
   registration fail with a chosen errno), the hand-made provided-buffer ring (every buffer
   handed out once, -ENOBUFS when all are out, put is invisible until commit, buffer size,
   duplicate group, destroy) and ring_sqe on a full SQ.

   Each Criterion test runs in its own process, so a seccomp filter or an interposer setting
   dies with its test. SPEC §1: receives use provided buffer rings; no worker ever blocks. */
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ring.h"

TestSuite(ring, .timeout = 20);

/* ---- interposed io_uring_queue_init_params: ring.o calls this one, which records each try
   and refuses the flags the test names with -EINVAL (as an older kernel does). ---- */

static struct {
    bool on;
    unsigned refuse; /* a try carrying any of these flags gets -EINVAL */
    int fail_rc;     /* != 0: every try gets this */
    int calls;
    unsigned flags[8], entries[8], cq_entries[8];
} g_init;

int io_uring_queue_init_params(unsigned entries, struct io_uring *ring, struct io_uring_params *p)
{
    typedef int (*init_fn)(unsigned, struct io_uring *, struct io_uring_params *);
    static init_fn real;
    if (!real)
        real = (init_fn)dlsym(RTLD_NEXT, "io_uring_queue_init_params");
    if (g_init.on) {
        int i = g_init.calls++;
        if (i < 8) {
            g_init.flags[i] = p->flags;
            g_init.entries[i] = entries;
            g_init.cq_entries[i] = p->cq_entries;
        }
        if (g_init.fail_rc)
            return g_init.fail_rc;
        if (p->flags & g_init.refuse)
            return -EINVAL;
    }
    return real(entries, ring, p);
}

/* ---- helpers ---- */

#define SQ_EXPECT (IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL)
#define DEFER (IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN)

/* What a CQE said (copied: the CQE itself goes back to the ring). */
struct cqe {
    int32_t res;
    uint32_t flags;
    uint64_t user_data;
};

/* The next CQE within 2 s (a lost completion fails the test instead of hanging it). */
static struct cqe wait_one(struct io_uring *r)
{
    struct io_uring_cqe *cqe = NULL;
    struct __kernel_timespec ts = {.tv_sec = 2};
    int rc = io_uring_wait_cqe_timeout(r, &cqe, &ts);
    cr_assert_eq(rc, 0, "no completion: %s", strerror(-rc));
    struct cqe c = {cqe->res, cqe->flags, cqe->user_data};
    io_uring_cqe_seen(r, cqe);
    return c;
}

/* One recv on fd with buffer selection from group bgid; its CQE. */
static struct cqe recv_one(struct io_uring *r, int fd, uint16_t bgid)
{
    struct io_uring_sqe *sqe = ring_sqe(r);
    io_uring_prep_recv(sqe, fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = bgid;
    cr_assert_eq(io_uring_submit(r), 1);
    return wait_one(r);
}

static int bid_of(const struct cqe *c)
{
    cr_assert(c->flags & IORING_CQE_F_BUFFER, "no buffer in a CQE of res %d", c->res);
    return (int)(c->flags >> IORING_CQE_BUFFER_SHIFT);
}

static void make_ring(struct io_uring *r, unsigned entries)
{
    const char *mode = NULL;
    int rc = ring_create(r, entries, &mode);
    cr_assert_eq(rc, 0, "ring_create(%u): %s", entries, strerror(-rc));
}

/* A ring and a datagram socket pair: one recv gets one whole datagram. */
struct fx {
    struct io_uring r;
    int sv[2];
};

static void fx_open(struct fx *f, unsigned entries)
{
    make_ring(&f->r, entries);
    cr_assert_eq(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, f->sv), 0, "%s",
                 strerror(errno));
}

static void fx_close(struct fx *f)
{
    close(f->sv[0]);
    close(f->sv[1]);
    io_uring_queue_exit(&f->r);
}

/* ---- ring_create ---- */

Test(ring, create_uses_single_issuer_defer_taskrun_and_a_4x_cq)
{
    struct io_uring r;
    const char *mode = NULL;
    cr_assert_eq(ring_create(&r, 64, &mode), 0);
    /* Linux >= 6.1 (what ring_probe asks for) accepts the best flags: no fallback here */
    cr_expect_str_eq(mode, "single_issuer+defer_taskrun");
    cr_expect_eq(r.flags & (DEFER | SQ_EXPECT), DEFER | SQ_EXPECT, "flags %#x", r.flags);
    cr_expect_eq(*r.sq.kring_entries, 64);
    cr_expect_eq(*r.cq.kring_entries, 256);
    io_uring_queue_exit(&r);
}

Test(ring, create_rounds_entries_up_and_keeps_the_cq_at_4x)
{
    struct io_uring r;
    make_ring(&r, 100);
    cr_expect_eq(*r.sq.kring_entries, 128);
    cr_expect_eq(*r.cq.kring_entries, 512); /* 400 rounded up */
    io_uring_queue_exit(&r);
}

Test(ring, create_refuses_bad_sizes)
{
    struct io_uring r;
    const char *mode = "untouched";
    cr_expect_eq(ring_create(&r, 0, &mode), -EINVAL);
    cr_expect_eq(ring_create(&r, 65536, &mode), -EINVAL); /* IORING_MAX_ENTRIES is 32768 */
    cr_expect_str_eq(mode, "untouched", "mode set by a failed create");
}

static void *submit_elsewhere(void *arg)
{
    struct io_uring *r = arg;
    io_uring_prep_nop(io_uring_get_sqe(r));
    return (void *)(intptr_t)io_uring_submit(r);
}

/* SINGLE_ISSUER is why ring.h says "from the thread that will own the ring": another thread's
   submit is refused. */
Test(ring, another_thread_cannot_submit)
{
    struct io_uring r;
    make_ring(&r, 8);
    pthread_t th;
    void *res;
    cr_assert_eq(pthread_create(&th, NULL, submit_elsewhere, &r), 0);
    pthread_join(th, &res);
    cr_expect_eq((int)(intptr_t)res, -EEXIST);
    /* the owner still can: the refused NOP was left in the SQ and goes with this one */
    io_uring_prep_nop(ring_sqe(&r));
    cr_expect_geq(io_uring_submit(&r), 1);
    cr_expect_eq(wait_one(&r).res, 0);
    io_uring_queue_exit(&r);
}

Test(ring, create_falls_back_when_flags_are_refused)
{
    struct io_uring r;
    const char *mode = NULL;
    g_init.on = true;
    g_init.refuse = IORING_SETUP_SINGLE_ISSUER;
    cr_assert_eq(ring_create(&r, 32, &mode), 0);
    cr_expect_str_eq(mode, "coop_taskrun");
    cr_expect_eq(g_init.calls, 2);
    cr_expect(r.flags & IORING_SETUP_COOP_TASKRUN);
    cr_expect_not(r.flags & DEFER);
    io_uring_queue_exit(&r);

    g_init.calls = 0;
    g_init.refuse = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN;
    cr_assert_eq(ring_create(&r, 32, &mode), 0);
    cr_expect_str_eq(mode, "plain");
    cr_expect_eq(g_init.calls, 3);
    /* every try asks for the 4x CQ and SUBMIT_ALL */
    for (int i = 0; i < 3; i++) {
        cr_expect_eq(g_init.flags[i] & SQ_EXPECT, SQ_EXPECT, "try %d: flags %#x", i,
                     g_init.flags[i]);
        cr_expect_eq(g_init.entries[i], 32);
        cr_expect_eq(g_init.cq_entries[i], 128);
    }
    cr_expect_eq(g_init.flags[2] & ~SQ_EXPECT, 0, "plain try has flags %#x", g_init.flags[2]);
    cr_expect_eq(*r.cq.kring_entries, 128);
    io_uring_queue_exit(&r);
}

Test(ring, create_returns_other_errors_at_once)
{
    struct io_uring r;
    const char *mode = NULL;
    g_init.on = true;
    g_init.fail_rc = -ENOMEM; /* RLIMIT_MEMLOCK: weaker flags would not help */
    cr_expect_eq(ring_create(&r, 32, &mode), -ENOMEM);
    cr_expect_eq(g_init.calls, 1);
    g_init.calls = 0;
    g_init.fail_rc = -EINVAL; /* refused whatever the flags: each is tried, -EINVAL at the end */
    cr_expect_eq(ring_create(&r, 32, &mode), -EINVAL);
    cr_expect_eq(g_init.calls, 3);
}

/* ---- ring_probe ---- */

#if defined(__x86_64__)
#define RC_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define RC_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

/* Make syscall nr fail with err from now on in this process (when op >= 0: only when its second
   argument is op, e.g. one io_uring_register opcode). */
static void seccomp_fail(long nr, long op, int err)
{
#ifdef RC_AUDIT_ARCH
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, RC_AUDIT_ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)nr, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[1])),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)op, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, op >= 0 ? SECCOMP_RET_ALLOW : SECCOMP_RET_ERRNO | (unsigned)err),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (unsigned)err),
    };
    struct sock_fprog prog = {.len = sizeof(f) / sizeof(f[0]), .filter = f};
    cr_assert_eq(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0, "%s", strerror(errno));
    cr_assert_eq(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog), 0, "%s", strerror(errno));
#else
    (void)nr, (void)op, (void)err;
    cr_skip_test("seccomp filter not written for this architecture");
#endif
}

static int io_uring_disabled(void)
{
    FILE *f = fopen("/proc/sys/kernel/io_uring_disabled", "r");
    int v = 0;
    if (f) {
        if (fscanf(f, "%d", &v) != 1)
            v = 0;
        fclose(f);
    }
    return v;
}

Test(ring, probe_passes_on_this_kernel)
{
    char why[256] = "";
    int rc = ring_probe(why, sizeof(why));
    cr_expect_eq(rc, 0, "ring_probe: %s", why);
    cr_expect_str_eq(why, "", "a cause written on success");
}

/* Each refusal of io_uring_setup is explained with its fix. */
static void expect_probe(int err, const char *needle)
{
    char why[256] = "";
    seccomp_fail(__NR_io_uring_setup, -1, err);
    cr_expect_eq(ring_probe(why, sizeof(why)), -err);
    cr_expect(strstr(why, needle), "errno %d: why is \"%s\", wanted \"%s\"", err, why, needle);
}

Test(ring, probe_explains_enosys)
{
    expect_probe(ENOSYS, "needs Linux >= 6.1 built with CONFIG_IO_URING");
}

Test(ring, probe_explains_eperm)
{
    /* with kernel.io_uring_disabled > 0 the sysctl is the cause, else a seccomp policy */
    expect_probe(EPERM, io_uring_disabled() > 0 ? "sysctl -w kernel.io_uring_disabled=0"
                                                : "seccomp filter or container policy");
}

Test(ring, probe_explains_enomem)
{
    expect_probe(ENOMEM, "raise RLIMIT_MEMLOCK");
}

Test(ring, probe_names_any_other_error)
{
    expect_probe(EFAULT, "io_uring_setup failed: Bad address");
}

Test(ring, probe_requires_provided_buffer_rings)
{
    char why[256] = "";
    seccomp_fail(__NR_io_uring_register, IORING_REGISTER_PBUF_RING, EINVAL);
    cr_expect_eq(ring_probe(why, sizeof(why)), -EINVAL);
    cr_expect(strstr(why, "lacks io_uring provided buffer rings"), "why: %s", why);
}

Test(ring, probe_cause_is_cut_to_cap)
{
    char why[8];
    memset(why, 'x', sizeof(why));
    seccomp_fail(__NR_io_uring_setup, -1, ENOMEM);
    cr_expect_eq(ring_probe(why, sizeof(why)), -ENOMEM);
    cr_expect_eq(strnlen(why, sizeof(why)), sizeof(why) - 1);
}

/* ---- ring_bufs ---- */

Test(ring, bufs_refuse_bad_counts_and_stay_destroyable)
{
    struct io_uring r;
    make_ring(&r, 8);
    static const uint32_t bad[] = {0, 3, 100, 65536};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct ring_bufs b;
        memset(&b, 0xa5, sizeof(b));
        cr_expect_eq(ring_bufs_create(&r, &b, bad[i], 256, 1), -EINVAL, "count %u", bad[i]);
        cr_expect_null(b.br, "count %u left a ring", bad[i]);
        cr_expect_null(b.mem);
        cr_expect_eq(b.count, 0);
        ring_bufs_destroy(&r, &b); /* a no-op, not a crash */
    }
    io_uring_queue_exit(&r);
}

Test(ring, bufs_hand_out_every_buffer_once_then_enobufs)
{
    struct fx f;
    struct ring_bufs b;
    fx_open(&f, 16);
    cr_assert_eq(ring_bufs_create(&f.r, &b, 8, 256, 7), 0);
    cr_expect_eq(b.count, 8);
    cr_expect_eq(b.size, 256);
    cr_expect_eq(b.mask, 7);
    cr_expect_eq(b.bgid, 7);
    cr_expect_eq(b.pending, 0, "buffers added but not committed");
    unsigned seen = 0;
    for (int i = 0; i < 8; i++) {
        char msg[32];
        int n = snprintf(msg, sizeof(msg), "datagram %d", i);
        cr_assert_eq(send(f.sv[1], msg, (size_t)n, 0), n);
        struct cqe c = recv_one(&f.r, f.sv[0], 7);
        cr_assert_eq(c.res, n, "recv %d: %d", i, c.res);
        int bid = bid_of(&c);
        cr_assert(bid >= 0 && bid < 8, "bid %d", bid);
        cr_expect_not(seen & (1u << bid), "bid %d handed out twice", bid);
        seen |= 1u << bid;
        cr_expect_eq(memcmp(ring_bufs_data(&b, (uint16_t)bid), msg, (size_t)n), 0);
        cr_expect_eq(ring_bufs_data(&b, (uint16_t)bid), b.mem + (size_t)bid * 256);
    }
    cr_expect_eq(seen, 0xff);
    /* all 8 out: the kernel has nothing to receive into */
    cr_assert_eq(send(f.sv[1], "late", 4, 0), 4);
    cr_expect_eq(recv_one(&f.r, f.sv[0], 7).res, -ENOBUFS);
    /* a buffer given back is invisible until committed */
    ring_bufs_put(&b, 5);
    cr_expect_eq(recv_one(&f.r, f.sv[0], 7).res, -ENOBUFS);
    ring_bufs_commit(&b);
    cr_expect_eq(b.pending, 0);
    struct cqe c = recv_one(&f.r, f.sv[0], 7);
    cr_expect_eq(c.res, 4);
    cr_expect_eq(bid_of(&c), 5);
    cr_expect_eq(memcmp(ring_bufs_data(&b, 5), "late", 4), 0);
    ring_bufs_destroy(&f.r, &b);
    fx_close(&f);
}

Test(ring, bufs_are_registered_with_their_size)
{
    struct fx f;
    struct ring_bufs b;
    char big[300];
    fx_open(&f, 8);
    cr_assert_eq(ring_bufs_create(&f.r, &b, 2, 256, 0), 0);
    memset(big, 'q', sizeof(big));
    cr_assert_eq(send(f.sv[1], big, sizeof(big), 0), (ssize_t)sizeof(big));
    struct cqe c = recv_one(&f.r, f.sv[0], 0);
    cr_expect_eq(c.res, 256, "a 300-byte datagram into 256-byte buffers gave %d", c.res);
    ring_bufs_destroy(&f.r, &b);
    fx_close(&f);
}

Test(ring, bufs_group_taken_is_refused_and_the_first_keeps_working)
{
    struct fx f;
    struct ring_bufs a, b;
    fx_open(&f, 8);
    cr_assert_eq(ring_bufs_create(&f.r, &a, 4, 128, 3), 0);
    cr_expect_eq(ring_bufs_create(&f.r, &b, 4, 128, 3), -EEXIST);
    cr_expect_null(b.br);
    cr_expect_null(b.mem);
    ring_bufs_destroy(&f.r, &b);
    cr_assert_eq(send(f.sv[1], "x", 1, 0), 1);
    struct cqe c = recv_one(&f.r, f.sv[0], 3);
    cr_expect_eq(c.res, 1);
    cr_expect(bid_of(&c) < 4);
    ring_bufs_destroy(&f.r, &a);
    fx_close(&f);
}

Test(ring, bufs_destroy_unregisters_the_group)
{
    struct fx f;
    struct ring_bufs b;
    fx_open(&f, 8);
    cr_assert_eq(ring_bufs_create(&f.r, &b, 4, 128, 9), 0);
    ring_bufs_destroy(&f.r, &b);
    cr_expect_null(b.br);
    cr_expect_null(b.mem);
    ring_bufs_destroy(&f.r, &b); /* twice: a no-op */
    cr_assert_eq(send(f.sv[1], "x", 1, 0), 1);
    cr_expect_eq(recv_one(&f.r, f.sv[0], 9).res, -ENOBUFS);
    /* and the group id can be registered again */
    cr_expect_eq(ring_bufs_create(&f.r, &b, 4, 128, 9), 0);
    ring_bufs_destroy(&f.r, &b);
    fx_close(&f);
}

/* ---- ring_sqe ---- */

Test(ring, sqe_submits_a_full_sq_instead_of_returning_null)
{
    struct io_uring r;
    make_ring(&r, 4);
    for (uint64_t i = 0; i < 4; i++) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(&r);
        cr_assert_not_null(sqe, "sqe %d", (int)i);
        io_uring_prep_nop(sqe);
        sqe->user_data = i;
    }
    cr_assert_null(io_uring_get_sqe(&r), "the SQ of 4 is not full after 4");
    struct io_uring_sqe *sqe = ring_sqe(&r);
    cr_assert_not_null(sqe);
    io_uring_prep_nop(sqe);
    sqe->user_data = 4;
    cr_expect_eq(io_uring_submit(&r), 1, "the first 4 were not submitted by ring_sqe");
    unsigned got = 0;
    for (int i = 0; i < 5; i++) {
        struct cqe c = wait_one(&r);
        cr_expect_eq(c.res, 0);
        cr_assert_lt(c.user_data, 5);
        got |= 1u << c.user_data;
    }
    cr_expect_eq(got, 0x1f);
    io_uring_queue_exit(&r);
}
