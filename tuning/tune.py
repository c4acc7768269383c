#!/usr/bin/env python3
"""Ringline host tuning: `check` reads the live kernel settings and says, for a target
number of connections, which fall short and by how much (it changes nothing; the exit
code says whether the host is ready); `apply` raises the ones that fall short, shows
before and after, never lowers a value, and says so politely where the kernel or the
permissions refuse.

    tuning/check [--connections N] [--processes P]
    tuning/apply [--connections N] [--processes P] [--dry-run]

The needs scale with N (default 1,000,000) and with P, the edge processes sharing the
port (default 1: per-process limits must hold all N); each comes with its reason. Values are
read from and written to /proc/sys (RINGLINE_SYSCTL_ROOT overrides it, for tests).
"""

import argparse
import errno
import os
import resource
import sys

PAGE = 4096


def root():
    return os.environ.get("RINGLINE_SYSCTL_ROOT", "/proc/sys")


def path_of(key):
    return os.path.join(root(), *key.split("."))


def read(key):
    """The live value as a list of ints, or None when the kernel has no such setting."""
    try:
        with open(path_of(key)) as f:
            return [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return None


def fmt(v):
    return "(absent)" if v is None else " ".join(str(x) for x in v)


class Need:
    """One setting: how to judge a live value against the need, and what to write."""

    def __init__(self, key, want, reason, judge="min", optional=False):
        self.key = key
        self.want = want  # list of ints, one per field
        self.reason = reason
        self.judge = judge  # "min": every field >= want; "max": field <= want; "range"; "oneof"
        self.optional = optional  # absent from the kernel (module not loaded): fine

    def short(self, live):
        """None when `live` satisfies the need, else a short description of the gap."""
        if live is None:
            return None if self.optional else "not available in this kernel"
        if self.judge == "min":
            gaps = [
                f"{w - l:,} short" for l, w in zip(live, self.want) if l < w
            ]
            return ", ".join(gaps) or None
        if self.judge == "max":
            return None if live[0] <= self.want[0] else f"{live[0] - self.want[0]:,} too high"
        if self.judge == "range":
            lo, hi = live[0], live[-1]
            width, need = hi - lo + 1, self.want[1] - self.want[0] + 1
            return None if width >= need else f"{need - width:,} ports short"
        if self.judge == "oneof":
            return None if live[0] in self.want else f"is {live[0]}"
        raise ValueError(self.judge)

    def target(self, live):
        """The value `apply` writes: the need, without lowering any field."""
        if live is None or self.judge in ("range", "oneof", "max"):
            if self.judge == "max" and live is not None:
                return [self.want[0]] + live[1:]
            return self.want[:1] if self.judge == "oneof" else self.want
        return [max(l, w) for l, w in zip(live, self.want)]


def needs(n, procs=1):
    """Every kernel setting a host needs for `n` connections on `procs` edge processes."""
    queue = min(65535, max(4096, n // 16))
    out = [
        Need("fs.nr_open", [-(-n // procs) + 65536],
             "caps every process's RLIMIT_NOFILE: an edge process holds its share of N sockets, plus links and files"),
        Need("fs.file-max", [3 * n + 262144],
             "system-wide open files: the edge's N sockets, a proxy's 2N on the same host, and headroom"),
        Need("net.core.somaxconn", [queue],
             "accept queue: absorbs a reconnect wave (a drained edge's clients all come back at once)"),
        Need("net.ipv4.tcp_max_syn_backlog", [queue],
             "half-open connections waiting for their ACK during the same wave"),
        Need("net.core.netdev_max_backlog", [min(16384, max(1000, n // 64))],
             "packets queued per CPU before the stack drops them during bursts"),
        Need("net.ipv4.tcp_mem", [n // 4, n, n * 3 // 2],
             "pages for all TCP buffers: one page per connection with unread or unsent bytes, before pressure (2nd) and refusal (3rd)"),
        Need("net.ipv4.tcp_rmem", [4096], "receive buffer minimum of one page keeps idle sockets cheap", judge="max"),
        Need("net.ipv4.tcp_wmem", [4096], "send buffer minimum of one page keeps idle sockets cheap", judge="max"),
        Need("net.ipv4.ip_local_port_range", [1024, 1024 + min(64511, n + 4096)],
             "ephemeral ports for a proxy's or load generator's connections to each edge address", judge="range"),
        Need("net.ipv4.tcp_tw_reuse", [1, 2],
             "load generators and proxies reuse TIME_WAIT ports (2 = loopback only, the kernel default)", judge="oneof"),
        Need("net.netfilter.nf_conntrack_max", [2 * n + 65536],
             "when conntrack is loaded, every connection (twice behind a local proxy) needs an entry, or NOTRACK them",
             optional=True),
    ]
    return out


def table(rows, header):
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))


def nofile_row(n, procs):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = -(-n // procs) + 1024
    gap = None if hard == resource.RLIM_INFINITY or hard >= need else f"{need - hard:,} short"
    return ["open-file limit of this shell (hard)", hard, need, gap,
            "processes started from here; systemd units set LimitNOFILE= (tuning/systemd/)"]


def check(n, procs):
    rows, short = [], 0
    for need in needs(n, procs):
        live = read(need.key)
        gap = need.short(live)
        short += gap is not None
        rows.append([need.key, fmt(live), fmt(need.want) if need.judge != "oneof" else "1 or 2",
                     gap or "ok", need.reason])
    lim = nofile_row(n, procs)
    short += lim[3] is not None
    rows.append([lim[0], lim[1], lim[2], lim[3] or "ok", lim[4]])
    print(f"Ringline host check for {n:,} connections on {procs} edge process(es) ({root()}):\n")
    table(rows, ["setting", "live", "needed", "status", "why"])
    print()
    if short:
        print(f"NOT READY: {short} setting(s) fall short. `tuning/apply --connections {n} --processes {procs}` "
              "raises the kernel ones (as root).")
        return 1
    print("READY: every setting meets the need.")
    return 0


def write(key, value):
    with open(path_of(key), "w") as f:
        f.write(" ".join(str(x) for x in value) + "\n")


def apply(n, procs, dry_run):
    rows, refused = [], 0
    for need in needs(n, procs):
        live = read(need.key)
        if live is None:
            rows.append([need.key, "(absent)", "-", "nothing to do" if need.optional else "refused: the kernel has no such setting"])
            refused += not need.optional
            continue
        if need.short(live) is None:
            rows.append([need.key, fmt(live), fmt(live), "already ok"])
            continue
        target = need.target(live)
        if dry_run:
            rows.append([need.key, fmt(live), fmt(target), "would change (--dry-run)"])
            continue
        try:
            write(need.key, target)
        except PermissionError:
            why = "read-only here (a container, or a read-only setting)" if os.geteuid() == 0 else \
                "permission denied (run as root)"
            rows.append([need.key, fmt(live), fmt(live), f"refused: {why}"])
            refused += 1
            continue
        except OSError as e:
            why = {errno.EROFS: "read-only here (a container?)", errno.EINVAL: "the kernel rejects this value"}.get(
                e.errno, e.strerror)
            rows.append([need.key, fmt(live), fmt(live), f"refused: {why}"])
            refused += 1
            continue
        after = read(need.key)
        rows.append([need.key, fmt(live), fmt(after), "changed" if need.short(after) is None else "changed, still short"])
        refused += need.short(after) is not None
    print(f"Ringline host apply for {n:,} connections on {procs} edge process(es) ({root()}):\n")
    table(rows, ["setting", "before", "after", "result"])
    print()
    lim = nofile_row(n, procs)
    if lim[3] is not None:
        print(f"The open-file limit is a per-process limit, not a sysctl: set LimitNOFILE={lim[2]} in the units "
              "(tuning/systemd/) or `ulimit -Hn` where you start the processes.")
    print("To keep these across reboots: sudo cp tuning/sysctl.d/90-ringline.conf /etc/sysctl.d/ && sudo sysctl --system")
    return 1 if refused else 0


def main(argv):
    p = argparse.ArgumentParser(prog="tuning", description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=["check", "apply"])
    p.add_argument("--connections", type=int, default=1_000_000, help="target concurrent connections (default 1,000,000)")
    p.add_argument("--processes", type=int, default=1, help="edge processes sharing the port (default 1)")
    p.add_argument("--dry-run", action="store_true", help="apply: show what would change, change nothing")
    a = p.parse_args(argv)
    if a.connections < 1 or a.processes < 1:
        p.error("--connections and --processes must be at least 1")
    if a.command == "check":
        return check(a.connections, a.processes)
    return apply(a.connections, a.processes, a.dry_run)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
