#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# tests/malloc/programs.sh LIBRARY PROGRAM: runs a real program's workload twice, on glibc's malloc and with LIBRARY
# (libstrata-malloc.so) preloaded, and fails unless both runs succeed with the same output. PROGRAM: python3, sqlite3,
# sort, perl or gxx (a compile, link and run of a C++ program). Exits 77 (skipped) when the program is not installed.
# STRATA_TEST_PRELOAD_ENV may add environment settings for the preloaded run (e.g. a check mode).
set -euo pipefail

lib=$1
program=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

need() { command -v "$1" >/dev/null 2>&1 || { echo "skipped: $1 is not installed"; exit 77; }; }

case $program in
  python3)
    need python3
    cat >"$work/w.py" <<'EOF'
import hashlib, json, random
random.seed(12345)
d = {}
for i in range(200000):
    k = "k%d" % random.randrange(1000000)
    d.setdefault(k, []).append("v" * (i % 37) + str(i))
items = sorted(d.items())
s = json.dumps(items[:5000])
words = [w for k, v in items for w in v][:300000]
words.sort(key=lambda w: (len(w), w))
big = [bytearray(random.randrange(1, 200000)) for _ in range(300)]
print(len(d), len(s), hashlib.sha256("".join(words).encode()).hexdigest(), sum(len(b) for b in big))
EOF
    run() { python3 "$work/w.py"; }
    ;;
  sqlite3)
    need sqlite3
    cat >"$work/w.sql" <<'EOF'
CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, s TEXT);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 50000)
INSERT INTO t(k, s) SELECT (x * 7919) % 1000, printf('%08d-%s', x, substr('abcdefghijklmnopqrstuvwxyz', 1, x % 26)) FROM c;
CREATE INDEX t_k ON t(k);
SELECT k, count(*), max(s), sum(length(s)) FROM t GROUP BY k ORDER BY k LIMIT 20;
SELECT count(DISTINCT s), sum(id) FROM t WHERE k BETWEEN 100 AND 600;
UPDATE t SET s = s || s WHERE id % 3 = 0;
DELETE FROM t WHERE id % 5 = 0;
VACUUM;
SELECT count(*), sum(length(s)) FROM t;
EOF
    run() { sqlite3 ":memory:" <"$work/w.sql"; }
    ;;
  sort)
    need sort
    awk 'BEGIN { x = 1; for (i = 0; i < 300000; i++) { x = (x * 1103515245 + 12345) % 2147483648; printf "%d %s\n", x % 100000, substr("qwertyuiopasdfghjklzxcvbnm", 1 + x % 20) } }' >"$work/in.txt"
    run() { sort -k2,2 -k1,1n --parallel=2 -S 8M "$work/in.txt" | md5sum; }
    ;;
  perl)
    need perl
    run() {
      perl -e 'my %h; my @a; for my $i (1 .. 200000) { my $k = ($i * 7919) % 50021; push @{$h{$k}}, "x" x ($i % 50) . $i; }
               for my $k (sort { $a <=> $b } keys %h) { push @a, join(",", @{$h{$k}}) } my $s = join("\n", @a);
               my $n = () = $s =~ /x{10,}\d+/g; print scalar(keys %h), " ", length($s), " ", $n, "\n";'
    }
    ;;
  gxx)
    need g++
    cat >"$work/p.cpp" <<'EOF'
#include <algorithm>
#include <iostream>
#include <map>
#include <memory>
#include <numeric>
#include <string>
#include <vector>
int main() {
  std::map<std::string, std::vector<int>> m;
  for (int i = 0; i < 100000; ++i) m[std::to_string(i * 7919 % 10007)].push_back(i);
  std::vector<std::unique_ptr<std::string>> v;
  for (auto& [k, xs] : m) v.push_back(std::make_unique<std::string>(k + ":" + std::to_string(xs.size())));
  std::sort(v.begin(), v.end(), [](auto& a, auto& b) { return *a < *b; });
  long sum = 0;
  for (auto& s : v) sum += static_cast<long>(s->size());
  std::cout << m.size() << ' ' << sum << ' ' << *v.front() << ' ' << *v.back() << '\n';
}
EOF
    run() {
      g++ -std=c++17 -O2 -o "$work/p" "$work/p.cpp"
      "$work/p"
      rm -f "$work/p"
    }
    ;;
  *)
    echo "unknown program $program" >&2
    exit 2
    ;;
esac

# The loader accepts the library (it only warns about a preload it cannot load, and runs the program without it).
# (The map is read whole first: grep -q stops at the first match, and cat would then die of SIGPIPE, a failure
# under pipefail.)
maps=$(env LD_PRELOAD="$lib" cat /proc/self/maps)
grep -q "$(basename "$lib")" <<< "$maps" || { echo "$lib is not preloaded"; exit 1; }
run >"$work/glibc.out"
env ${STRATA_TEST_PRELOAD_ENV:-} LD_PRELOAD="$lib" bash -c "$(declare -f run); work='$work'; run" >"$work/strata.out"
if ! cmp -s "$work/glibc.out" "$work/strata.out"; then
  echo "$program: output differs with $lib preloaded"
  diff "$work/glibc.out" "$work/strata.out" | head -20
  exit 1
fi
echo "$program: same output with $lib preloaded ($(wc -c <"$work/strata.out") bytes)"
