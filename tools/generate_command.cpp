// lockstep generate --reference | --simulate CONFIG: tokens from the
// single-process reference engine, or from a plan for CONFIG run with every
// chip in this process (actors/simulation.hpp); weights read
// (checksum-verified) from a RocksDB weight store. Both print the same
// tokens and logits hashes: that is the point.

#include "tools/cli.hpp"

#include "actors/simulation.hpp"
#ifdef LOCKSTEP_HAVE_CLUSTER_COMMANDS
#include "actors/client.hpp"
#include "tools/cluster_context.hpp"
#endif
#include "model/generation.hpp"
#include "planner/planner.hpp"
#include "storage/store.hpp"
#include "storage/weight_store.hpp"

#include <nlohmann/json.hpp>

#include <charconv>
#include <chrono>
#include <optional>
#include <cstdio>
#include <thread>

namespace lockstep::tools {

namespace {

struct generate_options {
  bool reference = false;
  std::string simulate; // cluster config
  std::string db;
  std::string model;
  std::vector<std::string> prompts;
  uint32_t batch = 0;   // simulate: plan batch (0: one slot per prompt)
  uint32_t context = 0; // simulate: plan context (0: the model's)
  std::vector<std::string> fail_chips;
  std::string cluster; // the head's address (default: the context file)
  uint32_t max_tokens = 16;
  uint64_t seed = 0;
  float temperature = 0.0f;
  uint32_t top_k = 0;
  float top_p = 1.0f;
  unsigned threads = 0;
  std::string format = "text";
};

// "1,2,3" -> {1, 2, 3}; every element a non-negative integer.
caf::expected<std::vector<int32_t>> parse_tokens(const std::string& text) {
  std::vector<int32_t> out;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t end = text.find(',', pos);
    if (end == std::string::npos)
      end = text.size();
    int32_t v = -1;
    auto first = text.data() + pos;
    auto last = text.data() + end;
    auto [ptr, ec] = std::from_chars(first, last, v);
    if (first == last || ec != std::errc{} || ptr != last || v < 0)
      return caf::make_error(model::errc::invalid_argument,
                             "--prompt-tokens: '" + std::string{first, last} +
                                 "' is not a token id (expected e.g. 1,2,3)");
    out.push_back(v);
    pos = end + 1;
  }
  return out;
}

// What a run produced, whichever engine ran it.
struct generate_outcome {
  std::vector<model::generation_result> results;
  double seconds = 0;
  unsigned threads = 0;
  std::optional<actors::simulation_report> simulated;
};

caf::expected<generate_outcome>
run_reference(const model::model_spec& spec, const storage::weight_store& ws,
              const std::vector<model::generation_request>& reqs,
              unsigned threads) {
  auto weights = model::model_weights::load(
      spec, [&](model::tensor_id id) { return ws.read(id); });
  if (!weights)
    return weights.error();
  model::reference_engine engine{*weights, threads};
  auto t0 = std::chrono::steady_clock::now();
  auto out = model::generate(engine, reqs);
  if (!out)
    return out.error();
  generate_outcome r;
  r.results = std::move(*out);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                            t0)
                  .count();
  r.threads = threads;
  return r;
}

caf::expected<generate_outcome>
run_simulated(const generate_options& o, const model::model_spec& spec,
              const storage::weight_store& ws,
              const std::vector<model::generation_request>& reqs,
              unsigned threads) {
  auto config = planner::load_cluster_config(o.simulate);
  if (!config)
    return config.error();
  // Refuse before planning: a simulation holds every chip's SRAM.
  if (auto err = actors::check_simulation_memory(*config))
    return err;
  uint32_t batch = o.batch != 0 ? o.batch : static_cast<uint32_t>(reqs.size());
  if (batch < reqs.size())
    return caf::make_error(actors::errc::bad_request,
                           "--batch " + std::to_string(batch) + " < " +
                               std::to_string(reqs.size()) + " prompts");
  auto planned = planner::make_plan(*config, spec, {batch, o.context, {}});
  if (!planned)
    return planned.error();
  for (const auto& id : o.fail_chips) {
    auto ref = planner::parse_chip_ref(id);
    if (!ref)
      return ref.error();
    auto flat = config->flat(*ref);
    if (!flat)
      return flat.error();
    auto moved = planner::replan(*config, planned->p, *flat);
    if (!moved)
      return moved.error();
    *planned = std::move(moved->result);
  }
  if (!planned->verdict.ok())
    return caf::make_error(planner::errc::infeasible,
                           "the plan for " + config->name +
                               " failed verification: " +
                               planned->verdict.violations.front());
  auto sim = actors::simulation::load(planned->p, *config, ws, {threads});
  if (!sim)
    return sim.error();
  auto report = (*sim)->generate(reqs);
  if (!report)
    return report.error();
  generate_outcome r;
  r.results = report->requests;
  r.seconds = report->seconds;
  r.threads = threads;
  r.simulated = std::move(*report);
  return r;
}

