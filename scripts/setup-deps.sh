#!/usr/bin/env bash
# Installs every Debian 12 package lockstep needs to build, test and run.
# Idempotent: does nothing (and needs no root) when everything is present.
set -euo pipefail
pkgs=(
  build-essential cmake ninja-build pkg-config
  libcaf-dev capnproto libcapnp-dev libfabric-dev libfabric-bin
  librocksdb-dev libgtest-dev libgmock-dev libbenchmark-dev
  libspdlog-dev libfmt-dev libcli11-dev libyaml-cpp-dev nlohmann-json3-dev
  libsodium-dev libxxhash-dev jq
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "setup-deps: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
