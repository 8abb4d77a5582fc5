// lockstep plan CONFIG --model M: compile a plan and show what it predicts.

#include "tools/cli.hpp"

#include "planner/batch_sweep.hpp"
#include "planner/critical_path.hpp"
#include "planner/lower_bound.hpp"
#include "planner/plan_cache.hpp"
#include "planner/plan_codec.hpp"
#include "planner/planner.hpp"
#include "planner/trace.hpp"
#include "storage/weight_store.hpp"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <optional>

namespace lockstep::tools {

namespace {

struct plan_cli_options {
  std::string config;
  std::string model;
  std::string weights;
  uint32_t batch = 1;
  uint32_t context = 0;
  std::string dtype;
  std::vector<std::string> fail_chips;
  std::string trace;
  std::string db;
  bool sweep_batch = false;
  bool critical_steps = false; // --critical-path
  std::string format = "text";
};

// One op or transfer of the critical path, as `--critical-path` lists it.
struct step_text {
  uint32_t start_slot = 0, slots = 0;
  std::string what;                     // op kind, or "transfer"
  std::string where;                    // its chip, or "src->dst"
  uint32_t layer = model::global_layer; // an op's (none for transfers)
  uint64_t bytes = 0;                   // a transfer's framed bytes
};

step_text describe(const planner::plan& p, const planner::cluster_config& c,
                   const planner::critical_step& s) {
  auto name = [&](uint32_t node) { return transport::to_string(c.ref(node)); };
  if (s.is_op) {
    const auto& o = p.decode.ops[s.id];
    return {o.start_slot, o.duration_slots, planner::to_string(o.kind),
            name(o.chip), o.layer,          0};
  }
  const auto& t = p.decode.transfers[s.id];
  return {t.start_slot,        t.duration_slots,
          "transfer",          name(t.src) + "->" + name(t.dst),
          model::global_layer, t.bytes};
}

nlohmann::json critical_json(const planner::critical_path& c) {
  return {{"compute_us", c.compute_us},
          {"op_overhead_us", c.op_overhead_us},
          {"link_latency_us", c.link_latency_us},
          {"link_bytes_us", c.link_bytes_us},
          {"slot_rounding_us", c.rounding_us},
          {"waiting_us", c.waiting_us},
          {"ops", c.ops},
          {"hops", c.hops}};
}

nlohmann::json bound_json(const planner::token_bound& b) {
  return {{"total_us", b.total_us},
          {"chain_us", b.chain_us},
          {"shared_work_us", b.shared_work_us},
          {"compute_us", b.terms.compute_us},
          {"op_overhead_us", b.terms.op_overhead_us},
          {"link_latency_us", b.terms.link_latency_us},
          {"link_bytes_us", b.terms.link_bytes_us},
          {"slot_rounding_us", b.terms.rounding_us},
          {"min_tp_degree", b.min_tp_degree},
          {"tp_degree", b.tp_degree},
          {"split_layers", b.split_layers},
          {"reduce_hops", b.reduce_hops},
          {"handoff_hops", b.handoff_hops},
          {"largest_clique", b.clique},
          {"largest_diameter2_set", b.diameter2_set}};
}

nlohmann::json work_json(const planner::step_work& w) {
  return {{"kernel_us", w.kernel_us},
          {"op_overhead_us", w.op_overhead_us},
          {"transfer_cpu_us", w.transfer_cpu_us},
          {"ops", w.ops},
          {"cpu_transfers", w.cpu_transfers}};
}

nlohmann::json predicted_json(const planner::predictions& p,
                              uint32_t max_batch) {
  return {{"token_latency_us", p.token_latency_us},
          {"max_batch", max_batch},
          {"tokens_per_s_per_user", p.tokens_per_s_per_user},
          {"aggregate_tokens_per_s", p.aggregate_tokens_per_s},
          {"ttft_ms", p.ttft_ms},
          {"ttft_prompt_tokens", p.ttft_prompt_tokens},
          {"lower_bound_token_latency_us", p.lower_bound_token_latency_us},
          {"latency_over_lower_bound",
           p.lower_bound_token_latency_us > 0
               ? p.token_latency_us / p.lower_bound_token_latency_us
               : 0.0},
          {"link_utilisation", p.link_utilisation},
          {"sram_utilisation", p.sram_utilisation}};
}

// The latency/throughput curve: plans at batch 1, 2, 4, ... until one does
// not fit at the context, and the largest batch that fits (bisected
// between the last power of two that fits and the first that does not).
int run_sweep(const planner::cluster_config& config,
              const model::model_spec& spec, uint32_t context,
              const std::string& format) {
  auto sweep = planner::sweep_batch(config, spec, {1, context, {}}, 1, true);
  if (!sweep)
    return fail_with(sweep.error());
  if (sweep->max_batch == 0)
    return fail_with(caf::make_error(
        planner::errc::infeasible,
        spec.name + " does not fit " + config.name + " even at batch 1 "
        "(context " + std::to_string(context) + ")"));
  uint32_t fits = sweep->max_batch;
  const auto& points = sweep->points;
  if (format == "json") {
    nlohmann::json rows = nlohmann::json::array();
    for (const auto& [b, r] : points) {
      const auto& pr = r.p.predicted;
      rows.push_back({{"batch", b},
                      {"token_latency_us", pr.token_latency_us},
                      {"tokens_per_s_per_user", pr.tokens_per_s_per_user},
                      {"aggregate_tokens_per_s", pr.aggregate_tokens_per_s},
                      {"micro_batches", r.p.decode.micro_batches},
                      {"chips_used", r.p.chips_used.size()},
                      {"verified", r.verdict.ok()}});
    }
    nlohmann::json j{{"cluster", config.name},
                     {"model", spec.name},
                     {"context", context},
                     {"max_batch", fits},
                     {"sweep", rows}};
    std::printf("%s\n", j.dump().c_str());
    return exit_ok;
  }
  std::printf("%s on %s, context %u: largest batch that fits %u%s\n",
              spec.name.c_str(), config.name.c_str(), context, fits,
              sweep->at_limit ? " (plan --batch's limit)" : "");
  std::printf("%6s %14s %14s %16s %6s %6s\n", "batch", "latency us",
              "tok/s/user", "tok/s aggregate", "mbs", "chips");
  for (const auto& [b, r] : points) {
    const auto& pr = r.p.predicted;
    std::printf("%6u %14.1f %14.1f %16.1f %6u %6zu%s\n", b,
                pr.token_latency_us, pr.tokens_per_s_per_user,
                pr.aggregate_tokens_per_s, r.p.decode.micro_batches,
                r.p.chips_used.size(), r.verdict.ok() ? "" : " UNVERIFIED");
  }
  return exit_ok;
}

int run_plan(const plan_cli_options& o) {
  auto t0 = std::chrono::steady_clock::now();
  auto config = planner::load_cluster_config(o.config);
  if (!config)
    return fail_with(config.error());
  // The model: a preset, or an imported store's own (--weights).
  if (o.model.empty() == o.weights.empty())
    return fail(exit_bad_input,
                "plan: name the model with --model PRESET or --weights DIR "
                "(an imported model's store), one of them");
  auto spec = o.weights.empty() ? model::find_preset(o.model)
                                : storage::imported_spec(o.weights);
  if (!spec)
    return fail_with(spec.error());
  if (!o.dtype.empty()) {
    auto t = model::parse_dtype(o.dtype);
    if (!t)
      return fail_with(t.error());
    spec->weight_dtype = *t;
  }
  if (o.sweep_batch) {
    if (!o.fail_chips.empty() || !o.db.empty() || !o.trace.empty() ||
        o.critical_steps)
      return fail(exit_bad_input,
                  "--sweep-batch plans afresh at each batch: it takes no "
                  "--fail-chip, --db, --trace or --critical-path");
    return run_sweep(*config, *spec,
                     o.context == 0 ? spec->max_context : o.context, o.format);
  }
  std::vector<uint32_t> failed;
  for (const auto& id : o.fail_chips) {
    auto ref = planner::parse_chip_ref(id);
    if (!ref)
      return fail_with(ref.error());
    auto flat = config->flat_chip(*ref);
    if (!flat)
      return fail_with(flat.error());
    failed.push_back(*flat);
  }
  // The base plan (no failures) comes from the store's plan cache when it
  // has one for exactly these inputs; a cached plan is verified again.
  std::unique_ptr<storage::store> db;
  std::optional<planner::plan_cache> cache;
  std::string cache_state = "off";
  if (!o.db.empty()) {
    auto opened = storage::store::open(o.db, {.create_if_missing = true});
    if (!opened)
      return fail_with(opened.error());
    db = std::move(*opened);
    cache.emplace(*db);
  }
  uint32_t context = o.context == 0 ? spec->max_context : o.context;
  planner::plan_result result;
  std::optional<planner::plan> cached;
  if (cache) {
    auto hit = cache->get(
        *config, planner::input_hash(*config, *spec, o.batch, context, {}));
    if (!hit)
      return fail_with(hit.error());
    cached = std::move(*hit);
  }
  if (cached) {
    cache_state = "hit";
    result.verdict = planner::verify_plan(*cached, *config);
    result.p = std::move(*cached);
  } else {
    auto base = planner::make_plan(*config, *spec, {o.batch, o.context, {}});
    if (!base)
      return fail_with(base.error());
    result = std::move(*base);
    if (cache) {
      cache_state = "miss";
      if (auto err = cache->put(*config, result.p))
        return fail_with(err);
    }
  }
  // Re-plan incrementally around each failed chip, in the order given.
  std::vector<planner::replan_result> moves;
  for (auto f : failed) {
    auto r = planner::replan(*config, result.p, f);
    if (!r)
      return fail_with(r.error());
    result = r->result;
    moves.push_back(std::move(*r));
  }
  double compile_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
          .count();
  const auto& p = result.p;
  // The largest batch this (model, cluster, context) fits by the
  // placement's estimate (exact plans: --sweep-batch), failed chips left
  // out as a fresh plan would.
  uint32_t max_batch = std::max(
      p.batch, planner::estimated_max_batch(*config, *spec,
                                            {p.batch, context, p.failed_chips}));
  auto path = planner::critical_path_of(p, *config);
  auto bound = planner::token_latency_bound(*config, p);
  auto work = planner::step_work_of(p, *config);
  auto hash = planner::plan_hash(*config, p);
  if (!o.trace.empty()) {
    std::ofstream out{o.trace};
    if (!out)
      return fail(exit_bad_input, "--trace: cannot write " + o.trace);
    out << planner::chrome_trace(*config, p);
  }
  // Spares still free: taken ones replaced a failed chip; failed ones left.
  auto spares_free = p.spares.size();
  // Hops of the longest route: follow each final hop back to its first.
  uint32_t max_hops = 0;
  for (const auto& t : p.decode.transfers) {
    uint32_t hops = 1;
    for (auto prev = t.after_transfer; prev != planner::no_id;
         prev = p.decode.transfers[prev].after_transfer)
      ++hops;
    max_hops = std::max(max_hops, hops);
  }
  auto program_json = [](const planner::step_program& prog) {
    return nlohmann::json{{"ops", prog.ops.size()},
                          {"transfers", prog.transfers.size()},
                          {"slots_per_step", prog.slots_per_step},
                          {"period_slots", prog.period_slots},
                          {"micro_batches", prog.micro_batches},
                          {"tokens", prog.tokens},
                          {"transfer_bytes", prog.transfer_bytes()}};
  };
  auto moves_json = nlohmann::json::array();
  for (const auto& m : moves)
    moves_json.push_back(
        {{"failed", transport::to_string(config->ref(m.failed))},
         {"replacement", transport::to_string(config->ref(m.replacement))},
         {"moved_shards", m.moved_shards},
         {"moved_bytes", m.moved_bytes}});
  if (o.format == "json") {
    nlohmann::json j{{"verified", result.verdict.ok()},
                     {"violations", result.verdict.violations},
                     {"model", p.model},
                     {"dtype", model::to_string(p.spec.weight_dtype)},
                     {"cluster", p.cluster},
                     {"batch", p.batch},
                     {"context", p.context},
                     {"chips", config->chip_count()},
                     {"sampler", transport::to_string(config->ref(p.sampler))},
                     {"chips_used", p.chips_used.size()},
                     {"spares", spares_free},
                     {"tp_degree", p.tp_degree},
                     {"layers_per_group", p.layers_per_group},
                     {"groups", p.group_chips.size() / p.tp_degree},
                     {"micro_batches", p.decode.micro_batches},
                     {"ops", p.decode.ops.size()},
                     {"transfers", p.decode.transfers.size()},
                     {"slot_ns", p.slot_ns},
                     {"slots_per_step", p.decode.slots_per_step},
                     {"decode", program_json(p.decode)},
                     {"prefill", program_json(p.prefill)},
                     {"max_route_hops", max_hops},
                     {"compile_s", compile_s},
                     {"plan_hash", hash},
                     {"cache", cache_state},
                     {"predicted", predicted_json(p.predicted, max_batch)},
                     {"critical_path", critical_json(path)},
                     {"lower_bound", bound_json(bound)},
                     {"step_work", work_json(work)},
                     {"replanned", moves_json}};
    if (o.critical_steps) {
      auto steps = nlohmann::json::array();
      for (const auto& st : path.steps) {
        auto d = describe(p, *config, st);
        nlohmann::json s{{"start_slot", d.start_slot},
                         {"slots", d.slots},
                         {"what", d.what},
                         {"where", d.where}};
        if (d.layer != model::global_layer)
          s["layer"] = d.layer;
        if (!st.is_op)
          s["bytes"] = d.bytes;
        steps.push_back(std::move(s));
      }
      j["critical_path"]["steps"] = std::move(steps);
    }
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    const auto& pr = p.predicted;
    std::printf("plan       %s on %s (%s), batch %u, context %u\n",
                p.model.c_str(), p.cluster.c_str(),
                model::to_string(p.spec.weight_dtype), p.batch, p.context);
    std::printf("chips      %zu used of %u, %zu spares free\n",
                p.chips_used.size(), config->chip_count(), spares_free);
    std::printf("layout     %zu groups x %u chips (tensor parallel), %u "
                "layer(s) per group, %zu embedding + %zu LM-head chips\n",
                p.group_chips.size() / p.tp_degree, p.tp_degree,
                p.layers_per_group, p.embed_chips.size(), p.head_chips.size());
    std::printf("decode     %zu ops, %zu transfers (routes up to %u hops), %u "
                "slots of %.1f us, %u micro-batch(es), token loop through "
                "%s\n",
                p.decode.ops.size(), p.decode.transfers.size(), max_hops,
                p.decode.slots_per_step, p.slot_ns / 1000.0,
                p.decode.micro_batches,
                transport::to_string(config->ref(p.sampler)).c_str());
    std::printf("prefill    %zu ops, %zu transfers, chunks of %u tokens, a "
                "step of %u slots, a new chunk every %u slots\n",
                p.prefill.ops.size(), p.prefill.transfers.size(),
                p.prefill.tokens, p.prefill.slots_per_step,
                p.prefill.period_slots);
    std::printf("predicted  %.1f us/token (lower bound %.1f us, ratio %.2f), "
                "%.1f tokens/s per user, %.1f tokens/s aggregate, TTFT %.2f ms "
                "(%u-token prompt, by the prefill program)\n",
                pr.token_latency_us, pr.lower_bound_token_latency_us,
                pr.lower_bound_token_latency_us > 0
                    ? pr.token_latency_us / pr.lower_bound_token_latency_us
                    : 0.0,
                pr.tokens_per_s_per_user, pr.aggregate_tokens_per_s, pr.ttft_ms,
                pr.ttft_prompt_tokens);
    std::printf("critical   %.1f us = compute %.1f + op overhead %.1f + link "
                "latency %.1f + link bytes %.1f + slot rounding %.1f (%u ops, "
                "%u hops)\n",
                path.total_us(), path.compute_us, path.op_overhead_us,
                path.link_latency_us, path.link_bytes_us, path.rounding_us,
                path.ops, path.hops);
    std::printf("batch      up to %u sequences fit at context %u by the "
                "placement's estimate (--sweep-batch: exact plans)\n",
                max_batch, p.context);
    std::printf("bound      %.1f us = compute %.1f + op overhead %.1f + link "
                "latency %.1f + link bytes %.1f + slot rounding %.1f (layers "
                "on >= %u chips by SRAM; %u of %u split %u ways, >= %u hops "
                "attention->MLP, >= %u to the next layer; largest clique %u, "
                "diameter-2 set %llu)"
                "%s\n",
                bound.chain_us, bound.terms.compute_us,
                bound.terms.op_overhead_us, bound.terms.link_latency_us,
                bound.terms.link_bytes_us, bound.terms.rounding_us,
                bound.min_tp_degree, bound.split_layers, p.spec.n_layers,
                bound.tp_degree, bound.reduce_hops, bound.handoff_hops,
                bound.clique,
                static_cast<unsigned long long>(bound.diameter2_set),
                bound.shared_work_us > bound.chain_us
                    ? ("; all work on the machine's cores takes " +
                       std::to_string(int(bound.shared_work_us)) + " us")
                          .c_str()
                    : "");
    std::printf("work       %.1f us of kernels + %.1f us of op overhead + "
                "%.1f us of transfer CPU per decode step, over %u chip ops%s\n",
                work.kernel_us, work.op_overhead_us, work.transfer_cpu_us,
                work.ops,
                config->machine_cores > 0
                    ? (" sharing " + std::to_string(config->machine_cores) +
                       " cores")
                          .c_str()
                    : "");
    std::printf("usage      links %.1f%% busy, SRAM %.1f%% full\n",
                100 * pr.link_utilisation, 100 * pr.sram_utilisation);
    for (const auto& m : moves)
      std::printf("replanned  %s failed: %zu shards (%.1f MB) moved to %s\n",
                  transport::to_string(config->ref(m.failed)).c_str(),
                  m.moved_shards, m.moved_bytes / 1e6,
                  transport::to_string(config->ref(m.replacement)).c_str());
    std::printf("verifier   %s\n",
                result.verdict.ok() ? "plan verified" : "REJECTED");
    for (const auto& v : result.verdict.violations)
      std::printf("  %s\n", v.c_str());
    std::printf("plan_hash  %s (%.2f s; plan cache: %s)\n", hash.c_str(),
                compile_s, cache_state.c_str());
    if (o.critical_steps) {
      // The token's chain, first to last: what set each start.
      std::printf("path       %8s %6s  %-11s %-5s %s\n", "slot", "slots",
                  "what", "layer", "where");
      for (const auto& st : path.steps) {
        auto d = describe(p, *config, st);
        std::string layer =
            d.layer == model::global_layer ? "" : std::to_string(d.layer);
        std::printf("           %8u %6u  %-11s %-5s %s", d.start_slot, d.slots,
                    d.what.c_str(), layer.c_str(), d.where.c_str());
        if (!st.is_op)
          std::printf(" (%llu bytes)",
                      static_cast<unsigned long long>(d.bytes));
        std::printf("\n");
      }
    }
  }
  return result.verdict.ok() ? exit_ok : exit_problem;
}

} // namespace

void add_plan_command(CLI::App& app, command_context& ctx) {
  auto o = std::make_shared<plan_cli_options>();
  auto* cmd = app.add_subcommand("plan", "compile a plan for a cluster");
  cmd->add_option("config", o->config, "cluster config (YAML)")->required();
  cmd->add_option("--model", o->model, "model preset");
  cmd->add_option("--weights", o->weights,
                  "an imported model's store (weights import --gguf): plan "
                  "its model");
  cmd->add_option("--batch", o->batch, "sequences per step")
      ->check(CLI::Range(1u, 4096u));
  cmd->add_option("--context", o->context,
                  "KV-cache tokens per sequence (default: max_context)");
  cmd->add_option("--dtype", o->dtype, "override the weight dtype");
  cmd->add_option("--fail-chip", o->fail_chips,
                  "re-plan around this failed chip (e.g. h3.c5); repeatable");
  cmd->add_option("--db", o->db,
                  "plan cache: the host's RocksDB store (created if missing)");
  cmd->add_option("--trace", o->trace,
                  "write one decode step as Chrome trace-event JSON");
  add_output_option(*cmd, o->format);
  cmd->add_flag("--critical-path", o->critical_steps,
                "also list the token's critical path op by op and hop by hop "
                "(json: critical_path.steps)");
  cmd->add_flag("--sweep-batch", o->sweep_batch,
                "plan at batch 1, 2, 4, ... and print the latency/throughput "
                "curve up to the largest batch that fits at the context");
  cmd->callback([o, &ctx] { ctx.exit_code = run_plan(*o); });
}

} // namespace lockstep::tools
