/* Unit tests of src/clientaddr: trusted networks and the client behind proxies. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "clientaddr.h"

static struct ca_net nets[CA_MAX_NETS];
static size_t nn;

static void trust(const char *list)
{
    char err[128];
    cr_assert_eq(ca_parse_nets(list, nets, CA_MAX_NETS, &nn, err, sizeof(err)), 0, "%s", err);
}

/* The client of a request from peer with these headers, as text ("" for none). */
static const char *client(const char *peer, const char *xff, const char *fwd)
{
    static char out[64];
    uint8_t pa[16] = {0}, a[16], f;
    uint8_t pf = strchr(peer, ':') ? AF_INET6 : AF_INET;
    cr_assert_eq(inet_pton(pf, peer, pa), 1, "%s", peer);
    ca_client(nets, nn, pf, pa, xff, xff ? strlen(xff) : 0, fwd, fwd ? strlen(fwd) : 0, &f, a);
    inet_ntop(f, a, out, sizeof(out));
    return out;
}

Test(clientaddr, parse_networks)
{
    char err[128];
    cr_assert_eq(ca_parse_nets("", nets, CA_MAX_NETS, &nn, err, sizeof(err)), 0);
    cr_assert_eq(nn, 0);
    trust(" 127.0.0.1 , 10.0.0.0/8,::1,fd00::/8 ");
    cr_assert_eq(nn, 4);
    cr_assert_eq(nets[0].bits, 32);
    cr_assert_eq(nets[1].bits, 8);
    cr_assert_eq(nets[2].bits, 128);
    static const char *const bad[] = {"10.0.0.0/33", "::/129", "10.0.0/8", "bogus", "1.2.3.4/",
                                      "1.2.3.4/x", ",", "10.0.0.0/8,,"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(ca_parse_nets(bad[i], nets, CA_MAX_NETS, &nn, err, sizeof(err)), -EINVAL,
                     "%s", bad[i]);
    cr_assert_eq(ca_parse_nets("1.1.1.1,2.2.2.2", nets, 1, &nn, err, sizeof(err)), -ENOSPC);
}

Test(clientaddr, trusted_prefixes)
{
    trust("10.1.0.0/16,192.168.1.128/25,fd00::/8");
    uint8_t a[16] = {0};
    inet_pton(AF_INET, "10.1.255.3", a);
    cr_assert(ca_trusted(nets, nn, AF_INET, a));
    inet_pton(AF_INET, "10.2.0.1", a);
    cr_assert_not(ca_trusted(nets, nn, AF_INET, a));
    inet_pton(AF_INET, "192.168.1.200", a);
    cr_assert(ca_trusted(nets, nn, AF_INET, a), "/25: a bit inside a byte");
    inet_pton(AF_INET, "192.168.1.100", a);
    cr_assert_not(ca_trusted(nets, nn, AF_INET, a));
    inet_pton(AF_INET6, "fdab::1", a);
    cr_assert(ca_trusted(nets, nn, AF_INET6, a));
    inet_pton(AF_INET6, "fe80::1", a);
    cr_assert_not(ca_trusted(nets, nn, AF_INET6, a));
}

Test(clientaddr, client_behind_trusted_proxies)
{
    trust("127.0.0.1,10.0.0.0/8");
    /* untrusted peer: its headers are ignored (a spoofed X-Forwarded-For counts for nothing) */
    cr_assert_str_eq(client("203.0.113.9", "1.2.3.4", NULL), "203.0.113.9");
    /* trusted peer: the rightmost untrusted address */
    cr_assert_str_eq(client("127.0.0.1", "198.51.100.7", NULL), "198.51.100.7");
    cr_assert_str_eq(client("127.0.0.1", "6.6.6.6, 198.51.100.7, 10.0.0.5", NULL),
                     "198.51.100.7", "the forged 6.6.6.6 left of the client is not taken");
    cr_assert_str_eq(client("127.0.0.1", "10.0.0.9, 10.0.0.5", NULL), "10.0.0.9",
                     "all hops trusted: the leftmost");
    cr_assert_str_eq(client("127.0.0.1", "198.51.100.7:5555", NULL), "198.51.100.7");
    cr_assert_str_eq(client("127.0.0.1", "[2001:db8::7]:443", NULL), "2001:db8::7");
    cr_assert_str_eq(client("127.0.0.1", "2001:db8::8", NULL), "2001:db8::8");
    cr_assert_str_eq(client("127.0.0.1", "::ffff:198.51.100.9", NULL), "198.51.100.9");
    /* malformed: the peer */
    cr_assert_str_eq(client("127.0.0.1", "198.51.100.7, garbage", NULL), "127.0.0.1");
    cr_assert_str_eq(client("127.0.0.1", "", NULL), "127.0.0.1");
    cr_assert_str_eq(client("127.0.0.1", " , ", NULL), "127.0.0.1");
    /* RFC 7239 Forwarded, when there is no X-Forwarded-For */
    cr_assert_str_eq(client("127.0.0.1", NULL, "for=192.0.2.60;proto=http;by=10.0.0.1"),
                     "192.0.2.60");
    cr_assert_str_eq(client("127.0.0.1", NULL, "for=192.0.2.43, For=\"[2001:db8:cafe::17]:4711\""),
                     "2001:db8:cafe::17");
    cr_assert_str_eq(client("127.0.0.1", NULL, "for=192.0.2.43, for=10.1.2.3"), "192.0.2.43");
    cr_assert_str_eq(client("127.0.0.1", NULL, "for=_hidden"), "127.0.0.1");
    cr_assert_str_eq(client("127.0.0.1", NULL, "proto=https"), "127.0.0.1");
    cr_assert_str_eq(client("127.0.0.1", "198.51.100.1", "for=192.0.2.60"), "198.51.100.1",
                     "X-Forwarded-For wins");
    /* no trusted networks at all: always the peer */
    nn = 0;
    cr_assert_str_eq(client("127.0.0.1", "198.51.100.7", NULL), "127.0.0.1");
}
