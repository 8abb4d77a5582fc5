#pragma once

// A chip's SRAM in a host process, and filling it with the chip's weights.
//
// An arena is anonymous memory of the chip's SRAM size, zero until touched
// (untouched SRAM costs no RAM; a cluster host prefaults what its plan uses), page-aligned (registrable by libfabric).
// Shards are read from the host's RocksDB store (every tile
// checksum-verified) into the offsets the plan gives.

#include "actors/errc.hpp"
#include "planner/cluster_config.hpp"
#include "planner/plan.hpp"
#include "storage/weight_store.hpp"

#include <caf/expected.hpp>

#include <cstddef>
#include <functional>
#include <memory>
#include <span>

namespace lockstep::actors {

class sram_arena {
public:
  /// Errors: too_large (the mapping failed), naming the size.
  static caf::expected<std::unique_ptr<sram_arena>> allocate(size_t bytes);
  ~sram_arena();
  sram_arena(const sram_arena&) = delete;
  sram_arena& operator=(const sram_arena&) = delete;

  std::span<std::byte> bytes() const noexcept { return {data_, size_}; }

  /// Maps the first `bytes` (clamped to the size) now, writing zeros: SRAM
  /// the program uses must not page-fault on a chip's first step, where a
  /// paced slot would pay for it. REQUIRES: nothing written there yet.
  void prefault(size_t bytes) noexcept;

private:
  sram_arena(std::byte* data, size_t size)
      : data_(data)
      , size_(size) {}
  std::byte* data_;
  size_t size_;
};

/// Copies every shard of `p` on a chip for which `sram_of` returns memory
/// (an empty span: not this process's) from `weights` to its planned
/// offsets. Returns the bytes loaded. Errors: the store's (a corrupt or
/// missing tile, named), bad_program (a shard outside its chip's SRAM).
caf::expected<uint64_t>
load_shards(const planner::plan& p, const planner::cluster_config& config,
            const storage::weight_store& weights,
            const std::function<std::span<std::byte>(uint32_t chip)>& sram_of);

} // namespace lockstep::actors
