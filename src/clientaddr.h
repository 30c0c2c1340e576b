/*
 * clientaddr — who the client of a request is, for per-client rate limiting (SPEC §2.3),
 * behind proxies the operator trusts (`--trusted-proxies CIDR,...`).
 *
 * The peer address is the client unless the peer is a trusted proxy; then the client is the
 * rightmost address of `X-Forwarded-For` (or, without it, of the RFC 7239 `Forwarded` field's
 * `for=` parameters) that is not itself trusted — each trusted hop appends the address it
 * received from, so everything left of the first untrusted one may be forged by that client.
 * When every address is trusted the leftmost one is the client (all hops are ours). A
 * malformed header (an item that is not an address, an element without for=) falls back to
 * the peer; headers from an untrusted peer are never read.
 *
 * Owns nothing: pure functions over caller memory. Any thread; no allocation.
 */
#ifndef RC_CLIENTADDR_H
#define RC_CLIENTADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One trusted network: family AF_INET (addr[0..4)) or AF_INET6 (addr[0..16)), prefix bits. */
struct ca_net {
    uint8_t family;
    uint8_t bits;
    uint8_t addr[16];
};

/* Most networks in --trusted-proxies. */
#define CA_MAX_NETS 32

/* Parse "CIDR,CIDR,..." (e.g. "127.0.0.1,10.0.0.0/8,::1,fd00::/8"; a bare address is /32 or
   /128; spaces around items are allowed; "" is an empty list) into out[cap]. 0 and *n, or
   -EINVAL (err says which item) / -ENOSPC (more than cap). */
int ca_parse_nets(const char *s, struct ca_net *out, size_t cap, size_t *n, char *err,
                  size_t errcap);
/* Is addr (family as in struct ca_net) inside one of nets[0..n)? */
bool ca_trusted(const struct ca_net *nets, size_t n, uint8_t family, const uint8_t addr[16]);
/* The client of a request from peer (family, addr) with the X-Forwarded-For value xff and the
   Forwarded value fwd (either may be NULL/0 length), into *family / out (16 bytes). Returns
   true if a forwarded address was used, false if the peer was. */
bool ca_client(const struct ca_net *nets, size_t n, uint8_t peer_family, const uint8_t peer[16],
               const char *xff, size_t xff_len, const char *fwd, size_t fwd_len, uint8_t *family,
               uint8_t out[16]);

#endif
