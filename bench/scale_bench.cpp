// lockstep-bench scale: how a local cluster grows from 8 to 1500 chips, and
// what continuous batching buys, measured in one run through the
// local-cluster harness (tools/testing/local_cluster.hpp).
//
// Per size (local-8/tiny-8, local-64/tiny-64, local-512/tiny-512,
// local-1500/tiny-1500): the planner's time for the plan (in this process,
// as the head makes it), `lockstep up` to ready cold (fresh stores: weights
// generated, plan compiled, nothing cached), every host's RSS (now and
// peak) beside the SRAM arenas its chips run, and the decode tokens/s of
// one request. local-1500's decode rate is set beside the reference
// engine's on the same request, measured in this run.
//
// Batching: local-64 with --batch 16 --context 128, aggregate tokens/s with
// 1, 4 and 16 requests at once, and TTFT p50/p99 over the requests of those
// runs.

#include "bench/benches.hpp"
#include "bench/reference_timing.hpp"
#include "bench/stats.hpp"

#include "model/generation.hpp"
#include "model/model_weights.hpp"
#include "planner/planner.hpp"
#include "tools/testing/local_cluster.hpp"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>
#include <thread>

namespace lockstep::bench {

namespace {

using nlohmann::json;
using testing::local_cluster;

const std::vector<int32_t> prompt{1, 2, 3, 4, 5, 6, 7, 8};

local_cluster start(const std::string& config, const std::string& model,
                    uint32_t batch = 1, uint32_t context = 0,
                    const std::string& prefill = "idle") {
  testing::cluster_options o;
  o.config = config;
  o.model = model;
  o.batch = batch;
  o.context = context;
  o.extra_args = {"--prefill", prefill};
  auto c = local_cluster::start(std::move(o));
  if (!c)
    throw std::runtime_error(render(c.error()));
  return std::move(*c);
}

// Decode tokens/s of one request as its client saw it: (n - 1) tokens over
// first to last arrival; TTFT from sending it.
struct one_request {
  double tokens_per_s = 0;
  double ttft_ms = 0;
  size_t tokens = 0;
  std::string logits_sha256;
};

one_request timed(const caf::expected<actors::cluster_generation>& g,
                  uint32_t tokens) {
  if (!g)
    throw std::runtime_error(render(g.error()));
  const auto& a = g->token_arrival_s;
  if (a.size() != tokens)
    throw std::runtime_error("the cluster returned " +
                             std::to_string(a.size()) + " tokens, not " +
                             std::to_string(tokens));
  return {tokens > 1 ? (tokens - 1) / (a.back() - a.front()) : 0,
          a.front() * 1e3, a.size(), g->logits_sha256};
}

// The reference engine's decode tokens/s on the same request (default
// threads, as `generate --reference` runs), and its logits hash.
double reference_tokens_per_s(const std::string& model, uint32_t tokens,
                              std::string& sha) {
  auto w = model::model_weights::generate(
      model::weight_generator{*model::find_preset(model), 42});
  model::reference_engine engine{
      w, std::max(1u, std::thread::hardware_concurrency())};
  model::generation_request r{0, prompt, tokens, {}, 0};
  auto out = model::generate(engine, {&r, 1});
  if (!out)
    throw std::runtime_error(render(out.error()));
  sha = (*out)[0].logits_sha256;
  std::vector<double> runs;
  for (int i = 0; i < 3; ++i)
    runs.push_back(time_reference(engine, prompt, tokens).tokens_per_s);
  return median(runs);
}

struct size_case {
  const char* key; // "local512"
  const char* config;
  const char* model;
  uint32_t chips;
  uint32_t tokens;
};

json run_size(const size_case& sc, bool with_reference) {
  json out{{"config", sc.config}, {"model", sc.model}, {"chips", sc.chips}};
  auto config = planner::load_cluster_config(testing::config_path(sc.config));
  if (!config)
    throw std::runtime_error(render(config.error()));
  double t0 = now_s();
  auto made =
      planner::make_plan(*config, *model::find_preset(sc.model), {1, 0, {}});
  out["plan_s"] = now_s() - t0;
  if (!made)
    throw std::runtime_error(render(made.error()));
  out["predicted_token_latency_us"] = made->p.predicted.token_latency_us;

  auto c = start(sc.config, sc.model);
  out["up_s"] = c.up_s();
  out["processes"] = c.pids().size();
  timed(c.generate(prompt, 2), 2); // warm
  auto one = timed(c.generate(prompt, sc.tokens), sc.tokens);
  out["tokens_per_s"] = one.tokens_per_s;
  out["ttft_ms"] = one.ttft_ms;

  // Memory: every host's RSS beside the SRAM arenas of its chips.
  auto st = c.status();
  if (!st)
    throw std::runtime_error(render(st.error()));
  std::map<int, uint64_t> arena_bytes; // by rank
  for (const auto& chip : (*st)["chips"]) {
    auto name = chip["chip"].get<std::string>(); // "h3.c5"
    arena_bytes[std::stoi(name.substr(1))] += chip["sram_bytes"].get<uint64_t>();
  }
  double total_mb = 0, peak_mb = 0, worst_ratio = 0;
  json hosts = json::array();
  auto procs = c.processes();
  for (size_t rank = 0; rank < c.pids().size(); ++rank) {
    auto it = std::find_if(procs.begin(), procs.end(), [&](const auto& p) {
      return p.pid == c.pids()[rank];
    });
    if (it == procs.end())
      throw std::runtime_error("host " + std::to_string(rank) + " is gone");
    double rss_mb = it->rss_bytes / 1e6, hwm_mb = it->peak_rss_bytes / 1e6;
    double arena_mb = arena_bytes[static_cast<int>(rank)] / 1e6;
    total_mb += rss_mb;
    peak_mb = std::max(peak_mb, hwm_mb);
    double ratio = arena_mb > 0 ? rss_mb / arena_mb : 0;
    // The head also plans and samples: its excess is reported, not ranked.
    if (rank != 0)
      worst_ratio = std::max(worst_ratio, ratio);
    hosts.push_back({{"rank", rank},
                     {"rss_mb", rss_mb},
                     {"peak_rss_mb", hwm_mb},
                     {"arena_mb", arena_mb},
                     {"rss_over_arena", ratio}});
  }
  out["total_rss_mb"] = total_mb;
  out["peak_rss_mb_per_process"] = peak_mb;
  out["worst_rss_over_arena_non_head"] = worst_ratio;
  out["hosts"] = hosts;
  if (auto err = c.stop())
    throw std::runtime_error(render(err));
  if (with_reference) {
    std::string sha;
    double ref = reference_tokens_per_s(sc.model, sc.tokens, sha);
    out["reference_tokens_per_s"] = ref;
    out["ratio_vs_reference"] = one.tokens_per_s / ref;
    out["bit_identical"] = sha == one.logits_sha256;
  }
  return out;
}

// `n` requests at once, each on its own thread and connection: all tokens
// over first send to last token; each request's TTFT into `ttft_ms`.
double aggregate(local_cluster& c, uint32_t n, uint32_t tokens,
                 std::vector<double>& ttft_ms, std::set<std::string>& shas) {
  std::vector<caf::expected<actors::cluster_generation>> got(
      n, caf::expected<actors::cluster_generation>{caf::error{}});
  double t0 = now_s();
  std::vector<std::thread> workers;
  for (uint32_t i = 0; i < n; ++i)
    workers.emplace_back([&, i] { got[i] = c.generate(prompt, tokens); });
  for (auto& w : workers)
    w.join();
  double wall = now_s() - t0;
  for (const auto& g : got) {
    auto one = timed(g, tokens);
    ttft_ms.push_back(one.ttft_ms);
    shas.insert(one.logits_sha256);
  }
  return n * tokens / wall;
}

json run_batching16() {
  constexpr uint32_t tokens = 16;
  json out{{"config", "local-64"},
           {"model", "tiny-64"},
           {"batch", 16},
           {"context", 128},
           {"max_tokens", tokens}};
  auto c = start("local-64", "tiny-64", 16, 128);
  out["up_s"] = c.up_s();
  std::vector<double> ttft;
  std::set<std::string> shas;
  aggregate(c, 1, tokens, ttft, shas); // warm
  ttft.clear();
  std::map<uint32_t, std::vector<double>> runs;
  for (int rep = 0; rep < 3; ++rep)
    for (uint32_t n : {1u, 4u, 16u})
      runs[n].push_back(aggregate(c, n, tokens, ttft, shas));
  for (uint32_t n : {1u, 4u, 16u})
    out["tokens_per_s_" + std::to_string(n)] = median(runs[n]);
  out["speedup_16"] = median(runs[16]) / median(runs[1]);
  std::sort(ttft.begin(), ttft.end());
  out["ttft_ms_p50"] = ttft[ttft.size() / 2];
  out["ttft_ms_p99"] =
      ttft[std::min(ttft.size() - 1, (ttft.size() * 99) / 100)];
  out["requests"] = ttft.size();
  // The same prompt gives the same logits whatever ran beside it.
  out["bit_identical"] = shas.size() == 1;
  if (auto err = c.stop())
    throw std::runtime_error(render(err));
  return out;
}

// A long prompt arriving while another request decodes (local-64, batch 2,
// context 256, `lockstep up --prefill <policy>`): A's inter-token gaps, and
// B's time to first token beside what the plan predicts for it.
json run_prefill_interference(const std::string& policy) {
  constexpr uint32_t a_tokens = 120, b_prompt = 200, b_tokens = 4;
  auto c = start("local-64", "tiny-64", 2, 256, policy);
  json out{{"prefill_policy", policy},
           {"config", "local-64"},
           {"model", "tiny-64"},
           {"batch", 2},
           {"context", 256},
           {"a_tokens", a_tokens},
           {"b_prompt_tokens", b_prompt}};
  timed(c.generate(prompt, 2), 2); // warm
  std::vector<int32_t> long_prompt;
  for (uint32_t i = 0; i < b_prompt; ++i)
    long_prompt.push_back(static_cast<int32_t>(i % 97 + 1));
  caf::expected<actors::cluster_generation> a{caf::error{}}, b{caf::error{}};
  std::thread ta{[&] { a = c.generate(prompt, a_tokens); }};
  std::this_thread::sleep_for(std::chrono::milliseconds(300)); // A decodes
  std::thread tb{[&] { b = c.generate(long_prompt, b_tokens); }};
  ta.join();
  tb.join();
  timed(a, a_tokens);
  auto bt = timed(b, b_tokens);
  std::vector<double> gaps;
  for (size_t i = 1; i < a->token_arrival_s.size(); ++i)
    gaps.push_back(a->token_arrival_s[i] - a->token_arrival_s[i - 1]);
  double med = median(gaps);
  double worst = *std::max_element(gaps.begin(), gaps.end());
  out["a_median_gap_ms"] = med * 1e3;
  out["a_max_gap_ms"] = worst * 1e3;
  out["a_max_gap_over_median"] = worst / med;
  out["b_ttft_ms"] = bt.ttft_ms;
  if (auto st = c.status())
    out["prefill_steps_run"] = (*st)["prefill_steps_run"];
  // The plan's view: its prefill program (chunks one period apart), its
  // chunks one at a time with a decode step between (as the cluster runs a
  // prompt while others decode), and the decode program fed a prompt token
  // a step (as a paced cluster runs prompts).
  auto config = planner::load_cluster_config(testing::config_path("local-64"));
  if (!config)
    throw std::runtime_error(render(config.error()));
  auto made =
      planner::make_plan(*config, *model::find_preset("tiny-64"), {2, 256, {}});
  if (!made)
    throw std::runtime_error(render(made.error()));
  out["predicted_ttft_ms_prefill_program"] =
      planner::predicted_ttft_ms(made->p, b_prompt);
  out["predicted_ttft_ms_interleaved"] =
      planner::predicted_interleaved_ttft_ms(made->p, b_prompt);
  out["predicted_ttft_ms_token_a_step"] =
      b_prompt * made->p.predicted.token_latency_us / 1e3;
  if (auto err = c.stop())
    throw std::runtime_error(render(err));
  return out;
}

} // namespace

int run_scale(int argc, char** argv) {
  CLI::App app{"local clusters from 8 to 1500 chips, and batching"};
  std::string format = "text";
  app.add_option("-o,--output", format)->check(CLI::IsMember({"text", "json"}));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  bool text = format == "text";
  double t_start = now_s();
  const size_case sizes[] = {{"local8", "local-8", "tiny-8", 8, 32},
                             {"local64", "local-64", "tiny-64", 64, 24},
                             {"local512", "local-512", "tiny-512", 512, 16},
                             {"local1500", "local-1500", "tiny-1500", 1500, 12}};
  json out = json::object();
  json scaling = json::array();
  bool failed = false;
  for (const auto& sc : sizes) {
    try {
      auto j = run_size(sc, std::string{sc.key} == "local1500");
      out[sc.key] = j;
      scaling.push_back({{"chips", sc.chips},
                         {"up_s", j["up_s"]},
                         {"total_rss_mb", j["total_rss_mb"]},
                         {"tokens_per_s", j["tokens_per_s"]},
                         {"plan_s", j["plan_s"]}});
      if (text)
        std::printf("%-10s %4u chips in %zu processes: plan %.2f s, up %.1f "
                    "s cold, RSS %.0f MB total (peak %.0f MB a process, "
                    "worst non-head host %.2fx its arenas), %.1f tok/s\n",
                    sc.config, sc.chips, j["processes"].get<size_t>(),
                    j["plan_s"].get<double>(), j["up_s"].get<double>(),
                    j["total_rss_mb"].get<double>(),
                    j["peak_rss_mb_per_process"].get<double>(),
                    j["worst_rss_over_arena_non_head"].get<double>(),
                    j["tokens_per_s"].get<double>());
    } catch (const std::exception& e) {
      out[sc.key] = {{"error", e.what()}};
      std::fprintf(stderr, "lockstep-bench scale: %s: %s\n", sc.config,
                   e.what());
      failed = true;
    }
  }
  out["scaling"] = scaling;
  if (text && out["local1500"].contains("ratio_vs_reference"))
    std::printf("local-1500 decode %.1f tok/s vs reference %.1f tok/s: "
                "ratio %.3f (logits %s)\n",
                out["local1500"]["tokens_per_s"].get<double>(),
                out["local1500"]["reference_tokens_per_s"].get<double>(),
                out["local1500"]["ratio_vs_reference"].get<double>(),
                out["local1500"]["bit_identical"].get<bool>() ? "identical"
                                                              : "DIFFER");
  try {
    out["batching16"] = run_batching16();
    const auto& b = out["batching16"];
    if (text)
      std::printf("batching  local-64 --batch 16 --context 128: 1 / 4 / 16 "
                  "at once %.1f / %.1f / %.1f tok/s (x%.2f for 16, target "
                  ">= 4); TTFT p50 %.1f ms, p99 %.1f ms over %zu requests\n",
                  b["tokens_per_s_1"].get<double>(),
                  b["tokens_per_s_4"].get<double>(),
                  b["tokens_per_s_16"].get<double>(),
                  b["speedup_16"].get<double>(), b["ttft_ms_p50"].get<double>(),
                  b["ttft_ms_p99"].get<double>(), b["requests"].get<size_t>());
  } catch (const std::exception& e) {
    out["batching16"] = {{"error", e.what()}};
    std::fprintf(stderr, "lockstep-bench scale: batching: %s\n", e.what());
    failed = true;
  }
  // The default policy (idle: B's prompt rides A's decode steps) and
  // interleave (chunks alternate with them), side by side.
  for (std::string policy : {"idle", "interleave"}) {
    std::string key = policy == "idle" ? "prefill_interference"
                                       : "prefill_interference_interleave";
    try {
      out[key] = run_prefill_interference(policy);
      const auto& p = out[key];
      if (text)
        std::printf("long prompt local-64 --batch 2 --prefill %s: A's max "
                    "token gap %.1f ms = %.2fx its median while B's "
                    "%u-token prompt entered (%d prefill steps); B's TTFT "
                    "%.0f ms (plan: %.0f ms a prompt token a step; %.0f ms "
                    "chunks interleaved with decode; %.0f ms chunks "
                    "pipelined)\n",
                    policy.c_str(), p["a_max_gap_ms"].get<double>(),
                    p["a_max_gap_over_median"].get<double>(),
                    p["b_prompt_tokens"].get<uint32_t>(),
                    p.value("prefill_steps_run", -1),
                    p["b_ttft_ms"].get<double>(),
                    p["predicted_ttft_ms_token_a_step"].get<double>(),
                    p["predicted_ttft_ms_interleaved"].get<double>(),
                    p["predicted_ttft_ms_prefill_program"].get<double>());
    } catch (const std::exception& e) {
      out[key] = {{"error", e.what()}};
      std::fprintf(stderr, "lockstep-bench scale: long prompt (%s): %s\n",
                   policy.c_str(), e.what());
      failed = true;
    }
  }
  out["wall_s"] = now_s() - t_start;
  if (text)
    std::printf("wall %.0f s\n", out["wall_s"].get<double>());
  else
    std::printf("%s\n", out.dump(2).c_str());
  return failed ? 1 : 0;
}

} // namespace lockstep::bench
