#include "planner/cost_model.hpp"

#include <algorithm>
#include <cmath>

namespace lockstep::planner {

double peak_flops(const chip_profile& chip, model::dtype type) {
  switch (type) {
  case model::dtype::f32:
    return chip.flops_f32;
  case model::dtype::f16:
  case model::dtype::bf16:
    return chip.flops_f16;
  case model::dtype::int8:
    return chip.flops_int8;
  }
  return chip.flops_f32;
}

uint64_t op_duration_ns(const chip_profile& chip, model::dtype type,
                        const op_cost& cost) {
  double s = std::max(cost.bytes / chip.sram_bytes_per_s,
                      cost.flops / peak_flops(chip, type));
  return static_cast<uint64_t>(std::ceil(s * 1e9)) + chip.op_overhead_ns;
}

uint64_t transfer_duration_ns(const link_profile& link, uint64_t bytes) {
  return link.latency_ns +
         static_cast<uint64_t>(std::ceil(bytes / link.bytes_per_s * 1e9));
}

uint32_t to_slots(uint64_t ns, uint64_t slot_ns) {
  uint64_t slots = (ns + slot_ns - 1) / slot_ns;
  return static_cast<uint32_t>(std::max<uint64_t>(slots, 1));
}

uint32_t transfer_cpu_slots_per_end(const link_profile& link,
                                    uint64_t slot_ns) {
  return link.cpu_ns == 0 ? 0 : to_slots(link.cpu_ns / 2, slot_ns);
}

} // namespace lockstep::planner
