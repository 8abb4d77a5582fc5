#!/usr/bin/env bash
# Measures this machine and writes its figures into the local cluster
# configs (cluster_configs/local-*.yaml), so that the planner's predictions
# describe what a local cluster really does here (docs/planner.md, "Chips
# that share a machine").
#
#   scripts/calibrate-local.sh [--dry-run]
#
# Per config:
#   lockstep-bench transport -o json     the shm transport (once)
#   lockstep-bench calibrate -o env      cores, per-core kernel rates, copies,
#                                        wake-up latencies (see its source)
#   lockstep up + generate + status      over 64 tokens after a warm-up:
#                                        op_overhead_ns (the chips' handler
#                                        CPU besides kernels, per op), the shm
#                                        link's cpu_ns (the rest of the
#                                        processes' CPU per cross-process
#                                        transfer) and sram_bytes_per_s in
#                                        place (the kernel rate above x the
#                                        plan's kernel time / the kernel CPU
#                                        measured). On local-8 and local-64;
#                                        local-512/1500 take local-64's.
# --dry-run prints the figures and leaves the configs alone. Takes ~3 min.
set -euo pipefail
cd "$(dirname "$0")/.."
dry=0
[ "${1:-}" = "--dry-run" ] && dry=1
BUILD_DIR=${BUILD_DIR:-build}
make -s build BUILD_DIR="$BUILD_DIR" >/dev/null
bin=$BUILD_DIR/bin
work=$(mktemp -d)
cleanup() {
  if [ -f "$work/context" ]; then
    LOCKSTEP_CONTEXT=$work/context "$bin/lockstep" down >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
export LOCKSTEP_CONTEXT=$work/context

echo "calibrate: the shm transport (lockstep-bench transport, ~40 s)" >&2
"$bin/lockstep-bench" transport -o json >"$work/transport.json"

# On a running cluster of `config` (its figures already written), from two
# `lockstep status` readings 64 tokens apart, prints
# "op_overhead_ns shm_cpu_ns kernel_ratio":
#   op_overhead_ns  the chips' handler CPU besides their kernels, per op
#                   (messages, sends, bookkeeping)
#   shm_cpu_ns      the rest of the processes' CPU (progress threads, host
#                   and coordinator actors) per cross-process transfer; 0
#                   without any (one process)
#   kernel_ratio    how much slower the chips' kernels run in place than the
#                   plan says: kernel CPU per step / step_work.kernel_us
#                   (caches and memory shared with every chip and process)
measure_cluster() {
  local config=$1 model=$2
  "$bin/lockstep" up "$config" --model "$model" --db-root "$work/db-$model" >/dev/null
  "$bin/lockstep" generate --prompt-tokens 1,2,3 --max-tokens 16 >/dev/null
  sleep 1.5 # a heartbeat brings every host's counters
  "$bin/lockstep" status -o json >"$work/before.json"
  "$bin/lockstep" generate --prompt-tokens 1,2,3 --max-tokens 64 >/dev/null
  sleep 1.5
  "$bin/lockstep" status -o json >"$work/after.json"
  "$bin/lockstep" down >/dev/null
  local batch context planned
  batch=$(jq .batch "$work/after.json")
  context=$(jq .context "$work/after.json")
  planned=$("$bin/lockstep" plan "$config" --model "$model" --batch "$batch" \
              --context "$context" -o json | jq .step_work.kernel_us)
  jq -rn --slurpfile a "$work/before.json" --slurpfile b "$work/after.json" \
     --argjson planned "$planned" '
    def total(f): [f] | add // 0;
    def delta(f): total($b[0] | f) - total($a[0] | f);
    def cross: .links[] | select((.link | split("->") | map(split(".")[0]))
                                 as $h | $h[0] != $h[1]) | .transfers_received;
    delta(.chips[].kernel_ns) as $kernel
    | delta(.chips[].handler_ns) as $handler
    | delta(.chips[].ops_run) as $ops
    | delta(.hosts[].cpu_ns) as $cpu
    | delta(cross) as $cross
    | ($b[0].steps_run - $a[0].steps_run) as $steps
    | ([0, ($handler - $kernel) / $ops] | max | floor) as $overhead
    | (if $cross > 0 then ($cpu - $handler) / $cross | floor else 0 end) as $shm
    | "\($overhead) \($shm) \($kernel / $steps / 1000 / $planned)"'
}

# Replaces `key: value` (first match, keeping indentation and comments).
set_scalar() { # file key value
  sed -i -E "0,/^(\s*)$2: [^ #]+/s//\1$2: $3/" "$1"
}
set_link() { # file profile bytes_per_s latency_ns [cpu_ns]
  local cpu=""
  [ -n "${5:-}" ] && cpu=", cpu_ns: $5"
  sed -i -E "s/^(\s*)$2: \{bytes_per_s: [^,]+, latency_ns: [0-9]+(, cpu_ns: [0-9]+)?\}/\1$2: {bytes_per_s: $3, latency_ns: $4$cpu}/" "$1"
}

# With --dry-run the cluster runs use a scratch copy of each config.
measured_64=""
for n in 8 64 512 1500; do
  config=cluster_configs/local-$n.yaml
  model=tiny-$n
  target=$config
  if [ $dry = 1 ]; then
    target=$work/local-$n.yaml
    cp "$config" "$target"
  fi
  echo "calibrate: $config" >&2
  eval "$("$bin/lockstep-bench" calibrate --config "$config" --model "$model" \
             --transport-json "$work/transport.json" -o env)"
  set_scalar "$target" cores "$cores"
  sed -i -E "s/flops: \{f32: [^,]+, f16: [^,]+, int8: [^}]+\}/flops: {f32: $flops, f16: $flops, int8: $flops}/" "$target"
  set_scalar "$target" sram_bytes_per_s "$sram_bytes_per_s"
  set_link "$target" local "$local_bytes_per_s" "$local_latency_ns"
  set_link "$target" memcpy "$memcpy_bytes_per_s" "$memcpy_latency_ns"
  case $n in
    8 | 64) measured=$(measure_cluster "$target" "$model") ;;
    *) measured=$measured_64 ;; # until these clusters run (issue 10)
  esac
  [ "$n" = 64 ] && measured_64=$measured
  read -r overhead shm_cpu ratio <<<"$measured"
  in_place=$(awk -v r="$sram_bytes_per_s" -v k="$ratio" 'BEGIN { printf "%.1e", r / k }')
  set_scalar "$target" op_overhead_ns "$overhead"
  set_scalar "$target" sram_bytes_per_s "$in_place"
  set_link "$target" shm "$shm_bytes_per_s" "$shm_latency_ns" "$shm_cpu"
  echo "  cores $cores, flops $flops, sram_bytes_per_s $in_place (kernel alone" \
       "$sram_bytes_per_s, in place ${ratio}x slower), op_overhead_ns $overhead," \
       "local $local_bytes_per_s B/s + $local_latency_ns ns," \
       "shm $shm_bytes_per_s B/s + $shm_latency_ns ns + $shm_cpu ns CPU," \
       "memcpy $memcpy_bytes_per_s B/s + $memcpy_latency_ns ns"
done
[ $dry = 1 ] || echo "calibrate: wrote cluster_configs/local-*.yaml (git diff shows what changed)" >&2
