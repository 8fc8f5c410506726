#!/usr/bin/env bash
# Runs the proxy-vs-direct benchmarks ROUNDS times, each round in a fresh
# process with a fresh in-process broker (direct franz-go first, then
# streamgate's raw streams and its high-level Publisher and Receive, on the
# same broker), and prints msgs/s per round and each median ratio to direct.
#   scripts/bench-ratio.sh [ROUNDS] [BENCHTIME]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
benchtime=${2:-100000x}
go test -c -o /tmp/streamgate-node.test ./node/ >/dev/null
for i in $(seq "$rounds"); do
  /tmp/streamgate-node.test -test.run XXX -test.bench 'BenchmarkPublish|BenchmarkSubscribe' \
    -test.benchtime "$benchtime" -test.count 1 | grep -E '^Benchmark' | sed "s/^/round$i /"
done | python3 -c '
import sys, statistics, collections
runs = collections.defaultdict(dict)
for line in sys.stdin:
    f = line.split()
    rnd, name, rate = f[0], f[1].rsplit("-", 1)[0], float(f[-2])
    print(f"{rnd} {name:<40} {rate:>10.0f} msgs/s")
    bench, impl = name.split("/")
    runs[bench].setdefault(rnd, {})[impl] = rate
for bench, rs in sorted(runs.items()):
    impls = sorted({i for r in rs.values() for i in r if i != "direct-franz-go"})
    direct = statistics.median(r["direct-franz-go"] for r in rs.values())
    print(f"{bench}: median direct {direct:.0f} msgs/s")
    for impl in impls:
        ratios = sorted(r[impl] / r["direct-franz-go"] for r in rs.values() if impl in r and "direct-franz-go" in r)
        rate = statistics.median(r[impl] for r in rs.values() if impl in r)
        print(f"  {impl}: median {rate:.0f} msgs/s; median ratio {statistics.median(ratios):.2f} over {len(ratios)} rounds (min {ratios[0]:.2f}, max {ratios[-1]:.2f})")
'
