#!/usr/bin/env bash
# Runs one cargo-fuzz target until the fuzzer process has used a budget of CPU time (not
# wall time: on a shared machine the two differ a lot), then minimises its corpus.
#
#   fuzz/campaign.sh <target> [cpu-seconds, default 1200] [extra libFuzzer flags...]
#
# Needs the targets built first: (cd fuzz && cargo +nightly fuzz build -O -a -s none).
# The corpus is fuzz/corpus/<target>/ (committed, minimised with `cargo fuzz cmin`); crashes
# go to fuzz/artifacts/<target>/. CPU time is read from /proc/<pid>/stat (utime + stime)
# and is cumulative over runs: $FUZZ_LOGS (default fuzz/logs)/<target>.ledger gets one line per run
# ("<date> cpu_s=<n> execs=<n> exit=<n>"), so an interrupted or crashed campaign resumes
# where it stopped. The fuzzer runs at the lowest priority (nice 19) unless $FUZZ_NICE names
# another niceness (on a machine busy with builds, nice 19 gets next to no CPU).
set -euo pipefail

target=${1:?usage: campaign.sh <target> [cpu-seconds] [libFuzzer flags...]}
budget=${2:-1200}
shift $(( $# >= 2 ? 2 : 1 ))

here=$(cd "$(dirname "$0")" && pwd)
bin="$here/target/x86_64-unknown-linux-gnu/release/$target"
corpus="$here/corpus/$target"
artifacts="$here/artifacts/$target"
logs="${FUZZ_LOGS:-$here/logs}"
ledger="$logs/$target.ledger"
mkdir -p "$corpus" "$artifacts" "$logs"
[ -x "$bin" ] || { echo "no fuzzer binary $bin: build it first" >&2; exit 2; }

ticks=$(getconf CLK_TCK)
spent() { # CPU seconds already in the ledger
    awk -F'cpu_s=' 'NF > 1 { split($2, a, " "); s += a[1] } END { print s + 0 }' \
        "$ledger" 2>/dev/null || echo 0
}
before=$(spent)
left=$(( budget - before ))
if (( left <= 0 )); then
    echo "$target: budget of ${budget}s already spent (${before}s)"
    exit 0
fi

log="$logs/$target.$(date -u +%Y%m%dT%H%M%S).log"
nice -n "${FUZZ_NICE:-19}" "$bin" "$corpus" -artifact_prefix="$artifacts/" -print_final_stats=1 \
    -timeout=10 -rss_limit_mb=2048 "$@" >"$log" 2>&1 &
pid=$!
cpu=0
while kill -0 "$pid" 2>/dev/null; do
    if stat=$(cat "/proc/$pid/stat" 2>/dev/null); then
        # Fields 14 and 15 (utime, stime), counted after the ')' that ends the command name.
        read -r utime stime < <(echo "${stat##*) }" | awk '{ print $12, $13 }')
        cpu=$(( (utime + stime) / ticks ))
        if (( cpu >= left )); then
            kill -INT "$pid" # libFuzzer prints its final stats on SIGINT
            break
        fi
    fi
    sleep 5
done
status=0
wait "$pid" || status=$?
execs=$(awk '/stat::number_of_executed_units/ { print $NF }' "$log" | tail -1)
echo "$(date -u +%FT%TZ) cpu_s=$cpu execs=${execs:-0} exit=$status log=$(basename "$log")" >>"$ledger"
echo "$target: run used ${cpu}s CPU, ${execs:-0} executions (exit $status); total $(spent)s of ${budget}s"
if ls "$artifacts"/crash-* "$artifacts"/timeout-* "$artifacts"/oom-* >/dev/null 2>&1; then
    echo "$target: findings in $artifacts" >&2
fi
