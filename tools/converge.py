#!/usr/bin/env python3
"""converge.py — how long a tenant-counter increment on one node takes to show on another.

Usage: tools/converge.py URL1 URL2 ADMIN_KEY [ROUNDS] [SYNC_MS]
  URL1, URL2: two ringcount nodes on one database (http://127.0.0.1:18081 ...), started with
  --rate-limit 0 (the polling is far over the default public limit).
Creates a tenant and a counter on node 1, then ROUNDS (100) times: a random pause of up to
SYNC_MS (1000: the nodes' --sync-ms; without it every round would start just after node 2's
feed ran and measure a whole period), one increment on node 1, and GETs on node 2 every
millisecond until its value shows the increment. Prints p50, p90,
p99 and max in ms, and the settings that bound them (--sync-ms plus one --flush-ms).
Python 3 standard library only (Debian's python3), like ../shared/bench/versus.py.
"""
import http.client
import json
import random
import sys
import time
import urllib.parse
import uuid


def conn(url):
    u = urllib.parse.urlsplit(url)
    return http.client.HTTPConnection(u.hostname, u.port or 80, timeout=10)


def call(c, method, path, body=None, key=None):
    h = {"Content-Type": "application/json"}
    if key:
        h["X-API-Key"] = key
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
    r = c.getresponse()
    data = r.read()
    if r.status >= 300:
        sys.exit(f"{method} {path}: {r.status} {data[:200]!r}")
    return json.loads(data) if data else None


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    a, b, key = conn(sys.argv[1]), conn(sys.argv[2]), sys.argv[3]
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 100
    sync_ms = int(sys.argv[5]) if len(sys.argv) > 5 else 1000
    t = call(a, "POST", "/tenants", {"label": "converge-" + uuid.uuid4().hex[:8]}, key)
    c = call(a, "POST", f"/tenants/{t['tenant_id']}/counters", {}, key)
    path = f"/tenants/{t['tenant_id']}/counters/{c['counter_id']}"
    call(b, "GET", path)  # node 2 caches it (a lookup), so rounds measure the feed only
    lat = []
    for _ in range(rounds):
        time.sleep(random.random() * sync_ms / 1000.0)
        v = call(a, "POST", path + "/inc")["value"]
        t0 = time.monotonic()
        while call(b, "GET", path)["value"] < v:
            time.sleep(0.001)
        lat.append((time.monotonic() - t0) * 1000.0)
    print(f"rounds {rounds}: p50 {pct(lat, 50):.0f} ms, p90 {pct(lat, 90):.0f} ms, "
          f"p99 {pct(lat, 99):.0f} ms, max {max(lat):.0f} ms")


if __name__ == "__main__":
    main()