#ifdef LOCKSTEP_HAVE_CLUSTER_COMMANDS
// The running cluster serves the requests, all at once (a connection each):
// the reference's keys plus ttft_ms.
int run_on_cluster(const generate_options& o,
                   const std::vector<model::generation_request>& reqs) {
  auto address = resolve_cluster(o.cluster);
  if (!address)
    return fail_with(address.error());
  std::vector<caf::expected<actors::cluster_generation>> out(
      reqs.size(), caf::make_error(actors::errc::bad_request, "not run"));
  std::vector<std::thread> threads;
  for (size_t i = 0; i < reqs.size(); ++i)
    threads.emplace_back([&, i] {
      auto client = actors::cluster_client::connect(*address);
      if (!client) {
        out[i] = client.error();
        return;
      }
      out[i] = client->generate(reqs[i].prompt, reqs[i].max_tokens,
                                reqs[i].sampling);
    });
  for (auto& t : threads)
    t.join();
  for (const auto& r : out)
    if (!r)
      return fail_with(r.error());
  auto one = [](const actors::cluster_generation& g) {
    return nlohmann::json{{"tokens", g.tokens},
                          {"logits_sha256", g.logits_sha256},
                          {"tokens_per_s", g.tokens_per_s},
                          {"ttft_ms", g.ttft_ms}};
  };
  if (o.format == "json") {
    nlohmann::json j;
    if (out.size() == 1) {
      j = one(*out[0]);
    } else {
      j["requests"] = nlohmann::json::array();
      for (const auto& r : out)
        j["requests"].push_back(one(*r));
    }
    std::printf("%s\n", j.dump().c_str());
    return exit_ok;
  }
  for (size_t i = 0; i < out.size(); ++i) {
    if (out.size() > 1)
      std::printf("request        %zu\n", i);
    std::printf("tokens        ");
    for (auto t : out[i]->tokens)
      std::printf(" %d", t);
    std::printf("\nlogits_sha256  %s\nTTFT           %.1f ms\ntokens/s       "
                "%.1f\n",
                out[i]->logits_sha256.c_str(), out[i]->ttft_ms,
                out[i]->tokens_per_s);
  }
  return exit_ok;
}
#endif

