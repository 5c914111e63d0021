#!/usr/bin/env bash
# Profiles workloads with perf (cpu-clock at 20 kHz, user and kernel; call
# chains for the kernel side), keeping
# only the samples taken inside the timed regions, and prints a summary per
# workload (benches/profile.py). See docs/BENCHMARKS.md, "Where the time goes".
#
#   benches/profile.sh                      # the six shmslab workloads
#   benches/profile.sh w1/malloc w2/shmslab # any workload/allocator names
#   PROFILE_TOOL=callgrind benches/profile.sh w1/shmslab w1/malloc
#                                           # instructions per operation instead
#                                           # (repeatable; W1/W2/W3/attach, one run)
#   PROFILE_TOOL=callgrind benches/profile.sh coop-lock-1p/shmslab-transact coop-add-1p/mmap-atomic
#                                           # the one-process coop variants too
#
# Needs perf (linux-perf), addr2line/nm (binutils) and python3. Data goes to
# $PROFILE_OUT (default target/profile).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${PROFILE_OUT:-${CARGO_TARGET_DIR:-target}/profile}
mkdir -p "$out"
bin=$(cargo bench --no-run --bench workloads 2>&1 | grep -o '[^ ()]*/workloads-[0-9a-f]*' | tail -1)
[ -x "$bin" ] || { echo "bench binary not found" >&2; exit 1; }
if [ $# -eq 0 ]; then
  set -- w1/shmslab w2/shmslab w3/shmslab w4/shmslab w5/shmslab attach/shmslab
fi
if [ "${PROFILE_TOOL:-perf}" = callgrind ]; then
  for w in "$@"; do
    case $w in
      w1/* | w4/*) fn='*w1_loop*' ops=1000000 ;; w2*) fn='*w2_steps*' ops=1000000 ;;
      w3/*) fn='*w3_loop*' ops=4000000 ;;
      attach/shmslab) fn='*attach_shm*' ops=200 ;; attach/rts-alloc) fn='*attach_rts*' ops=200 ;;
      # The coop counts (workloads/coop.rs, FULL): one loop per variant.
      coop-add-1p/*) fn='*coop_add_loop*' ops=5000000 ;; coop-lock-1p/*) fn='*coop_lock_loop*' ops=1000000 ;;
      *) echo "callgrind: no single-process region for $w" >&2; continue ;;
    esac
    name=${w//\//-}
    SHMSLAB_BENCH_CRITERION=0 SHMSLAB_BENCH_REPS=1 valgrind --tool=callgrind \
      --callgrind-out-file="$out/$name.callgrind" --toggle-collect="$fn" \
      "$bin" --bench "$w" >"$out/$name.log" 2>"$out/$name.valgrind"
    ir=$(callgrind_annotate --auto=no "$out/$name.callgrind" | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    echo "### $w: $ir instructions in the timed loop = $((ir / ops)) per operation"
    { callgrind_annotate --auto=no --inclusive=yes "$out/$name.callgrind" |
      grep -E '^ *[0-9,]+ ' | grep -v -E 'PROGRAM TOTALS|below main|lang_start|libc_start|backtrace|::main|\?\?\?' |
      head -12 | cut -c1-150; } || true
    echo
  done
  exit 0
fi
for w in "$@"; do
  case $w in # repetitions: enough samples (~10k+) in the timed regions
    w1/*) reps=20 ;; w2*) reps=6 ;; w3/*) reps=3 ;; w4/* | w5/*) reps=10 ;; attach/*) reps=40 ;; *) reps=5 ;;
  esac
  name=${w//\//-}
  rm -f "$out/$name.regions"
  SHMSLAB_BENCH_CRITERION=0 SHMSLAB_BENCH_REPS=$reps SHMSLAB_BENCH_REGIONS="$out/$name.regions" \
    perf record -q -F 20000 -g -k CLOCK_MONOTONIC -e cpu-clock -o "$out/$name.data" \
    "$bin" --bench "$w" >"$out/$name.log" 2>&1
  python3 benches/profile.py "$bin" "$out/$name.data" "$out/$name.regions" "$w" 15 | tee "$out/$name.txt"
done
