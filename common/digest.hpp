#pragma once

// Digests used across lockstep: SHA-256 (libsodium) for user-visible hashes
// (logits, plans), XXH3 (libxxhash) for per-block checksums on hot paths.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include <sodium.h>

namespace lockstep {

/// Incremental SHA-256. Not thread-safe; cheap to construct.
class sha256 {
public:
  sha256();

  void update(std::span<const std::byte> bytes);

  /// Hashes `values` as little-endian IEEE-754 binary32 words.
  void update_f32_le(std::span<const float> values);

  /// Finishes the digest; the object must not be updated afterwards.
  std::string hex_digest();

private:
  crypto_hash_sha256_state state_;
};

/// 64-bit XXH3 of `bytes`; stable across versions and machines.
uint64_t checksum64(std::span<const std::byte> bytes);

} // namespace lockstep
