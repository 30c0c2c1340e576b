/*
 * Stand-in for <criterion/criterion.h>, used only by fuzz/seeds.c: it lets a unit-test file be
 * compiled for its case tables (the seeds of the fuzz corpora). Tests become unused static
 * functions and every assertion a no-op; nothing here ever runs a test.
 */
#ifndef FZ_FAKE_CRITERION_H
#define FZ_FAKE_CRITERION_H

#define Test(suite, name, ...) static void suite##_##name(void)
#define TestSuite(...) extern int fz_seed_unused_suite
#define FZ_NOOP(...) ((void)0)
#define cr_assert FZ_NOOP
#define cr_assert_eq FZ_NOOP
#define cr_assert_neq FZ_NOOP
#define cr_assert_geq FZ_NOOP
#define cr_assert_gt FZ_NOOP
#define cr_assert_leq FZ_NOOP
#define cr_assert_lt FZ_NOOP
#define cr_assert_not FZ_NOOP
#define cr_assert_not_null FZ_NOOP
#define cr_assert_null FZ_NOOP
#define cr_assert_str_eq FZ_NOOP
#define cr_assert_str_neq FZ_NOOP
#define cr_assert_fail FZ_NOOP
#define cr_expect FZ_NOOP
#define cr_expect_eq FZ_NOOP
#define cr_expect_neq FZ_NOOP
#define cr_expect_geq FZ_NOOP
#define cr_expect_gt FZ_NOOP
#define cr_expect_leq FZ_NOOP
#define cr_expect_lt FZ_NOOP
#define cr_expect_not FZ_NOOP
#define cr_expect_null FZ_NOOP
#define cr_expect_not_null FZ_NOOP
#define cr_expect_str_eq FZ_NOOP
#define cr_expect_str_neq FZ_NOOP
#define cr_log_info FZ_NOOP
#define cr_log_warn FZ_NOOP
#define cr_skip_test FZ_NOOP

#endif
