/*
 * conninfo — the libpq connection strings of --db (SPEC §4): checking one parses (libpq's own
 * PQconninfoParse, so what start-up accepts is what the persister can use) and masking its
 * secrets for logs and error messages. The only module of the config layer that links libpq.
 *
 * Threads: any (pure but for PQconninfoParse's allocations); used by src/config on main.
 */
#ifndef RC_CONNINFO_H
#define RC_CONNINFO_H

#include <stddef.h>

/* 0 if v is a conninfo string or URI libpq accepts; else -EINVAL with libpq's reason in why. */
int conninfo_check(const char *v, char *why, size_t wcap);
/* Copy a libpq conninfo string or URI into out with the values of password/sslpassword
   replaced by "***" (URI: user:***@ and ?password=***); anything after a point where the
   conninfo stops parsing is replaced by "***" too. NUL-terminated. Length or -ENOSPC. */
int conninfo_mask(const char *in, char *out, size_t cap);

#endif
