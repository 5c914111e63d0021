#!/usr/bin/env python3
"""Summarise a perf profile of one workload, keeping only the samples taken
inside its timed regions (benches/profile.sh runs this; see
docs/BENCHMARKS.md).

usage: profile.py BIN PERF_DATA REGIONS LABEL [TOP]

REGIONS holds "label start_ns end_ns pid" lines written by the bench binary
(SHMSLAB_BENCH_REGIONS) on CLOCK_MONOTONIC, the clock `perf record -k
CLOCK_MONOTONIC` stamps samples with. Prints the share of the in-region
samples by symbol, by source line (innermost, inlined code included), and by
the innermost line inside the crate's own src/ (what shmslab code was running,
even when the sample hit an inlined std function).
"""
import collections
import os
import re
import subprocess
import sys

binary, data, regions_file, label = sys.argv[1:5]
top = int(sys.argv[5]) if len(sys.argv) > 5 else 15
crate_src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src") + "/"

regions = collections.defaultdict(list)
for line in open(regions_file):
    if len(line.split()) != 4:
        continue
    lab, t0, t1, pid = line.split()
    if lab == label:
        regions[int(pid)].append((int(t0), int(t1)))
if not regions:
    sys.exit(f"no region {label!r} in {regions_file}")


def inside(pid, t):
    return any(t0 <= t <= t1 for t0, t1 in regions.get(pid, ()))


script = subprocess.run(
    ["perf", "script", "-i", data, "-F", "pid,time,ip,sym,symoff,dso", "--ns"],
    capture_output=True, text=True, check=True).stdout
header_re = re.compile(r"^\s*(\d+)\s+(\d+)\.(\d+):\s*(.*)$")
frame_re = re.compile(r"^\s*([0-9a-f]+)\s+(.*?)(?:\+0x([0-9a-f]+))?\s+\((.*)\)$")
syscall_re = re.compile(r"^(?:__x64_sys_|__do_sys_|__se_sys_)(\w+)")
samples = []  # (sym, dso, ip, symoff, pid, kernel entry)
total = 0


def flush(cur):
    global total
    if cur is None or not cur[2]:
        return
    pid, t, frames = cur
    total += 1
    if not inside(pid, t):
        return
    ip, sym, off, dso = frames[0]
    entry = None
    if "kernel" in dso:
        entry = "interrupts, scheduling (not the workload's own)"
        for i, (_, fsym, _, fdso) in enumerate(frames):
            fsym = fsym or ""
            m = syscall_re.match(fsym)
            if m:
                entry = "syscall " + m.group(1)
                break
            if "page_fault" in fsym:
                entry = "page faults"
                break
            if fsym.startswith("entry_SYSCALL"):
                # Named by the libc wrapper that made it (kernel sys_* are
                # often inlined).
                user = frames[i + 1][1] if i + 1 < len(frames) else ""
                name = re.sub(r"^(__GI_)?_*", "", user or "?")
                name = re.split(r"64|_nocancel", name)[0] or "?"
                entry = "syscall " + name
                break
    samples.append((sym or "[unknown]", dso, int(ip, 16), int(off, 16) if off else None, pid, entry))


cur = None
for line in script.splitlines():
    m = header_re.match(line)
    if m:
        flush(cur)
        pid, sec, ns, rest = m.groups()
        cur = (int(pid), int(sec) * 1_000_000_000 + int(ns.ljust(9, "0")[:9]), [])
        line = rest
        if not line.strip():
            continue
    if cur is not None:
        f = frame_re.match(line)
        if f:
            cur[2].append(f.groups())
flush(cur)

n = len(samples)
print(f"### {label}: {n} samples inside the timed regions ({total} in the whole run)")
if not n:
    sys.exit(0)
kernel = sum(1 for s in samples if "kernel" in s[1])
print(f"kernel: {100 * kernel / n:.1f}%   user: {100 * (n - kernel) / n:.1f}%\n")

