#include "planner/lower_bound.hpp"

#include "model/block_rule.hpp"
#include "planner/cost_model.hpp"
#include "planner/detail/chip_reach.hpp"

#include <algorithm>
#include <cmath>
#include <optional>

namespace lockstep::planner {

namespace {

// A chain of ops and hops: whole slots, and the unrounded time by term.
struct chain {
  uint64_t slots = 0;
  double compute_ns = 0, overhead_ns = 0, latency_ns = 0, bytes_ns = 0;

  chain& operator+=(const chain& o) {
    slots += o.slots;
    compute_ns += o.compute_ns;
    overhead_ns += o.overhead_ns;
    latency_ns += o.latency_ns;
    bytes_ns += o.bytes_ns;
    return *this;
  }
  chain times(uint64_t n) const {
    return {slots * n, compute_ns * n, overhead_ns * n, latency_ns * n,
            bytes_ns * n};
  }
};
chain operator+(chain a, const chain& b) { return a += b; }
const chain& least(const chain& a, const chain& b) {
  return b.slots < a.slots ? b : a;
}
const chain& most(const chain& a, const chain& b) {
  return b.slots > a.slots ? b : a;
}

class bound_builder {
public:
  bound_builder(const cluster_config& config, const model::model_spec& spec,
                uint32_t batch, uint32_t context,
                const std::vector<bool>& usable, detail::chip_reach& reach)
      : cfg_(config), s_(spec), batch_(batch), ctx_(context), usable_(usable),
        reach_(reach),
        slot_ns_(config.transport.slot_ns),
        elem_(model::element_bytes(spec.weight_dtype)),
        x_bytes_(4.0 * spec.d_model) {
    // The best any chip-to-chip link offers: the lowest latency and the
    // highest bandwidth (possibly of different links), so a hop's figure
    // stays a bound. Host links never carry activations between chips.
    bool first = true;
    std::vector<bool> between_chips(config.link_profiles.size(), false);
    for (const auto& l : config.links)
      if (config.is_chip_link(l))
        between_chips[l.profile] = true;
    for (size_t i = 0; i < config.link_profiles.size(); ++i) {
      if (!between_chips[i])
        continue;
      const auto& l = config.link_profiles[i];
      fast_.latency_ns = first ? l.latency_ns
                               : std::min(fast_.latency_ns, l.latency_ns);
      fast_.bytes_per_s = first ? l.bytes_per_s
                                : std::max(fast_.bytes_per_s, l.bytes_per_s);
      first = false;
    }
    if (first)
      fast_ = config.link_profiles[config.host_link]; // one chip, no links
  }

  // An op moving `bytes` through SRAM and doing `flops`.
  chain op(double bytes, double flops) const {
    double work_ns = std::max(bytes / cfg_.chip.sram_bytes_per_s,
                              flops / peak_flops(cfg_.chip, s_.weight_dtype)) *
                     1e9;
    uint64_t ns = op_duration_ns(cfg_.chip, s_.weight_dtype, {bytes, flops});
    return {to_slots(ns, slot_ns_), work_ns, double(cfg_.chip.op_overhead_ns),
            0, 0};
  }
  chain op_min() const { return op(0, 0); }

  // `n` ops of a `bytes`/`flops` whole split among them (the largest share
  // is at least the mean); on a machine of C cores, n ops of which at
  // most C run at once take at least their sum / C.
  chain split_ops(double bytes, double flops, uint32_t n) const {
    chain one = op(bytes / n, flops / n);
    uint32_t cores = cfg_.machine_cores;
    if (cores == 0 || n <= cores)
      return one;
    chain all = op(bytes, flops);
    double sum_ns = all.compute_ns + double(n) * cfg_.chip.op_overhead_ns;
    uint64_t sum_slots = std::max<uint64_t>(
        to_slots(static_cast<uint64_t>(std::ceil(sum_ns)), slot_ns_),
        n * op_min().slots);
    chain shared{(sum_slots + cores - 1) / cores, all.compute_ns / cores,
                 double(n) * cfg_.chip.op_overhead_ns / cores, 0, 0};
    return most(one, shared);
  }

  chain hop(const link_profile& link, double bytes) const {
    auto b = static_cast<uint64_t>(bytes);
    return {to_slots(transfer_duration_ns(link, b), slot_ns_), 0, 0,
            double(link.latency_ns), b / link.bytes_per_s * 1e9};
  }

  // From k chips that each hold a part of x (partial sums) to a chip at
  // least `h` hops from one of them that needs all of x. One hop must
  // carry a whole partial vector between two chips (4 bytes an element);
  // anything less whole goes two hops with an op between. Longer chains
  // take an op at every chip between hops. And the receiver takes in at
  // least 4 d (1 - 1/k) bytes over its links (it can own at most its share
  // of the elements; at k = 1 a whole x crosses).
  chain boundary(uint32_t h, uint32_t k) const {
    if (h == 0)
      return {};
    chain lat = hop(fast_, 0);
    chain hops = lat.times(h) + op_min().times(h - 1);
    if (h == 1)
      hops = least(hop(fast_, x_bytes_ / reach_.max_parallel_links()),
                   lat.times(2) + op_min());
    double in_bytes =
        k <= 1 ? x_bytes_ : x_bytes_ * (1.0 - 1.0 / k) / reach_.max_degree();
    return most(hops, hop(fast_, in_bytes));
  }

