#include "actors/sram.hpp"

#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <string>

namespace lockstep::actors {

caf::expected<std::unique_ptr<sram_arena>> sram_arena::allocate(size_t bytes) {
  size_t size = std::max<size_t>(bytes, 1);
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED)
    return caf::make_error(errc::too_large, "cannot map an arena of " +
                                                std::to_string(bytes) +
                                                " bytes");
  return std::unique_ptr<sram_arena>{
      new sram_arena(static_cast<std::byte*>(p), size)};
}

void sram_arena::prefault(size_t bytes) noexcept {
  std::memset(data_, 0, std::min(bytes, size_));
}

sram_arena::~sram_arena() {
  munmap(data_, size_);
}

caf::expected<uint64_t>
load_shards(const planner::plan& p, const planner::cluster_config& config,
            const storage::weight_store& weights,
            const std::function<std::span<std::byte>(uint32_t chip)>& sram_of) {
  uint64_t loaded = 0;
  for (const auto& sh : p.shards) {
    auto mem = sram_of(sh.chip);
    if (mem.empty())
      continue;
    auto t = weights.read(sh.tensor, sh.range);
    if (!t)
      return t.error();
    auto data = t->bytes();
    auto scales = t->scales();
    if (sh.offset > mem.size() || data.size() > mem.size() - sh.offset ||
        sh.scales_offset > mem.size() ||
        scales.size_bytes() > mem.size() - sh.scales_offset)
      return caf::make_error(errc::bad_program,
                             "shard " + model::to_string(sh.tensor) + " on " +
                                 transport::to_string(config.ref(sh.chip)) +
                                 " lies outside its SRAM");
    std::memcpy(mem.data() + sh.offset, data.data(), data.size());
    if (!scales.empty())
      std::memcpy(mem.data() + sh.scales_offset, scales.data(),
                  scales.size_bytes());
    loaded += data.size() + scales.size_bytes();
  }
  return loaded;
}

} // namespace lockstep::actors