int run_generate(const generate_options& o) {
  if (o.reference && !o.simulate.empty())
    return fail(exit_bad_input,
                "generate: --reference and --simulate exclude each other");
  bool local = o.reference || !o.simulate.empty();
  if (!local) {
#ifdef LOCKSTEP_HAVE_CLUSTER_COMMANDS
    model::sampling_params sampling{o.seed, o.temperature, o.top_k, o.top_p};
    if (auto err = model::validate(sampling))
      return fail(exit_bad_input, render(err));
    std::vector<model::generation_request> reqs;
    for (size_t i = 0; i < o.prompts.size(); ++i) {
      auto prompt = parse_tokens(o.prompts[i]);
      if (!prompt)
        return fail(exit_bad_input, render(prompt.error()));
      reqs.push_back({0, std::move(*prompt), o.max_tokens, sampling, 0});
    }
    return run_on_cluster(o, reqs);
#else
    return fail(exit_bad_input,
                "generate: pass --reference or --simulate CONFIG (this build "
                "has no cluster client)");
#endif
  }
  if (o.db.empty())
    return fail(exit_bad_input,
                "generate --reference/--simulate: --db is required");
  // --model names a preset the store must hold; without it, the store's
  // own model (an imported one has no preset).
  std::optional<model::model_spec> requested;
  if (!o.model.empty()) {
    auto preset = model::find_preset(o.model);
    if (!preset)
      return fail(exit_bad_input, render(preset.error()));
    requested = std::move(*preset);
  }
  model::sampling_params sampling{o.seed, o.temperature, o.top_k, o.top_p};
  if (auto err = model::validate(sampling))
    return fail(exit_bad_input, render(err));
  // Request id 0 for every request, as on the cluster: a request's draws
  // depend on its own seed and settings only, whatever else runs.
  std::vector<model::generation_request> reqs;
  for (const auto& text : o.prompts) {
    auto prompt = parse_tokens(text);
    if (!prompt)
      return fail(exit_bad_input, render(prompt.error()));
    reqs.push_back({0, std::move(*prompt), o.max_tokens, sampling, 0});
  }

  auto db = storage::store::open(
      o.db, {.create_if_missing = false, .read_only = true});
  if (!db)
    return fail_with(db.error());
  auto ws = storage::weight_store::open(**db);
  if (!ws)
    return fail_with(ws.error());
  if (requested)
    if (auto err = ws->check_model(*requested))
      return fail(exit_bad_input, render(err));
  const auto& spec = ws->spec();
  for (const auto& r : reqs)
    for (auto tok : r.prompt)
      if (static_cast<uint32_t>(tok) >= spec.vocab)
        return fail(exit_bad_input,
                    "--prompt-tokens: token " + std::to_string(tok) +
                        " is outside the vocabulary [0, " +
                        std::to_string(spec.vocab) + ") of " + spec.name);

  unsigned threads = o.threads != 0
                         ? o.threads
                         : std::max(1u, std::thread::hardware_concurrency());
  auto out = o.reference ? run_reference(spec, *ws, reqs, threads)
                         : run_simulated(o, spec, *ws, reqs, threads);
  if (!out)
    return fail_with(out.error());
  size_t generated = 0;
  for (const auto& r : out->results)
    generated += r.tokens.size();
  double tps = out->seconds > 0 ? generated / out->seconds : 0.0;
  if (o.format == "json") {
    nlohmann::json j;
    if (out->results.size() == 1) {
      j = {{"tokens", out->results[0].tokens},
           {"logits_sha256", out->results[0].logits_sha256}};
    } else {
      auto list = nlohmann::json::array();
      for (const auto& r : out->results)
        list.push_back(
            {{"tokens", r.tokens}, {"logits_sha256", r.logits_sha256}});
      j["requests"] = std::move(list);
    }
    j["tokens_per_s"] = tps;
    if (out->simulated) {
      j["ops_executed"] = out->simulated->ops_executed;
      j["bytes_transferred"] = out->simulated->bytes_transferred;
      j["prefill_steps"] = out->simulated->prefill_steps;
      j["decode_steps"] = out->simulated->decode_steps;
    }
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("model          %s (%s, %u layers)\n", spec.name.c_str(),
                model::to_string(spec.weight_dtype), spec.n_layers);
    for (size_t i = 0; i < out->results.size(); ++i) {
      const auto& r = out->results[i];
      if (out->results.size() > 1)
        std::printf("request        %zu\n", i);
      std::printf("tokens        ");
      for (auto t : r.tokens)
        std::printf(" %d", t);
      std::printf("\nlogits_sha256  %s\n", r.logits_sha256.c_str());
    }
    std::printf("tokens/s       %.1f (%u thread%s)\n", tps, out->threads,
                out->threads == 1 ? "" : "s");
    if (out->simulated)
      std::printf("simulated      %llu ops, %llu bytes over links, %llu "
                  "prefill + %llu decode steps\n",
                  static_cast<unsigned long long>(out->simulated->ops_executed),
                  static_cast<unsigned long long>(
                      out->simulated->bytes_transferred),
                  static_cast<unsigned long long>(
                      out->simulated->prefill_steps),
                  static_cast<unsigned long long>(
                      out->simulated->decode_steps));
  }
  return exit_ok;
}

} // namespace

void add_generate_command(CLI::App& app, command_context& ctx) {
  auto opts = std::make_shared<generate_options>();
  auto* cmd = app.add_subcommand("generate", "generate tokens");
  cmd->add_flag("--reference", opts->reference,
                "use the single-process reference engine");
  cmd->add_option("--simulate", opts->simulate,
                  "run a plan for this cluster config with every chip in "
                  "this process");
  cmd->add_option("--db", opts->db,
                  "weight store directory (--reference, --simulate)");
  cmd->add_option("--model", opts->model,
                  "model preset (--reference, --simulate; default: the "
                  "store's model)");
#ifdef LOCKSTEP_HAVE_CLUSTER_COMMANDS
  cmd->add_option("--cluster", opts->cluster,
                  "without --reference/--simulate: the head's address "
                  "(default: the context file of `lockstep up`)");
#endif
  cmd->add_option("--prompt-tokens", opts->prompts,
                  "comma-separated token ids; repeat for several requests")
      ->required()
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  cmd->add_option("--batch", opts->batch,
                  "--simulate: sequences the plan serves (default: the "
                  "number of prompts)")
      ->check(CLI::Range(1u, 4096u));
  cmd->add_option("--context", opts->context,
                  "--simulate: KV-cache tokens per sequence (default: the "
                  "model's max_context)");
  cmd->add_option("--fail-chip", opts->fail_chips,
                  "--simulate: re-plan around this failed chip first (e.g. "
                  "h3.c5); repeatable");
  cmd->add_option("--max-tokens", opts->max_tokens, "tokens to generate")
      ->check(CLI::Range(1u, 1u << 20));
  cmd->add_option("--seed", opts->seed, "sampling seed");
  cmd->add_option("--temperature", opts->temperature, "0 = greedy (default)");
  cmd->add_option("--top-k", opts->top_k, "0 = no top-k cut");
  cmd->add_option("--top-p", opts->top_p, "1 = no nucleus cut");
  cmd->add_option("--threads", opts->threads,
                  "matmul threads (default: all cores; results do not "
                  "depend on it)");
  add_output_option(*cmd, opts->format);
  cmd->callback([opts, &ctx] { ctx.exit_code = run_generate(*opts); });
}

} // namespace lockstep::tools