if kernel:
    print("kernel time by entry point (from kernel call chains):")
    for e, c in collections.Counter(s[5] for s in samples if s[5]).most_common(top):
        print(f"  {100 * c / n:5.1f}%  {e}")
    print()
print("by symbol (self):")
for (sym, dso), c in collections.Counter((s[0], os.path.basename(s[1])) for s in samples).most_common(top):
    print(f"  {100 * c / n:5.1f}%  {sym}  [{dso}]")

# Map the binary's runtime addresses to file addresses, per process (ASLR),
# through a symbol whose name is unique in the binary.
nm = subprocess.run(["nm", "-C", "--defined-only", binary], capture_output=True, text=True).stdout
sym_addr = {}
seen = collections.Counter()
for line in nm.splitlines():
    parts = line.split(" ", 2)
    if len(parts) == 3:
        name = re.sub(r"::h[0-9a-f]{16}$", "", parts[2])
        seen[name] += 1
        sym_addr[name] = int(parts[0], 16)
bias = {}
for sym, dso, ip, off, pid, _ in samples:
    if pid not in bias and dso == binary and off is not None and seen[sym] == 1:
        bias[pid] = ip - off - sym_addr[sym]
mine = [s[2] - bias[s[4]] for s in samples if s[1] == binary and s[4] in bias]
if not mine:
    sys.exit(0)
addrs = sorted(set(mine))
out = subprocess.run(["addr2line", "-a", "-i", "-f", "-C", "-e", binary],
                     input="\n".join(hex(a) for a in addrs), capture_output=True, text=True).stdout
chains = {}
cur = None
lines = out.splitlines()
i = 0
while i < len(lines):
    if lines[i].startswith("0x"):
        cur = int(lines[i], 16)
        chains[cur] = []
        i += 1
        continue
    func, loc = lines[i], lines[i + 1] if i + 1 < len(lines) else "?"
    chains[cur].append((re.sub(r"::h[0-9a-f]{16}$", "", func), re.sub(r" \(discriminator \d+\)", "", loc)))
    i += 2

src_cache = {}


def source(loc):
    path, _, ln = loc.rpartition(":")
    if "/library/" in path:
        return ""
    try:
        text = src_cache.setdefault(path, open(path).read().split("\n"))
        return text[int(ln) - 1].strip()[:80]
    except (OSError, ValueError, IndexError):
        return ""


def short(loc):
    if "/library/" in loc:
        return "library/" + loc.split("/library/", 1)[1]
    if "/registry/src/" in loc:
        return loc.split("/registry/src/", 1)[1].split("/", 1)[1]
    return re.sub(r".*/(src|benches)/", r"\1/", loc)


inner = collections.Counter()
crate = collections.Counter()
api = collections.Counter()
api["[kernel]"] = kernel
for a in mine:
    chain = chains.get(a) or [("?", "?")]
    entry = next((f for f, _ in reversed(chain) if f.startswith(("shmslab::", "rts_alloc::"))), None)
    api[entry or "(bench loop, outside the allocator)"] += 1
    inner[(chain[0][0], chain[0][1])] += 1
    own = next(((f, l) for f, l in chain if l.startswith(crate_src)), None)
    crate[own if own else ("(outside src/)", chain[0][0])] += 1

api["(other libraries, or unresolved)"] = n - sum(api.values())
print("\nby outermost allocator function on the stack (the API call, inlined code included):")
for f, c in api.most_common(top):
    if c:
        print(f"  {100 * c / n:5.1f}%  {f}")
print("\nby source line (innermost; inlined std code shows as library/...):")
for (func, loc), c in inner.most_common(top):
    text = source(loc) if "/library/" not in loc else func
    print(f"  {100 * c / n:5.1f}%  {short(loc):38} {text[:90]}")
print("\nby innermost line in shmslab's src/ (the crate code on the stack at the sample):")
for (func, loc), c in crate.most_common(top):
    fn = func.rsplit("::", 1)[-1] if "::" in func else func
    print(f"  {100 * c / n:5.1f}%  {short(loc):28} {fn:18.18} {source(loc) if ':' in loc else ''}")
print()
