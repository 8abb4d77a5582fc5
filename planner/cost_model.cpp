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

namespace {

// Least time (ns) for x to cross chips once.
double crossing_ns(const model::model_spec& spec,
                   const link_profile& fastest) {
  // Combined values (one f32 per element of x) reach a chip that needs all
  // of x either in one hop carrying whole vectors, or over at least two
  // hops in sequence (reduce-scatter, relays) — whatever the algorithm.
  double act_bytes = double(spec.d_model) * 4;
  double one_hop = fastest.latency_ns + act_bytes / fastest.bytes_per_s * 1e9;
  return std::min(one_hop, 2.0 * fastest.latency_ns);
}

} // namespace

double lower_bound_token_latency_us(const model::model_spec& spec,
                                    uint32_t context, uint32_t chips,
                                    const chip_profile& chip,
                                    const link_profile& fastest) {
  // One sequence: the latency reported is the first micro-batch's, and a
  // micro-batch may hold a single sequence.
  // Compute: every weight byte and the sequence's KV cache are read once
  // and every FLOP done, spread perfectly over all chips.
  double kv_bytes =
      double(spec.kv_bytes_per_token_per_layer()) * context * spec.n_layers;
  double bytes = double(spec.weight_bytes()) + kv_bytes;
  double flops = 2.0 * double(spec.param_count()) +
                 4.0 * double(context) * spec.q_dim() * spec.n_layers;
  double compute_s =
      std::max(bytes / (chips * chip.sram_bytes_per_s),
               flops / (chips * peak_flops(chip, spec.weight_dtype)));
  // Network: layers run in order. A layer that does not fit one chip's SRAM
  // is split, and each layer then crosses chips at least twice (before and
  // after its MLP half, or through its two reductions); layers that fit
  // still cross as often as the stack overflows one chip.
  double layer_bytes =
      double(spec.layer_weight_bytes()) +
      double(spec.kv_bytes_per_token_per_layer()) * context;
  double crossings = 0;
  if (layer_bytes > double(chip.sram_bytes)) {
    crossings = 2.0 * spec.n_layers;
  } else {
    double per_chip = std::floor(double(chip.sram_bytes) / layer_bytes);
    crossings = std::ceil(spec.n_layers / per_chip) - 1;
  }
  return compute_s * 1e6 +
         crossings * crossing_ns(spec, fastest) * 1e-3;
}

} // namespace lockstep::planner
