#include "planner/planner.hpp"

#include "planner/cost_model.hpp"
#include "planner/lower_bound.hpp"
#include "planner/detail/pipelining.hpp"
#include "planner/detail/plan_placement.hpp"
#include "planner/detail/schedule_builder.hpp"
#include "planner/detail/sram_layout.hpp"
#include "planner/topology.hpp"

#include <algorithm>
#include <deque>
#include <limits>
#include <optional>
#include <set>

namespace lockstep::planner {

namespace {

detail::placement placement_of(const plan& p) {
  detail::placement pl;
  pl.tp_degree = p.tp_degree;
  pl.layers_per_group = p.layers_per_group;
  pl.aligned_splits = p.aligned_splits;
  for (size_t i = 0; i < p.group_chips.size(); i += p.tp_degree)
    pl.groups.emplace_back(p.group_chips.begin() + i,
                           p.group_chips.begin() + i + p.tp_degree);
  pl.embed_chips = p.embed_chips;
  pl.head_chips = p.head_chips;
  return pl;
}

void record_placement(const detail::placement& pl, plan& p) {
  p.tp_degree = pl.tp_degree;
  p.layers_per_group = pl.layers_per_group;
  p.aligned_splits = pl.aligned_splits;
  p.group_chips.clear();
  for (const auto& g : pl.groups)
    p.group_chips.insert(p.group_chips.end(), g.begin(), g.end());
  p.embed_chips = pl.embed_chips;
  p.head_chips = pl.head_chips;
}

// End slot of micro-batch 0's sample: one token's latency, the whole loop
// from the feed through the model to the sampled token.
uint32_t first_token_end(const step_program& prog) {
  uint32_t end = 0;
  for (const auto& o : prog.ops)
    if (o.micro_batch == 0 && o.kind == op_kind::sample)
      end = std::max(end, o.start_slot + o.duration_slots);
  return end;
}

// Slots of CPU one step of `d` takes on a machine whose chips share its
// cores: every op, and every transfer's CPU at both ends.
uint64_t shared_core_work(const topology& topo, const plan& p,
                          const step_program& d) {
  uint64_t work = 0;
  for (const auto& o : d.ops)
    work += o.duration_slots;
  for (const auto& t : d.transfers)
    work += 2 * transfer_cpu_slots_per_end(topo.profile(t.link), p.slot_ns);
  return work;
}

// Builds, lays out and times one program of `p` with `mbs` micro-batches.
// False: it stopped at `stop_at_slot` (detail::schedule_inputs), unfinished.
caf::expected<bool> build_program_with(const cluster_config& config,
                                       topology& topo,
                                       const detail::placement& pl, plan& p,
                                       program_kind kind, uint32_t tokens,
                                       uint32_t mbs, uint32_t stop_at_slot = 0) {
  auto& prog = kind == program_kind::decode ? p.decode : p.prefill;
  uint32_t batch = kind == program_kind::decode ? p.batch : 1;
  detail::schedule_inputs in{&p.spec, &topo,   &pl,   &p,        kind,
                             batch,   tokens,  p.context, mbs, p.sampler,
                             stop_at_slot};
  auto complete = detail::build_schedule(in, prog);
  if (!complete || !*complete)
    return complete;
  detail::layout_program(p, prog, config.node_count());
  prog.period_slots = detail::pipeline_period(prog, config.chip_count());
  return true;
}

// Builds, lays out and times one program of `p` (placement recorded,
// weights placed). Decode pipelines the batch in micro-batches, one per
// layer group at most, so that groups work on different sequences at once.
// Chips that share a machine's cores cannot: the cores run them one after
// the other, and each micro-batch is another pass of every op (overhead)
// and transfer. There the batch also runs as one micro-batch, and the
// program whose step the cores get through sooner is kept. A decode
// program whose step would last `stop_at_slot` or more may be left
// unfinished (false).
caf::expected<bool> build_program(const cluster_config& config,
                                  topology& topo, const detail::placement& pl,
                                  plan& p, program_kind kind, uint32_t tokens,
                                  uint32_t stop_at_slot = 0) {
  uint32_t batch = kind == program_kind::decode ? p.batch : 1;
  auto groups = static_cast<uint32_t>(pl.groups.size());
  uint32_t mbs = std::min(batch, groups);
  if (kind != program_kind::decode || config.machine_cores == 0 || mbs == 1)
    return build_program_with(config, topo, pl, p, kind, tokens, mbs,
                              kind == program_kind::decode ? stop_at_slot : 0);
  // A step's length (the next starts when it ends; predict()).
  auto period = [&](const plan& q) {
    uint64_t work = shared_core_work(topo, q, q.decode);
    return std::max<uint64_t>(q.decode.slots_per_step,
                              (work + config.machine_cores - 1) /
                                  config.machine_cores);
  };
  plan one = p;
  if (auto ok = build_program_with(config, topo, pl, one, kind, tokens, 1);
      !ok)
    return ok;
  if (auto ok = build_program_with(config, topo, pl, p, kind, tokens, mbs);
      !ok)
    return ok;
  if (period(one) <= period(p))
    p = std::move(one);
  return true;
}

// The first chip whose SRAM the plan overfills, or no_id.
uint32_t first_overfull_chip(const cluster_config& config, const plan& p) {
  for (uint32_t c = 0; c < config.chip_count(); ++c)
    if (p.usage[c].total() > config.chip.sram_bytes)
      return c;
  return no_id;
}

std::string overflow_text(const cluster_config& config, const plan& p,
                          uint32_t c) {
  return "chip " + transport::to_string(config.ref(c)) + " would need " +
         std::to_string(p.usage[c].total()) + " bytes (weights " +
         std::to_string(p.usage[c].weight_bytes) + ", KV " +
         std::to_string(p.usage[c].kv_bytes) + ", decode " +
         std::to_string(p.usage[c].decode_bytes) + ", prefill " +
         std::to_string(p.usage[c].prefill_bytes) + "), SRAM is " +
         std::to_string(config.chip.sram_bytes);
}

// Prompt tokens the TTFT prediction is for.
uint32_t ttft_prompt(const plan& p) {
  return std::min(p.predicted.ttft_prompt_tokens, p.context);
}

// The chunk the decode program's memory suggests: its activations and
// arenas hold `rows` token rows a micro-batch; a prefill chunk of t rows
// needs about t / rows times as much, and never less (a part of it does
// not grow with rows). The largest power of two that leaves every chip
// within SRAM by that measure; usually the answer, or just under it.
uint32_t estimated_chunk(const cluster_config& config, const plan& p) {
  double rows = std::max(1.0, double(p.batch) / p.decode.micro_batches);
  double most = std::numeric_limits<double>::infinity();
  for (auto c : p.chips_used) {
    const auto& u = p.usage[c];
    double fixed = double(u.weight_bytes + u.kv_bytes);
    if (u.decode_bytes == 0 || fixed >= double(config.chip.sram_bytes))
      continue;
    most = std::min(most, (double(config.chip.sram_bytes) - fixed) /
                              double(u.decode_bytes) * rows);
  }
  uint32_t t = 1;
  while (double(t) * 2 <= most && t < (1u << 30))
    t *= 2;
  return t;
}

// The prefill program with the largest power-of-two chunk (at most the
// TTFT prompt) whose every chip still fits its SRAM: bigger chunks spread
// each op's fixed cost over more tokens; activations grow with them. Fit
// shrinks monotonically as the chunk grows, so: twice the hint, then the
// hint (a re-plan's hint is the chunk before the failure; a new plan's
// estimated_chunk()), which is the answer in two builds when twice it does
// not fit and it does; then a binary search between what is known.
caf::error build_prefill(const cluster_config& config, topology& topo,
                         const detail::placement& pl, plan& p,
                         uint32_t hint = 0) {
  std::vector<uint32_t> sizes{1};
  while (sizes.back() * 2 <= ttft_prompt(p))
    sizes.push_back(sizes.back() * 2);
  auto n = static_cast<int64_t>(sizes.size());
  // The largest program that fitted so far, moved aside while a larger
  // chunk is tried: rebuilding it would cost as much as a trial.
  std::optional<step_program> kept;
  std::vector<uint64_t> kept_bytes; // its usage[].prefill_bytes
  auto built = [&](uint32_t tokens) {
    return p.prefill.tokens == tokens && !p.prefill.ops.empty();
  };
  int64_t best = -1, fail = n; // sizes[best] fits, sizes[fail] does not
  auto probe = [&](int64_t i) -> caf::error {
    if (!built(sizes[i])) {
      if (!p.prefill.ops.empty() && first_overfull_chip(config, p) == no_id &&
          (!kept || kept->tokens < p.prefill.tokens)) {
        kept = std::move(p.prefill);
        kept_bytes.clear();
        for (const auto& u : p.usage)
          kept_bytes.push_back(u.prefill_bytes);
      }
      auto ok = build_program(config, topo, pl, p, program_kind::prefill,
                              sizes[i]);
      if (!ok)
        return ok.error();
    }
    if (first_overfull_chip(config, p) == no_id)
      best = std::max(best, i);
    else
      fail = std::min(fail, i);
    return {};
  };
  if (hint == 0)
    hint = estimated_chunk(config, p);
  int64_t h = 0;
  while (h + 1 < n && sizes[h + 1] <= hint)
    ++h;
  if (h + 1 < n)
    if (auto err = probe(h + 1))
      return err;
  if (fail <= h + 1 || h + 1 == n)
    if (auto err = probe(h))
      return err;
  // The hint is usually right or one off: gallop away from it (1, 2, 4
  // sizes) until the answer is bracketed, then bisect.
  for (int64_t step = 1; best + 1 < fail && (best < 0 || fail == n);
       step *= 2)
    if (auto err = probe(best >= 0 ? std::min(best + step, n - 1)
                                   : std::max<int64_t>(fail - step, 0)))
      return err;
  while (best + 1 < fail)
    if (auto err = probe((best + 1 + fail) / 2)) // try large chunks first
      return err;
  if (best < 0)
    return caf::make_error(errc::infeasible,
                           "the prefill program does not fit even one token "
                           "per chunk: " +
                               overflow_text(config, p,
                                             first_overfull_chip(config, p)));
  uint32_t tokens = sizes[best];
  if (built(tokens))
    return {};
  if (kept && kept->tokens == tokens) {
    p.prefill = std::move(*kept);
    for (size_t c = 0; c < p.usage.size(); ++c)
      p.usage[c].prefill_bytes = kept_bytes[c];
    return {};
  }
  auto ok = build_program(config, topo, pl, p, program_kind::prefill, tokens);
  return ok ? caf::error{} : ok.error();
}

void predict(const cluster_config& config, topology& topo, plan& p) {
  auto& pr = p.predicted;
  const auto& d = p.decode;
  double slot_us = p.slot_ns / 1000.0;
  pr.token_latency_us = first_token_end(d) * slot_us;
  // Steady state: a decode step starts when the previous one has ended
  // (its samples feed it), so every sequence gets one token a step, and
  // the batch's tokens come once a step: what the slot table does. The
  // step's micro-batches pipeline through the layer groups inside it. The
  // step is never shorter than the busiest chip or link (or, on a shared
  // machine, than its work over the cores).
  std::vector<uint64_t> chip_busy(config.node_count(), 0);
  std::vector<uint64_t> link_busy(topo.directed_link_count(), 0);
  for (const auto& o : d.ops)
    chip_busy[o.chip] += o.duration_slots;
  uint64_t link_slots = 0;
  std::set<uint32_t> links_used;
  for (const auto& t : d.transfers) {
    link_busy[t.link] += t.duration_slots;
    link_slots += t.duration_slots;
    links_used.insert(t.link);
  }
  uint64_t busiest =
      std::max(*std::max_element(chip_busy.begin(), chip_busy.end()),
               link_busy.empty()
                   ? 0
                   : *std::max_element(link_busy.begin(), link_busy.end()));
  // Chips sharing a machine's cores: all their work passes through them.
  if (config.machine_cores > 0) {
    uint64_t work = shared_core_work(topo, p, d);
    busiest = std::max<uint64_t>(
        busiest, (work + config.machine_cores - 1) / config.machine_cores);
  }
  double period_us = std::max<double>(d.slots_per_step, busiest) * slot_us;
  pr.tokens_per_s_per_user = period_us > 0 ? 1e6 / period_us : 0;
  pr.aggregate_tokens_per_s = p.batch * pr.tokens_per_s_per_user;
  pr.link_utilisation =
      links_used.empty() || d.slots_per_step == 0
          ? 0
          : double(link_slots) / (double(links_used.size()) * d.slots_per_step);
  uint64_t used_bytes = 0;
  for (auto c : p.chips_used)
    used_bytes += p.usage[c].total();
  pr.sram_utilisation =
      p.chips_used.empty() ? 0
                           : double(used_bytes) / (double(p.chips_used.size()) *
                                                   config.chip.sram_bytes);
  // Time to first token: the prompt's chunks enter the prefill program one
  // period apart; the last one's sample ends the prefill.
  pr.ttft_prompt_tokens = ttft_prompt(p);
  pr.ttft_ms = predicted_ttft_ms(p, pr.ttft_prompt_tokens);
  pr.lower_bound_token_latency_us = token_latency_bound(config, p).total_us;
}

// `p` with placement `pl` recorded, its weights placed and its decode
// program built; nothing if its step would last `stop_at_slot` or more
// (0: no limit).
caf::expected<std::optional<plan>>
scheduled(const cluster_config& config, topology& topo,
          const detail::placement& pl, plan p, uint32_t stop_at_slot = 0) {
  record_placement(pl, p);
  p.sampler = config.host_node(0);
  detail::place_static(p.spec, pl, p.batch, p.context, config, p);
  auto complete = build_program(config, topo, pl, p, program_kind::decode, 1,
                                stop_at_slot);
  if (!complete)
    return complete.error();
  if (!*complete)
    return std::optional<plan>{};
  std::set<uint32_t> used;
  for (const auto& sh : p.shards)
    used.insert(sh.chip);
  for (const auto& o : p.decode.ops)
    if (o.chip < config.chip_count())
      used.insert(o.chip);
  p.chips_used.assign(used.begin(), used.end());
  return std::optional<plan>{std::move(p)};
}

// The prefill program, predictions and the verifier's verdict for a plan
// whose decode program fits.
caf::expected<plan_result> conclude(const cluster_config& config,
                                    topology& topo,
                                    const detail::placement& pl, plan p,
                                    bool verify = true,
                                    uint32_t prefill_hint = 0) {
  if (auto err = build_prefill(config, topo, pl, p, prefill_hint))
    return err;
  predict(config, topo, p);
  plan_result r;
  if (verify)
    r.verdict = verify_plan(p, config);
  r.p = std::move(p);
  return r;
}

} // namespace

double predicted_ttft_ms(const plan& p, uint32_t prompt_tokens) {
  uint32_t chunks = (prompt_tokens + p.prefill.tokens - 1) / p.prefill.tokens;
  return (double(std::max(chunks, 1u) - 1) * p.prefill.period_slots +
          first_token_end(p.prefill)) *
         (p.slot_ns / 1e6);
}

double predicted_interleaved_ttft_ms(const plan& p, uint32_t prompt_tokens) {
  uint32_t chunks = (prompt_tokens + p.prefill.tokens - 1) / p.prefill.tokens;
  chunks = std::max(chunks, 1u);
  return chunks * (first_token_end(p.prefill) * (p.slot_ns / 1e6)) +
         (chunks - 1) * (p.predicted.token_latency_us / 1e3);
}

namespace {

// What make_plan and plan_placement start from: the options checked, the
// plan's header, and the chips that may hold work (not spares or failed).
struct plan_start {
  plan p;
  std::vector<uint32_t> available;
  std::vector<uint32_t> off;
};

caf::expected<plan_start> start_plan(const cluster_config& config,
                                     const model::model_spec& spec,
                                     const plan_options& options) {
  if (auto err = model::validate(spec))
    return err;
  if (options.batch == 0 || options.batch > 4096)
    return caf::make_error(errc::invalid_argument,
                           "--batch must be in [1, 4096], got " +
                               std::to_string(options.batch));
  uint32_t context = options.context == 0 ? spec.max_context : options.context;
  if (context > spec.max_context)
    return caf::make_error(errc::invalid_argument,
                           "--context " + std::to_string(context) +
                               " exceeds the model's max_context " +
                               std::to_string(spec.max_context));
  auto available = detail::available_chips(config, options.failed_chips);
  if (!available)
    return available.error();
  plan_start out;
  out.available = std::move(*available);
  out.off = config.spares;
  out.off.insert(out.off.end(), options.failed_chips.begin(),
                 options.failed_chips.end());
  std::sort(out.off.begin(), out.off.end());
  out.off.erase(std::unique(out.off.begin(), out.off.end()), out.off.end());
  plan& p = out.p;
  p.model = spec.name;
  p.cluster = config.name;
  p.spec = spec;
  p.batch = options.batch;
  p.context = context;
  p.slot_ns = config.transport.slot_ns;
  p.failed_chips = options.failed_chips;
  std::sort(p.failed_chips.begin(), p.failed_chips.end());
  p.spares = config.spares;
  return out;
}

} // namespace

caf::expected<std::vector<uint32_t>>
detail::available_chips(const cluster_config& config,
                        const std::vector<uint32_t>& failed) {
  std::set<uint32_t> off(config.spares.begin(), config.spares.end());
  for (auto f : failed) {
    if (f >= config.chip_count())
      return caf::make_error(errc::unknown_chip,
                             "failed chip #" + std::to_string(f) +
                                 " is not in " + config.name);
    off.insert(f);
  }
  std::vector<uint32_t> out;
  for (uint32_t c = 0; c < config.chip_count(); ++c)
    if (!off.contains(c))
      out.push_back(c);
  return out;
}

caf::expected<detail::placed_plan>
detail::plan_placement(const cluster_config& config,
                       const model::model_spec& spec,
                       const plan_options& options, const placement& pl) {
  auto start = start_plan(config, spec, options);
  if (!start)
    return start.error();
  topology topo{config};
  topo.block_relays(start->off);
  auto sp = scheduled(config, topo, pl, std::move(start->p));
  if (!sp)
    return sp.error();
  auto& p = *sp; // never stopped: no limit
  detail::placed_plan out;
  out.fits = first_overfull_chip(config, *p) == no_id;
  out.token_latency_us = first_token_end(p->decode) * (p->slot_ns / 1000.0);
  out.p = std::move(*p);
  return out;
}

caf::expected<plan_result> make_plan(const cluster_config& config,
                                     const model::model_spec& spec,
                                     const plan_options& options) {
  auto start = start_plan(config, spec, options);
  if (!start)
    return start.error();
  topology topo{config};
  topo.block_relays(start->off);
  auto candidates = detail::place_candidates(
      spec, config, topo, options.batch, start->p.context, start->available);
  if (!candidates)
    return candidates.error();
  plan p = std::move(start->p);
  // The estimates behind the candidates are approximate; the exact schedule
  // decides. Of the best-estimated candidates, keep the one whose decode
  // step is fastest among those whose every chip fits its SRAM; if none of
  // them fits, the first one further down that fits.
  // Up to 6 shapes (degree, layers a group, split), each possibly with
  // its head first and last (detail::place_candidates).
  constexpr size_t exact_trials = 6;
  std::string overflow;
  std::optional<size_t> best;
  std::optional<plan> best_plan;
  uint32_t best_slots = 0;
  size_t shapes = 0;
  for (size_t i = 0; i < candidates->size(); ++i) {
    const auto& pl = (*candidates)[i];
    bool new_shape = i == 0 || pl.tp_degree != (*candidates)[i - 1].tp_degree ||
                     pl.layers_per_group !=
                         (*candidates)[i - 1].layers_per_group ||
                     pl.aligned_splits != (*candidates)[i - 1].aligned_splits;
    shapes += new_shape;
    // Estimates within 1.5x of the best are worth an exact schedule.
    if (best && (shapes > exact_trials ||
                 pl.estimate_s > 1.5 * candidates->front().estimate_s))
      break;
    // Only a shorter step than the best can win: a trial stops as soon as
    // it reaches the best's length (the same choice, sooner).
    auto sp = scheduled(config, topo, pl, p, best ? best_slots : 0);
    if (!sp)
      return sp.error();
    if (!*sp)
      continue; // no shorter than the best
    auto& trial = *sp;
    if (auto c = first_overfull_chip(config, *trial); c != no_id) {
      overflow = "at tensor parallelism " + std::to_string(pl.tp_degree) +
                 ", " + overflow_text(config, *trial, c);
      continue;
    }
    // The step's length: each sequence's time per token (at batch 1, the
    // token loop's latency).
    uint32_t slots = trial->decode.slots_per_step;
    if (!best || slots < best_slots) {
      best = i;
      best_slots = slots;
      best_plan = std::move(*trial);
    }
  }
  if (best)
    return conclude(config, topo, (*candidates)[*best], std::move(*best_plan),
                    options.verify);
  return caf::make_error(errc::infeasible, "model " + spec.name +
                                               " does not fit cluster " +
                                               config.name + ": " + overflow);
}

caf::expected<replan_result> replan(const cluster_config& config,
                                    const plan& base, uint32_t failed_chip) {
  if (failed_chip >= config.chip_count())
    return caf::make_error(errc::unknown_chip, "chip #" +
                                                   std::to_string(failed_chip) +
                                                   " is not in " + config.name);
  topology topo{config};
  std::set<uint32_t> failed(base.failed_chips.begin(), base.failed_chips.end());
  failed.insert(failed_chip);
  bool affected = std::binary_search(base.chips_used.begin(),
                                     base.chips_used.end(), failed_chip);
  // Rebuilds the schedule with `replacement` doing the failed chip's work
  // (every other placement decision kept).
  auto attempt = [&](uint32_t replacement) -> caf::expected<replan_result> {
    replan_result out;
    out.failed = failed_chip;
    out.replacement = replacement;
    auto pl = placement_of(base);
    if (affected) {
      auto swap = [&](std::vector<uint32_t>& v) {
        std::replace(v.begin(), v.end(), failed_chip, replacement);
      };
      for (auto& g : pl.groups)
        swap(g);
      swap(pl.embed_chips);
      swap(pl.head_chips);
      for (const auto& s : base.shards)
        if (s.chip == failed_chip) {
          ++out.moved_shards;
          out.moved_bytes += s.bytes;
        }
    }
    plan p;
    p.model = base.model;
    p.cluster = base.cluster;
    p.spec = base.spec;
    p.batch = base.batch;
    p.context = base.context;
    p.slot_ns = base.slot_ns;
    p.failed_chips.assign(failed.begin(), failed.end());
    p.incremental = true;
    // The replacement is no longer a spare; spares still free, and failed
    // chips, relay nothing.
    for (auto s : base.spares)
      if (s != replacement)
        p.spares.push_back(s);
    std::set<uint32_t> blocked(failed.begin(), failed.end());
    blocked.insert(p.spares.begin(), p.spares.end());
    topo.block_relays(std::vector<uint32_t>(blocked.begin(), blocked.end()));
    auto sp = scheduled(config, topo, pl, std::move(p));
    if (!sp)
      return sp.error();
    auto done = conclude(config, topo, pl, std::move(**sp), true,
                         base.prefill.tokens);
    if (!done)
      return done.error();
    out.result = std::move(*done);
    return out;
  };
  if (!affected)
    return attempt(failed_chip);
  // Free spares, nearest (fewest hops) first, lowest id on ties.
  std::set<uint32_t> taken(base.chips_used.begin(), base.chips_used.end());
  std::vector<int32_t> dist(config.chip_count(), -1);
  std::deque<uint32_t> queue{failed_chip};
  dist[failed_chip] = 0;
  while (!queue.empty()) {
    auto v = queue.front();
    queue.pop_front();
    for (auto d : topo.out_links(v)) {
      uint32_t u = topo.link_dst(d);
      if (config.is_host_node(u))
        continue; // hops between chips: host endpoints relay nothing
      if (dist[u] < 0) {
        dist[u] = dist[v] + 1;
        queue.push_back(u);
      }
    }
  }
  std::vector<uint32_t> spares;
  for (auto s : base.spares)
    if (!failed.contains(s) && !taken.contains(s) && dist[s] >= 0)
      spares.push_back(s);
  std::stable_sort(spares.begin(), spares.end(),
                   [&](uint32_t a, uint32_t b) { return dist[a] < dist[b]; });
  if (spares.empty())
    return caf::make_error(errc::infeasible,
                           "no free spare chip left to replace " +
                               transport::to_string(config.ref(failed_chip)));
  // Traffic to and from the replacement may be relayed by chips near their
  // SRAM limit; take the nearest spare whose schedule fits everywhere.
  constexpr size_t max_tries = 16;
  std::optional<replan_result> first;
  for (size_t i = 0; i < spares.size() && i < max_tries; ++i) {
    auto r = attempt(spares[i]);
    if (!r)
      return r.error();
    if (first_overfull_chip(config, r->result.p) == no_id)
      return r;
    if (!first)
      first = std::move(*r);
  }
  return std::move(*first); // the verifier's verdict says what does not fit
}

} // namespace lockstep::planner
