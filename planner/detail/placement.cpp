#include "planner/detail/placement.hpp"

#include "model/block_rule.hpp"
#include "planner/cost_model.hpp"
#include "transport/payload_frame.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace lockstep::planner::detail {

std::pair<uint32_t, uint32_t> head_range(const model::model_spec& spec,
                                         uint32_t k, uint32_t i) {
  // With more chips than heads, the first n_heads chips take one head each
  // and the rest only share the MLP.
  uint32_t kk = std::min(k, spec.n_heads);
  if (i >= kk)
    return {spec.n_heads, spec.n_heads};
  return {static_cast<uint32_t>(uint64_t{spec.n_heads} * i / kk),
          static_cast<uint32_t>(uint64_t{spec.n_heads} * (i + 1) / kk)};
}

std::pair<uint32_t, uint32_t> block_range(uint32_t dim, uint32_t k, uint32_t i,
                                          bool aligned) {
  uint32_t nb = model::blocks_of(dim);
  // Power-of-two k: each part is one node of the canonical tree (the last
  // ones truncated or empty), so it sends one partial per row instead of
  // several — fewer bytes on the critical path for a little imbalance.
  if (aligned && (k & (k - 1)) == 0 && model::tree_span(nb) >= k) {
    uint32_t node = model::tree_span(nb) / k;
    uint32_t b0 = std::min(nb, i * node);
    uint32_t b1 = std::min(nb, (i + 1) * node);
    return {b0, b1};
  }
  return {static_cast<uint32_t>(uint64_t{nb} * i / k),
          static_cast<uint32_t>(uint64_t{nb} * (i + 1) / k)};
}

uint64_t arena_reserve_bytes(const model::model_spec& spec, uint32_t batch,
                             uint32_t tp_degree, uint32_t layers,
                             bool aligned) {
  // Every transfer gets its own window for the whole step (the transport's
  // contract), two buffers each. Per layer, a group root receives k - 1
  // partials of each reduction; every other chip receives two broadcasts;
  // plus the activation in and out of the group. Partials carry one value
  // per canonical tree node of the sender's blocks.
  uint64_t act = transport::framed_bytes(uint64_t{spec.d_model} * batch * 4);
  uint64_t k = tp_degree;
  uint64_t pieces = 1;
  for (uint32_t dim : {spec.q_dim(), spec.d_ff})
    for (uint32_t i = 0; i < k; ++i) {
      auto [b0, b1] = block_range(dim, tp_degree, i, aligned);
      if (b1 > b0)
        pieces = std::max<uint64_t>(
            pieces,
            model::canonical_pieces(model::blocks_of(dim), b0, b1).size());
    }
  uint64_t partial =
      transport::framed_bytes(uint64_t{spec.d_model} * batch * 4 * pieces);
  uint64_t per_layer = std::max(2 * (k - 1) * partial, 2 * act);
  return 2 * (layers * per_layer + 4 * act) + 4 * act;
}

uint64_t layer_chip_bytes(const model::model_spec& spec, uint32_t batch,
                          uint32_t context, uint32_t k, bool aligned) {
  // Exactly what the schedule builder places on the fullest chip.
  uint32_t group = spec.n_heads / spec.n_kv_heads;
  uint64_t elem = model::element_bytes(spec.weight_dtype);
  bool int8 = spec.weight_dtype == model::dtype::int8;
  uint64_t d = spec.d_model, hd = spec.head_dim;
  uint64_t worst = 0;
  for (uint32_t i = 0; i < k; ++i) {
    auto [h0, h1] = head_range(spec, k, i);
    auto [f0, f1] = block_range(spec.d_ff, k, i, aligned);
    uint64_t heads = h1 - h0;
    uint64_t kv = heads == 0 ? 0 : (h1 - 1) / group - h0 / group + 1;
    uint64_t f = uint64_t{f1 - f0} * model::reduction_block_elems;
    uint64_t bytes = 2 * d * 4;         // norms
    bytes += heads * hd * d * elem * 2; // wq rows, wo cols
    bytes += kv * hd * d * elem * 2;    // wk, wv rows
    bytes += 3 * f * d * elem;          // gate, up, down
    if (int8)
      bytes += (heads * hd + 2 * kv * hd + d + 2 * f + d) * 4; // row scales
    bytes += kv * hd * 2 * 4 * uint64_t{context} * batch;      // KV cache
    worst = std::max(worst, bytes);
  }
  return worst;
}

namespace {

uint64_t ceil_div(uint64_t a, uint64_t b) {
  return (a + b - 1) / b;
}

} // namespace

