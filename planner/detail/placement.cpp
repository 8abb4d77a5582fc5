#include "planner/detail/placement.hpp"

#include "model/block_rule.hpp"
#include "planner/cost_model.hpp"
#include "transport/payload_frame.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>

namespace lockstep::planner::detail {

std::pair<uint32_t, uint32_t> head_range(const model::model_spec& spec,
                                         uint32_t k, uint32_t i,
                                         bool aligned) {
  // Aligned (power-of-two k): each chip's heads are one node of the
  // canonical tree over q_dim's blocks, so it sends one partial per element
  // (the last chips may get fewer heads or none).
  uint32_t nb = model::blocks_of(spec.q_dim());
  uint32_t node_blocks = model::tree_span(nb) / std::max(k, 1u);
  uint64_t node_elems = uint64_t{node_blocks} * model::reduction_block_elems;
  if (aligned && (k & (k - 1)) == 0 && node_blocks > 0 &&
      node_elems % spec.head_dim == 0) {
    auto per = static_cast<uint32_t>(node_elems / spec.head_dim);
    return {std::min(spec.n_heads, i * per),
            std::min(spec.n_heads, (i + 1) * per)};
  }
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

reduction_shape reduction_shape_of(const model::model_spec& spec,
                                   uint32_t batch, uint32_t tp_degree,
                                   uint32_t chips_per_node, bool aligned) {
  reduction_shape r;
  uint32_t k = tp_degree;
  r.slices = std::max(1u, std::min(k, chips_per_node));
  r.subs = (k + r.slices - 1) / r.slices;
  r.slice_bytes = (uint64_t{spec.d_model} + r.slices - 1) / r.slices * batch * 4;
  for (bool attn : {true, false}) {
    uint32_t nb = model::blocks_of(attn ? spec.q_dim() : spec.d_ff);
    std::vector<std::pair<uint32_t, uint32_t>> ranges;
    for (uint32_t i = 0; i < k; ++i) {
      auto br = part_blocks(spec, k, i, aligned, attn);
      ranges.push_back(br);
      if (br.second > br.first)
        r.pieces = std::max<uint64_t>(
            r.pieces, model::canonical_pieces(nb, br.first, br.second).size());
    }
    for (uint32_t q = 0; q < r.subs; ++q) {
      uint32_t b0 = nb, b1 = 0;
      for (uint32_t i = q * r.slices; i < std::min(k, (q + 1) * r.slices); ++i)
        if (ranges[i].second > ranges[i].first) {
          b0 = std::min(b0, ranges[i].first);
          b1 = std::max(b1, ranges[i].second);
        }
      if (b1 > b0)
        r.sub_pieces = std::max<uint64_t>(
            r.sub_pieces, model::canonical_pieces(nb, b0, b1).size());
    }
  }
  return r;
}

std::pair<uint32_t, uint32_t> part_blocks(const model::model_spec& spec,
                                          uint32_t k, uint32_t i, bool aligned,
                                          bool attention) {
  if (!attention)
    return block_range(spec.d_ff, k, i, aligned);
  auto [h0, h1] = head_range(spec, k, i, aligned);
  return {h0 * spec.head_dim / model::reduction_block_elems,
          h1 * spec.head_dim / model::reduction_block_elems};
}

uint64_t arena_reserve_bytes(const model::model_spec& spec, uint32_t batch,
                             uint32_t tp_degree, uint32_t layers,
                             uint32_t chips_per_node, bool aligned) {
  // Every transfer gets its own window for the whole step (the transport's
  // contract): two receive buffers and one send window. Per reduction a
  // chip receives and sends (slices - 1) reduce-scatter partials, (subs - 1)
  // second-level partials and (slices - 1) all-gather slices; plus the
  // activation entering and leaving the group.
  auto r = reduction_shape_of(spec, batch, tp_degree, chips_per_node, aligned);
  uint64_t act = transport::framed_bytes(uint64_t{spec.d_model} * batch * 4);
  uint64_t per_reduction =
      (r.slices - 1) * transport::framed_bytes(r.pieces * r.slice_bytes) +
      (r.subs - 1) * transport::framed_bytes(r.sub_pieces * r.slice_bytes) +
      (r.slices - 1) * transport::framed_bytes(r.slice_bytes);
  uint64_t per_layer = 3 * 2 * per_reduction;
  return layers * per_layer + 12 * act;
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
    auto [h0, h1] = head_range(spec, k, i, aligned);
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
                 const topology& topo, uint32_t batch, uint32_t context,
                 const std::vector<uint32_t>& available) {
  const auto& chip = config.chip;
  auto n_avail = static_cast<uint64_t>(available.size());
  uint64_t emb_bytes =
      model::tensor_bytes(spec, model::tensor_kind::tok_embedding);
  uint64_t head_bytes = model::tensor_bytes(spec, model::tensor_kind::lm_head);
  // Hops are estimated with the first chip-to-chip link's profile (host
  // links, listed last, carry no activations), not with whichever profile
  // happens to be listed first.
  const auto& fast =
      !config.links.empty() && config.is_chip_link(config.links.front())
          ? config.link_profiles[config.links.front().profile]
          : config.link_profiles.front();

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
      // A group wider than a node is whole nodes: its reductions pair
      // chip j of each node (two levels), which needs the same number of
      // chips in every node (a node of 3 and k = 4 has no such pairing).
      if (k > config.chips_per_node && k % config.chips_per_node != 0)
        continue;
      uint64_t per_layer = layer_chip_bytes(spec, batch, context, k, aligned);
      auto fits = [&](uint64_t m) {
        return m * per_layer + arena_reserve_bytes(spec, batch, k,
                                                   static_cast<uint32_t>(m),
                                                   config.chips_per_node,
                                                   aligned) <=
               chip.sram_bytes;
      };
      uint64_t max_m = 0;
      while (max_m < spec.n_layers && fits(max_m + 1))
        ++max_m;
      if (max_m == 0) {
        why = "one layer split " + std::to_string(k) + " ways needs " +
              std::to_string(per_layer +
                             arena_reserve_bytes(spec, batch, k, 1,
                                                config.chips_per_node, aligned)) +
              " bytes on its fullest chip, SRAM is " +
              std::to_string(chip.sram_bytes);
        continue;
      }
      uint64_t reserve = arena_reserve_bytes(spec, batch, k, 1,
                                                config.chips_per_node, aligned);
      uint64_t room = chip.sram_bytes - reserve;
      uint64_t e = ceil_div(emb_bytes, room);
      uint64_t h = ceil_div(head_bytes, room);
      if (e + h >= n_avail)
        continue;
      uint64_t groups_max = (n_avail - e - h) / k;
      if (groups_max == 0)
        continue;
      // Fewest layers per group that the chips allow (more groups, less SRAM
      // pressure) and the most that fit (fewer group-to-group hops).
      uint64_t m_min = std::max(ceil_div(spec.n_layers, groups_max), uint64_t{1});
      if (m_min > max_m) {
        why = std::to_string(spec.n_layers) + " layers need " +
              std::to_string(ceil_div(spec.n_layers, max_m) * k + e + h) +
              " chips at tensor parallelism " + std::to_string(k) + ", " +
              std::to_string(n_avail) + " available";
        continue;
      }
      // Latency estimate: per layer, compute split k ways plus (k > 1), per
      // reduction, a reduce-scatter hop, a second-level hop when the group
      // spans nodes and an all-gather hop, each followed by an op; one slice
      // hop (and an all-gather) between groups.
      auto shape = reduction_shape_of(spec, batch, k, config.chips_per_node,
                                      aligned);
      double op_s = 1e-9 * chip.op_overhead_ns;
      auto hop = [&](uint64_t payload) {
        return transfer_duration_ns(fast, transport::framed_bytes(payload)) *
                   1e-9 +
               op_s;
      };
      double layer_s =
          double(spec.layer_weight_bytes()) / k / chip.sram_bytes_per_s +
          2 * op_s;
      double comm =
          k == 1 ? 0
                 : 2 * (hop(shape.pieces * shape.slice_bytes) +
                        // Same-index chips of a node's neighbours are
                        // linked directly; farther sub-groups share links
                        // and relay: count one hop per other sub-group.
                        (shape.subs - 1) *
                            hop(shape.sub_pieces * shape.slice_bytes) +
                        hop(shape.slice_bytes));
      double hop_s = k == 1 ? hop(uint64_t{spec.d_model} * batch * 4)
                            : hop(shape.slice_bytes);
      std::vector<uint64_t> ms{m_min};
      if (max_m > m_min)
        ms.push_back(max_m);
      for (uint64_t m0 : ms) {
        uint64_t groups = ceil_div(spec.n_layers, m0);
        uint64_t m = ceil_div(spec.n_layers, groups); // balanced
        double est = spec.n_layers * (layer_s + comm) + groups * hop_s;
        choices.push_back({k, static_cast<uint32_t>(m),
                           static_cast<uint32_t>(groups),
                           static_cast<uint32_t>(e), static_cast<uint32_t>(h),
                           aligned, est});
      }
    }
  if (choices.empty())
    return caf::make_error(errc::infeasible, "model " + spec.name +
                                                 " does not fit cluster " +
                                                 config.name + ": " + why);
  // Best estimate first; stable, so ties keep the smaller k.
  std::stable_sort(choices.begin(), choices.end(), [](auto& a, auto& b) {
    return a.estimate_s < b.estimate_s;
  });
  // A group over several nodes reduces in two levels, chip j of each node
  // exchanging with chip j of the others over a direct link: its nodes
  // must be linked so (on groq, neighbours in one rack's ring). A group
  // that would straddle nodes that are not (two racks) starts one node
  // later.
  auto nodes_linked = [&](const std::vector<uint32_t>& g) {
    uint32_t cpn = std::max(config.chips_per_node, 1u);
    for (size_t q = 1; q * cpn < g.size(); ++q)
      if (topo.find(g[0], g[q * cpn]) < 0 &&
          topo.find(g[(q - 1) * cpn], g[q * cpn]) < 0)
        return false;
    return true;
  };
  std::vector<placement> out;
  for (const auto& c : choices) {
    // Groups take consecutive chips from a node boundary, so groups of <=
    // chips_per_node chips sit inside one node (the exchange all-reduce
    // needs direct links). The embedding and LM-head slices take the chips
    // after the groups, or, on real chips, come first: the head on host 0's
    // chips, then the embedding, the groups from the next node boundary,
    // when they fit one node and the groups still fit after it. The
    // sampler (host 0's endpoint) then feeds them and takes their logits
    // over its own host links; from the far end of the layout the logits
    // (vocab x 4 bytes) cross chips hop by hop (llama-3-8b on groq-64: 27
    // of 179 us). But x then crosses the cluster to reach the head, and
    // its relays need arena space chips near their SRAM limit may lack
    // (llama-2-70b on groq-576 at batch 2 fits only at k = 16 that way),
    // so both are candidates, head first tried first, and the exact
    // schedule decides. (On a shared machine host links are memory copies:
    // the head stays last. falcon-180b's 5 + 5 would span two nodes:
    // placed first, its token was 2% faster on groq-1512, but its plan on
    // groq-10440 took 3 s instead of 1.6 s, so they stay last.)
    uint32_t cpn = std::max(config.chips_per_node, 1u);
    std::optional<size_t> first_group;
    // LM-head chip counts to try with the ends first: the fewest that hold
    // it, and every chip the node has left (a shorter lm_head op, and the
    // logits cross that many more host links side by side; but x must
    // reach them all: the exact schedule decides).
    std::vector<uint32_t> heads_first;
    if (config.machine_cores == 0 && c.e + c.h <= cpn &&
        c.e + c.h <= available.size() && c.h > 0) {
      uint32_t last_end = available[c.e + c.h - 1];
      uint32_t boundary = (last_end / cpn + 1) * cpn;
      size_t at = std::lower_bound(available.begin(), available.end(),
                                   boundary) -
                  available.begin();
      if (at + size_t{c.groups} * c.k <= available.size()) {
        first_group = at;
        auto wide = static_cast<uint32_t>(at) - c.e;
        for (uint32_t h : {c.h, wide})
          if ((heads_first.empty() || h > heads_first.back()) &&
              available[h - 1] < config.chips_per_host.front()) // on host 0
            heads_first.push_back(h);
      }
    }
    auto add = [&](bool ends_first, uint32_t h) {
      placement p;
      p.tp_degree = c.k;
      p.layers_per_group = c.m;
      p.aligned_splits = c.aligned;
      p.estimate_s = c.estimate_s;
      // The groups: from the first node boundary after the ends, or from
      // the start with the ends after them; nodes linked where the chips
      // allow, else consecutive (a local cluster's nodes of 8 over hosts of
      // 125 chips leave no slack).
      size_t first = ends_first ? *first_group : 0;
      size_t end = available.size() - (ends_first ? 0 : c.e + c.h);
      size_t next = first;
      for (bool linked_only : {true, false}) {
        p.groups.clear();
        next = first;
        for (uint32_t g = 0; g < c.groups; ++g) {
          std::vector<uint32_t> chips;
          while (next + c.k <= end) {
            chips.assign(available.begin() + next,
                         available.begin() + next + c.k);
            if (!linked_only || c.k <= cpn || nodes_linked(chips))
              break;
            chips.clear();
            next += cpn; // one node on
          }
          if (chips.empty())
            break; // the groups do not fit whole
          next += c.k;
          p.groups.push_back(std::move(chips));
        }
        if (p.groups.size() == c.groups)
          break;
      }
      if (p.groups.size() != c.groups)
        return;
      // The ends: head then embedding on the first chips, or embedding
      // then head after the groups.
      size_t at = ends_first ? 0 : next;
      auto take = [&](std::vector<uint32_t>& into, uint32_t n) {
        for (uint32_t i = 0; i < n; ++i)
          into.push_back(available[at++]);
      };
      if (ends_first) {
        take(p.head_chips, h);
        take(p.embed_chips, c.e);
      } else {
        take(p.embed_chips, c.e);
        take(p.head_chips, h);
      }
      out.push_back(std::move(p));
    };
    for (uint32_t h : heads_first)
      add(true, h);
    add(false, c.h);
  }
  return out;
}

} // namespace lockstep::planner::detail