  // A layer on k chips: the first min(k, heads) hold attention, the first
  // min(k, MLP blocks) the MLP. Every MLP chip needs all of x after
  // attention, from every attention chip (pairs of them are as far apart
  // as `ka` chips can be, and `km` chips all within reach of one); the
  // next layer's chips need all of x from every MLP chip.
  struct split_shape {
    uint32_t ka, km, h_in, h_out;
  };
  split_shape shape(uint32_t k) {
    split_shape sh;
    sh.ka = std::min(k, s_.n_heads);
    sh.km = std::min(k, model::blocks_of(s_.d_ff));
    // With ka <= km the attention chips are MLP chips too, so two of them
    // (diam(ka) apart at least) must hear from each other; otherwise only
    // that each MLP chip hears from all ka of them.
    uint32_t att = sh.ka <= sh.km ? reach_.min_diameter(sh.ka)
                                  : reach_.min_reach(sh.ka);
    sh.h_in = std::max(att, reach_.min_reach(sh.km));
    sh.h_out = reach_.min_reach(sh.km);
    return sh;
  }
  // Its two halves and hand-off to the next layer's chips.
  chain split_layer(const split_shape& sh) const {
    return attention(sh.ka) + boundary(sh.h_in, sh.ka) + mlp(sh.km) +
           boundary(sh.h_out, sh.km);
  }
  // What split_layer costs at least at this k and at every larger one:
  // hops and shares only grow with k, compute may shrink to an op each.
  chain split_floor(const split_shape& sh) const {
    return op_min().times(2) + boundary(sh.h_in, sh.ka) +
           boundary(sh.h_out, sh.km);
  }

  // Attention of one sequence on `ka` chips: its weights once, and each
  // chip's kv heads' cache (a kv head's cache is read by every chip that
  // holds one of its query heads: replicated when ka > n_kv_heads).
  chain attention(uint32_t ka) const {
    double hd = s_.head_dim;
    double params = double(s_.d_model) * hd * (2.0 * s_.n_heads +
                                               2.0 * s_.n_kv_heads);
    double kv_head = hd * 2 * 4 * double(ctx_);
    double bytes = params * elem_ + kv_head * std::max(s_.n_kv_heads, ka);
    double flops = 2.0 * params + 4.0 * double(ctx_) * s_.n_heads * hd;
    return split_ops(bytes, flops, ka);
  }
  chain mlp(uint32_t km) const {
    double params = 3.0 * double(s_.d_model) * s_.d_ff;
    return split_ops(params * elem_, 2.0 * params, km);
  }

  // Most bytes one of k chips holds of a layer: its shards and the KV of
  // `batch` sequences at the context (replicated as attention() says).
  double layer_bytes_per_chip(uint32_t k) const {
    double kv_head = double(s_.head_dim) * 2 * 4 * ctx_ * batch_;
    uint32_t ka = std::min(k, s_.n_heads);
    return (double(s_.layer_weight_bytes()) +
            kv_head * std::max(s_.n_kv_heads, ka)) /
           k;
  }

