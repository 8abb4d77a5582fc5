#!/usr/bin/env bash
# make check-llamacpp: lockstep's GGUF export and import checked against
# llama.cpp itself (node-llama-cpp 3.21.1 from npm, its prebuilt CPU build).
# Our own writer and reader could agree on a wrong layout; llama.cpp cannot.
# For each case: a generated store (seed 42) exported to GGUF, that file
# imported into a fresh store, `lockstep generate --reference` on the
# imported store, llama.cpp's greedy tokens on the file; they must be equal.
# Needs Node.js >= 20 and the npm registry. Exit 1 on any difference.
set -euo pipefail
build=${1:-build}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/$build/bin/lockstep
work=$root/$build/llamacpp-check
if ! command -v node > /dev/null ||
   [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  echo "check-llamacpp: needs Node.js >= 20 (node-llama-cpp 3.21.1); this" \
       "machine has $(node --version 2>/dev/null || echo none)" >&2
  exit 2
fi
mkdir -p "$work"
cp "$root"/tools/llamacpp_check/{package.json,package-lock.json,check.mjs} \
   "$work"/
(cd "$work" && npm ci --no-audit --no-fund --ignore-scripts --silent)

failed=0
# name model dtype quantize prompt tokens ("-": as stored). Quantized files:
# llama.cpp also quantizes the activations for them, so its tokens may
# drift from ours; there the leading tokens that agree are reported, not
# required.
while read -r name model dtype quantize prompt n; do
  dir=$work/$name
  rm -rf "$dir" && mkdir -p "$dir"
  "$bin" weights init --model "$model" --dtype "$dtype" --weight-seed 42 \
      --db "$dir/generated" > /dev/null
  q=()
  [ "$quantize" != - ] && q=(--quantize "$quantize")
  "$bin" weights export --db "$dir/generated" --gguf "$dir/model.gguf" \
      "${q[@]}" > /dev/null
  "$bin" weights import --gguf "$dir/model.gguf" --db "$dir/imported" \
      > /dev/null
  ours=$("$bin" generate --reference --db "$dir/imported" \
           --prompt-tokens "$prompt" --max-tokens "$n" -o json |
         python3 -c 'import json,sys; print(json.load(sys.stdin)["tokens"])')
  theirs=$(cd "$work" && node check.mjs "$dir/model.gguf" "$prompt" "$n" |
           python3 -c 'import json,sys; print(json.load(sys.stdin)["tokens"])')
  if [ "$ours" = "$theirs" ]; then
    echo "$name: same $n tokens: $ours"
  elif [ "$quantize" != - ]; then
    agree=$(python3 -c "import sys; a=$ours; b=$theirs
n=0
while n < min(len(a), len(b)) and a[n] == b[n]: n += 1
print(n)")
    echo "$name: $agree of $n leading tokens agree (quantized activations" \
         "in llama.cpp): lockstep $ours, llama.cpp $theirs"
  else
    echo "$name: DIFFERENT: lockstep $ours, llama.cpp $theirs"
    failed=1
  fi
done << 'CASES'
tiny-8-f32 tiny-8 f32 - 1,2,3 16
tiny-8-f16 tiny-8 f16 - 1,2,3 16
tiny-8-bf16 tiny-8 bf16 - 7,7,1 16
tiny-64-f32 tiny-64 f32 - 5,6,7 16
tiny-64-f16 tiny-64 f16 - 5,6,7 16
tiny-8-q8_0 tiny-8 f32 q8_0 1,2,3 16
tiny-8-q4_0 tiny-8 f32 q4_0 1,2,3 16
tiny-64-q8_0 tiny-64 f32 q8_0 5,6,7 16
CASES
exit $failed
