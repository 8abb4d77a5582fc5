#include "common/digest.hpp"

#include <array>
#include <bit>
#include <cstring>
#include <stdexcept>

#include <xxhash.h>

namespace lockstep {

sha256::sha256() {
  // sodium_init is idempotent and thread-safe; SHA-256 itself needs no
  // initialised RNG, but calling it keeps libsodium's CPU dispatch ready.
  if (sodium_init() < 0)
    throw std::runtime_error("libsodium failed to initialise");
  crypto_hash_sha256_init(&state_);
}

void sha256::update(std::span<const std::byte> bytes) {
  crypto_hash_sha256_update(
      &state_, reinterpret_cast<const unsigned char*>(bytes.data()),
      bytes.size());
}

void sha256::update_f32_le(std::span<const float> values) {
  static_assert(std::endian::native == std::endian::little,
                "lockstep assumes a little-endian host");
  update(std::as_bytes(values));
}

std::string sha256::hex_digest() {
  std::array<unsigned char, crypto_hash_sha256_BYTES> out{};
  crypto_hash_sha256_final(&state_, out.data());
  static constexpr char digits[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(out.size() * 2);
  for (auto b : out) {
    hex += digits[b >> 4];
    hex += digits[b & 0xF];
  }
  return hex;
}

uint64_t checksum64(std::span<const std::byte> bytes) {
  return XXH3_64bits(bytes.data(), bytes.size());
}

} // namespace lockstep
