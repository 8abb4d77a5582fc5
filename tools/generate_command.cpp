// lockstep generate --reference: tokens from the single-process reference
// engine, with weights read (checksum-verified) from a RocksDB weight store.

#include "tools/cli.hpp"

#include "model/generation.hpp"
#include "storage/store.hpp"
#include "storage/weight_store.hpp"

#include <nlohmann/json.hpp>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <thread>

namespace lockstep::tools {

namespace {

struct generate_options {
  bool reference = false;
  std::string db;
  std::string model;
  std::string prompt;
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

int run_generate(const generate_options& o) {
  if (!o.reference)
    return fail(exit_bad_input,
                "generate: pass --reference (the single-process reference "
                "engine); cluster generation needs a running cluster, which "
                "this build does not start");
  auto prompt = parse_tokens(o.prompt);
  if (!prompt)
    return fail(exit_bad_input, render(prompt.error()));
  auto requested = model::find_preset(o.model);
  if (!requested)
    return fail(exit_bad_input, render(requested.error()));
  model::sampling_params sampling{o.seed, o.temperature, o.top_k, o.top_p};
  if (auto err = model::validate(sampling))
    return fail(exit_bad_input, render(err));

  auto db = storage::store::open(
      o.db, {.create_if_missing = false, .read_only = true});
  if (!db)
    return fail_with(db.error());
  auto ws = storage::weight_store::open(**db);
  if (!ws)
    return fail_with(ws.error());
  if (auto err = ws->check_model(*requested))
    return fail(exit_bad_input, render(err));
  const auto& spec = ws->spec();
  for (auto tok : *prompt)
    if (static_cast<uint32_t>(tok) >= spec.vocab)
      return fail(exit_bad_input,
                  "--prompt-tokens: token " + std::to_string(tok) +
                      " is outside the vocabulary [0, " +
                      std::to_string(spec.vocab) + ") of " + spec.name);

  auto weights = model::model_weights::load(
      spec, [&](model::tensor_id id) { return ws->read(id); });
  if (!weights)
    return fail_with(weights.error());

  unsigned threads = o.threads != 0
                         ? o.threads
                         : std::max(1u, std::thread::hardware_concurrency());
  model::reference_engine engine{*weights, threads};
  model::generation_request req{0, *prompt, o.max_tokens, sampling, 0};
  auto t0 = std::chrono::steady_clock::now();
  auto out = model::generate(engine, {&req, 1});
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
          .count();
  if (!out)
    return fail_with(out.error());
  const auto& r = (*out)[0];
  double tps = seconds > 0 ? r.tokens.size() / seconds : 0.0;
  if (o.format == "json") {
    nlohmann::json j{{"tokens", r.tokens},
                     {"logits_sha256", r.logits_sha256},
                     {"tokens_per_s", tps}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("model          %s (%s, %u layers)\n", spec.name.c_str(),
                model::to_string(spec.weight_dtype), spec.n_layers);
    std::printf("tokens        ");
    for (auto t : r.tokens)
      std::printf(" %d", t);
    std::printf("\nlogits_sha256  %s\ntokens/s       %.1f (%u thread%s)\n",
                r.logits_sha256.c_str(), tps, threads, threads == 1 ? "" : "s");
  }
  return exit_ok;
}

} // namespace

void add_generate_command(CLI::App& app, command_context& ctx) {
  auto opts = std::make_shared<generate_options>();
  auto* cmd = app.add_subcommand("generate", "generate tokens");
  cmd->add_flag("--reference", opts->reference,
                "use the single-process reference engine");
  cmd->add_option("--db", opts->db, "weight store directory")->required();
  cmd->add_option("--model", opts->model, "model preset")->required();
  cmd->add_option("--prompt-tokens", opts->prompt, "comma-separated token ids")
      ->required();
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
