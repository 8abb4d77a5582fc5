#!/usr/bin/env bash
# `make demo`: the main job, end to end on this machine.
#   1. create (or resume) a RocksDB weight store for tiny-64,
#   2. verify every tile's checksum,
#   3. generate tokens with the single-process reference engine (greedy and
#      seeded sampling) and print tokens/s,
#   4. show that the output is reproducible bit for bit,
#   5. compile plans for a local cluster and for a Groq-scale one,
#   6. run the local plan with every chip in this process (--simulate) and
#      show that its tokens and logits are the reference's, bit for bit.
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