  token_bound build() {
    token_bound out;
    out.clique = reach_.clique();
    out.diameter2_set = reach_.max_diameter2_set();
    uint32_t chips = std::max(reach_.chips(), 1u);
    auto sram = double(cfg_.chip.sram_bytes);
    uint32_t k_min = 1;
    while (k_min < chips && layer_bytes_per_chip(k_min) > sram)
      ++k_min;
    out.min_tp_degree = k_min;

    // The layers. Split: the best k >= max(k_min, 2). A larger k splits
    // compute further but its chips are farther apart; once the hops
    // alone cost more than the best, no larger k can win.
    std::optional<chain> split;
    uint32_t best_k = 0;
    for (uint32_t k = std::max(k_min, 2u); k <= chips; ++k) {
      auto sh = shape(k);
      if (split && split_floor(sh).slots >= split->slots)
        break;
      chain c = split_layer(sh);
      if (!split || c.slots < split->slots) {
        split = c;
        best_k = k;
      }
    }
    uint32_t L = s_.n_layers;
    chain layers;
    if (k_min == 1) {
      // Whole layers on one chip where they fit: `per_chip` at most on a
      // chip, a hand-off between chips. With x split layers among them,
      // the single-chip layers form at most x + 1 runs, so at least
      // ceil((L - x) / per_chip) - (x + 1) hand-offs are theirs.
      auto per_chip = static_cast<uint32_t>(
          std::max(1.0, std::floor(sram / layer_bytes_per_chip(1))));
      chain whole = attention(1) + mlp(1);
      chain hand = boundary(1, 1);
      std::optional<chain> best;
      for (uint32_t x = 0; x <= L; ++x) {
        if (x > 0 && !split)
          break;
        uint32_t runs = x + 1;
        uint32_t chips_needed = (L - x + per_chip - 1) / per_chip;
        uint32_t hand_offs = chips_needed > runs ? chips_needed - runs : 0;
        chain c = whole.times(L - x) + hand.times(hand_offs);
        if (x > 0)
          c += split->times(x);
        if (!best || c.slots < best->slots) {
          best = c;
          out.split_layers = x;
        }
      }
      layers = *best;
    } else {
      layers = split->times(L);
      out.split_layers = L;
    }
    if (out.split_layers > 0) {
      auto sh = shape(best_k);
      out.tp_degree = best_k;
      out.reduce_hops = sh.h_in;
      out.handoff_hops = sh.h_out;
    }

    // The token loop: the sampler's feed crosses a host link to an
    // embedding chip, which looks the row up (an op); the row reaches the
    // first layer's chips (a hop if the table or the layer spans chips).
    // At the end, the LM head's rows (spread over at most every usable
    // chip) and their logits over host links into the sampler (one link
    // per chip of host 0), and the sample op.
    const auto& host = cfg_.link_profiles[cfg_.host_link];
    double table_bytes = double(s_.vocab) * s_.d_model * elem_;
    bool table_split = table_bytes > sram;
    uint32_t h_embed = k_min >= 2 ? reach_.min_reach(std::min(k_min, chips))
                                  : (table_split ? 1u : 0u);
    chain loop = op(16, 0) + hop(host, 16) + op_min() +
                 boundary(h_embed, std::max(k_min, 1u));
    uint32_t sampler_links = 0;
    for (uint32_t c = 0; c < cfg_.chips_per_host.front(); ++c)
      sampler_links += is_usable(c);
    sampler_links = std::max(sampler_links, 1u);
    double logits = 4.0 * s_.vocab;
    chain widest = op(table_bytes / chips, 2.0 * s_.vocab * s_.d_model / chips) +
                   hop(host, logits / chips);
    chain into_sampler = op_min() + hop(host, logits / sampler_links);
    loop += most(widest, into_sampler) + op(2.0 * logits, 0);

    chain all = layers + loop;
    out.chain_us = all.slots * (slot_ns_ / 1000.0);
    out.terms.compute_us = all.compute_ns / 1000;
    out.terms.op_overhead_us = all.overhead_ns / 1000;
    out.terms.link_latency_us = all.latency_ns / 1000;
    out.terms.link_bytes_us = all.bytes_ns / 1000;
    out.terms.rounding_us = out.chain_us - (out.terms.compute_us +
                                            out.terms.op_overhead_us +
                                            out.terms.link_latency_us +
                                            out.terms.link_bytes_us);
    // Chips that share a machine's cores: every byte and FLOP of the step
    // passes through them, and every op's overhead: at least one
    // attention and one MLP op on each of a layer's k_min chips.
    if (cfg_.machine_cores > 0) {
      double kv = double(s_.kv_bytes_per_token_per_layer()) * ctx_ * L;
      double bytes = double(s_.weight_bytes()) + kv;
      double flops = 2.0 * double(s_.param_count()) +
                     4.0 * double(ctx_) * s_.q_dim() * L;
      double s = std::max(bytes / cfg_.chip.sram_bytes_per_s,
                          flops / peak_flops(cfg_.chip, s_.weight_dtype));
      auto sh = shape(k_min);
      double ops = double(L) * (sh.ka + sh.km);
      out.shared_work_us =
          (s * 1e6 + ops * cfg_.chip.op_overhead_ns / 1000) /
          cfg_.machine_cores;
    }
    out.total_us = std::max(out.chain_us, out.shared_work_us);
    return out;
  }

private:
  bool is_usable(uint32_t c) const { return c < usable_.size() && usable_[c]; }

  const cluster_config& cfg_;
  const model::model_spec& s_;
  uint32_t batch_, ctx_;
  const std::vector<bool>& usable_;
  detail::chip_reach& reach_;
  uint64_t slot_ns_;
  double elem_;
  double x_bytes_;
  link_profile fast_;
};

} // namespace

token_bound token_latency_bound(const cluster_config& config,
                                const model::model_spec& spec, uint32_t batch,
                                uint32_t context,
                                const std::vector<uint32_t>& unusable) {
  std::vector<bool> usable(config.chip_count(), true);
  for (auto c : unusable)
    if (c < usable.size())
      usable[c] = false;
  detail::chip_reach reach{config, usable};
  return bound_builder{config, spec, batch, context, usable, reach}.build();
}

token_bound token_latency_bound(const cluster_config& config, const plan& p) {
  std::vector<uint32_t> unusable = p.spares;
  unusable.insert(unusable.end(), p.failed_chips.begin(),
                  p.failed_chips.end());
  return token_latency_bound(config, p.spec, p.batch, p.context, unusable);
}

} // namespace lockstep::planner