caf::expected<std::vector<placement>>
place_candidates(const model::model_spec& spec, const cluster_config& config,
                 uint32_t batch, uint32_t context,
                 const std::vector<uint32_t>& available) {
  const auto& chip = config.chip;
  auto n_avail = static_cast<uint64_t>(available.size());
  uint64_t emb_bytes =
      model::tensor_bytes(spec, model::tensor_kind::tok_embedding);
  uint64_t head_bytes = model::tensor_bytes(spec, model::tensor_kind::lm_head);
  const auto& fast = config.link_profiles.front();

  struct choice {
    uint32_t k = 0, m = 0, groups = 0, e = 0, h = 0;
    bool aligned = false;
    double estimate_s = std::numeric_limits<double>::infinity();
  };
  std::vector<choice> choices;
  std::string why = "no tensor-parallel degree fits";
  // MLP rows split on block boundaries: at most one chip per d_ff block.
  uint32_t max_k = model::blocks_of(spec.d_ff);
  // Each power-of-two k, with MLP parts aligned to canonical tree nodes
  // (one partial per row, some imbalance) or split evenly (several partials
  // per row, balanced).
  for (uint32_t kk = 2; kk <= 128 && kk / 2 <= n_avail && kk / 2 <= max_k;
       kk *= 2)
    for (bool aligned : {true, false}) {
      uint32_t k = kk / 2;
      uint64_t per_layer = layer_chip_bytes(spec, batch, context, k, aligned);
      auto fits = [&](uint64_t m) {
        return m * per_layer + arena_reserve_bytes(spec, batch, k,
                                                   static_cast<uint32_t>(m),
                                                   aligned) <=
               chip.sram_bytes;
      };
      uint64_t max_m = 0;
      while (max_m < spec.n_layers && fits(max_m + 1))
        ++max_m;
      if (max_m == 0) {
        why = "one layer split " + std::to_string(k) + " ways needs " +
              std::to_string(per_layer +
                             arena_reserve_bytes(spec, batch, k, 1, aligned)) +
              " bytes on its fullest chip, SRAM is " +
              std::to_string(chip.sram_bytes);
        continue;
      }
      uint64_t reserve = arena_reserve_bytes(spec, batch, k, 1, aligned);
      uint64_t room = chip.sram_bytes - reserve;
      uint64_t e = ceil_div(emb_bytes, room);
      uint64_t h = ceil_div(head_bytes, room);
      if (e + h >= n_avail)
        continue;
      uint64_t groups_max = (n_avail - e - h) / k;
      if (groups_max == 0)
        continue;
      // Fewest layers per group that the chips allow: more groups, less SRAM
      // pressure; latency is set by k.
      uint64_t m = std::max(ceil_div(spec.n_layers, groups_max), uint64_t{1});
      if (m > max_m) {
        why = std::to_string(spec.n_layers) + " layers need " +
              std::to_string(ceil_div(spec.n_layers, max_m) * k + e + h) +
              " chips at tensor parallelism " + std::to_string(k) + ", " +
              std::to_string(n_avail) + " available";
        continue;
      }
      uint64_t groups = ceil_div(spec.n_layers, m);
      // Latency estimate: per layer, compute split k ways plus (k > 1) two
      // gathers and two broadcasts; one hop between groups.
      double layer_s =
          double(spec.layer_weight_bytes()) / k / chip.sram_bytes_per_s +
          2e-9 * chip.op_overhead_ns;
      double hop_s =
          transfer_duration_ns(fast, uint64_t{spec.d_model} * batch * 4) * 1e-9;
      // A root gathers k - 1 partials through at most chips_per_node - 1 direct
      // links; a group wider than a node adds a hop. Same for the broadcast.
      double fan_in = std::max(1u, std::min(k - 1, config.chips_per_node - 1));
      double rounds = k == 1 ? 0
                             : std::ceil((k - 1) / fan_in) +
                                   (k > config.chips_per_node ? 1 : 0);
      // Groups inside a node all-reduce by one exchange per reduction.
      double comm = k == 1                       ? 0
                    : k <= config.chips_per_node ? 2 * hop_s
                                                 : 4 * rounds * hop_s;
      double est = spec.n_layers * (layer_s + comm) + groups * hop_s;
      choices.push_back(
          {k, static_cast<uint32_t>(m), static_cast<uint32_t>(groups),
           static_cast<uint32_t>(e), static_cast<uint32_t>(h), aligned, est});
    }
  if (choices.empty())
    return caf::make_error(errc::infeasible, "model " + spec.name +
                                                 " does not fit cluster " +
                                                 config.name + ": " + why);
  // Best estimate first; stable, so ties keep the smaller k.
  std::stable_sort(choices.begin(), choices.end(), [](auto& a, auto& b) {
    return a.estimate_s < b.estimate_s;
  });
  std::vector<placement> out;
  for (const auto& c : choices) {
    placement p;
    p.tp_degree = c.k;
    p.layers_per_group = c.m;
    p.aligned_splits = c.aligned;
    // Groups first, from chip 0, so groups of <= chips_per_node chips sit
    // inside one node (the exchange all-reduce needs direct links); the
    // embedding and LM-head slices take the chips after them.
    size_t next = 0;
    for (uint32_t g = 0; g < c.groups; ++g) {
      std::vector<uint32_t> chips;
      for (uint32_t i = 0; i < c.k; ++i)
        chips.push_back(available[next++]);
      p.groups.push_back(std::move(chips));
    }
    for (uint32_t i = 0; i < c.e; ++i)
      p.embed_chips.push_back(available[next++]);
    for (uint32_t i = 0; i < c.h; ++i)
      p.head_chips.push_back(available[next++]);
    out.push_back(std::move(p));
  }
  return out;
}

} // namespace lockstep::planner::detail
