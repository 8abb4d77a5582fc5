#!/usr/bin/env bash
# `make demo`: the main job, end to end on this machine.
#   1. create (or resume) a RocksDB weight store for tiny-64,
#   2. verify every tile's checksum,
#   3. generate tokens with the single-process reference engine (greedy and
#      seeded sampling) and print tokens/s,
#   4. show that the output is reproducible bit for bit,
#   5. compile plans for a local cluster and for a Groq-scale one,
#   6. run the local plan with every chip in this process (--simulate) and
#      show that its tokens and logits are the reference's, bit for bit,
#   7. start the cluster as processes (`lockstep up`: local-64 is 8 hosts x
#      8 chips), run concurrent generations on it (the first must equal the
#      reference bit for bit), show `lockstep status`, and `lockstep down`.
set -euo pipefail
build=${1:-build}
bin="$build/bin/lockstep"
model=${DEMO_MODEL:-tiny-64}
db=${DEMO_DB:-$build/demo-db-$model}

echo "== lockstep weights init --model $model --weight-seed 42 --db $db"
"$bin" weights init --model "$model" --weight-seed 42 --db "$db"
echo "== lockstep weights verify --db $db"
"$bin" weights verify --db "$db"
echo "== lockstep weights list --db $db (first lines)"
"$bin" weights list --db "$db" | sed -n '1,8p'  # reads all input: no SIGPIPE

echo "== lockstep generate --reference (greedy)"
"$bin" generate --reference --db "$db" --model "$model" \
  --prompt-tokens 1,2,3 --max-tokens 32 -o json | tee "$build/demo-greedy.json"
echo "== lockstep generate --reference (seed 7, temperature 0.8, top-k 40, top-p 0.95)"
"$bin" generate --reference --db "$db" --model "$model" \
  --prompt-tokens 1,2,3 --max-tokens 32 --seed 7 --temperature 0.8 \
  --top-k 40 --top-p 0.95 -o json

echo "== the same request again: tokens and logits must be bit-identical"
again=$("$bin" generate --reference --db "$db" --model "$model" \
  --prompt-tokens 1,2,3 --max-tokens 32 -o json)
sha() { sed -n 's/.*"logits_sha256": *"\([0-9a-f]*\)".*/\1/p' <<<"$1"; }
# same_logits WHAT JSON: its logits hash must be the first run's.
same_logits() {
  local got
  got=$(sha "$2")
  if [ -n "$first" ] && [ "$got" = "$first" ]; then
    echo "identical ($1): logits_sha256 $got"
  else
    echo "MISMATCH ($1): $got vs $first" >&2
    exit 1
  fi
}
first=$(sha "$(cat "$build/demo-greedy.json")")
same_logits "the same request again" "$again"

config=cluster_configs/local-${model#tiny-}.yaml
echo "== lockstep plan: $model on $config, and Llama-2-70B on 576 LPUs"
"$bin" plan "$config" --model "$model"
"$bin" plan cluster_configs/groq-576.yaml --model llama-2-70b

echo "== lockstep generate --simulate $config: the plan run chip by chip"
sim=$("$bin" generate --simulate "$config" --db "$db" --model "$model" \
  --prompt-tokens 1,2,3 --max-tokens 32 -o json)
echo "$sim"
same_logits "every chip of the plan vs the reference" "$sim"

cluster_config=cluster_configs/local-${model#tiny-}.yaml
# The demo's cluster has its own context file: it never touches a cluster
# the user started, and `down` runs however the script ends.
export LOCKSTEP_CONTEXT="$build/demo-cluster/context.json"
mkdir -p "$build/demo-cluster"
"$bin" down >/dev/null 2>&1 || true
trap '"$bin" down >/dev/null 2>&1 || true' EXIT
echo "== lockstep up $cluster_config --model $model --batch 4 --context 256"
"$bin" up "$cluster_config" --model "$model" --batch 4 --context 256 \
  --db-root "$build/demo-cluster"

echo "== 4 concurrent lockstep generate calls on the cluster"
prompts=(1,2,3 4,5,6,7 8,9 10,11,12,13,14)
pids=()
for i in "${!prompts[@]}"; do
  "$bin" generate --prompt-tokens "${prompts[$i]}" --max-tokens 32 -o json \
    >"$build/demo-cluster/gen-$i.json" &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
for i in "${!prompts[@]}"; do
  sed -n 's/.*"tokens_per_s": *\([0-9.]*\).*"ttft_ms": *\([0-9.]*\).*/\1 \2/p' \
    "$build/demo-cluster/gen-$i.json" |
    awk -v p="${prompts[$i]}" '{ printf "prompt %-16s %7.1f tokens/s, TTFT %6.1f ms\n", p, $1, $2 }'
done
same_logits "the cluster (8 processes) vs the reference" \
  "$(cat "$build/demo-cluster/gen-0.json")"

echo "== lockstep status"
# Per-chip and per-link counters come with each host's heartbeat (one a
# second): wait for the one after the requests.
sleep 1.5
"$bin" status
echo "== lockstep down"
"$bin" down
