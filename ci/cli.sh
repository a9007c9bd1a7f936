#!/usr/bin/env bash
# The main job as a new user runs it: the default simulation (plain and
# JSON, shortened), the map and the quick bench, from a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin devpriv
bin=target/release/devpriv
"$bin" --rounds 2000 | tee /tmp/devpriv-sim.txt | tail -3
grep -q "violations: 0" /tmp/devpriv-sim.txt
"$bin" simulate --rounds 2000 --json > /tmp/devpriv-sim.json
grep -q '"violations":\[\]' /tmp/devpriv-sim.json
"$bin" map --svg /tmp/devpriv-map.svg > /dev/null
"$bin" bench --pagemaps 64 --lookups 4096 > /dev/null
# Bad input: one line, status 2.
if "$bin" --devices 0 2> /tmp/devpriv-err.txt; then exit 1; else test $? -eq 2; fi
test "$(wc -l < /tmp/devpriv-err.txt)" -eq 1
echo "cli: ok"
