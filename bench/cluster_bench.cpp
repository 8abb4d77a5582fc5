// lockstep-bench cluster: the running cluster (`lockstep up`: one lockstepd
// process per host, requests through the client library) beside the
// single-process reference engine on the same weights, measured in the same
// run, alternating, medians of several runs each; the planner's predicted
// token latency against the measured one; what an idle cluster costs;
// paced-mode slot misses; and what batching buys.
//
// The suite starts and stops its own clusters through the local-cluster
// harness (tools/testing/local_cluster.hpp): each with its own context file
// in a temporary directory, so it never talks to, or stops, a cluster
// someone else has up.

#include "bench/benches.hpp"
#include "bench/reference_timing.hpp"
#include "bench/stats.hpp"

#include "actors/client.hpp"
#include "tools/testing/local_cluster.hpp"
#include "model/generation.hpp"
#include "model/model_weights.hpp"
#include "planner/plan_codec.hpp"
#include "planner/planner.hpp"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <thread>

namespace lockstep::bench {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace std::chrono_literals;

// --- Processes ----------------------------------------------------------

// Interruptions. The hosts run in sessions of their own and our `lockstep`
// children in a process group of their own, so a terminal's Ctrl-C reaches
// only this process: the first SIGINT / SIGTERM / SIGHUP is noted and the
// suite stops at its next check (a finished `up`, a token, an idle tick),
// running `lockstep down` on the way out; a second one SIGKILLs the hosts
// of the cluster that is up and ends the process at once.
constexpr size_t max_hosts = 64;
std::atomic<pid_t> live_pids[max_hosts];
std::atomic<int> interrupt_signal{0};

void on_interrupt(int sig) {
  if (interrupt_signal.exchange(sig) == 0)
    return;
  for (auto& p : live_pids)
    if (pid_t pid = p.load(); pid > 0)
      ::kill(pid, SIGKILL); // async-signal-safe; `down` is not
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

struct interrupted_error : std::runtime_error {
  interrupted_error()
      : std::runtime_error("interrupted") {}
};

void check_interrupt() {
  if (interrupt_signal.load() != 0)
    throw interrupted_error{};
}

// utime + stime of every thread of `pid`, seconds.
double cpu_s(pid_t pid) {
  auto f = testing::figures_of(pid);
  if (!f)
    throw std::runtime_error("host process " + std::to_string(pid) +
                             " is gone");
  return f->cpu_s;
}

// --- A cluster of our own -----------------------------------------------

using testing::config_path;


// The harness's cluster (tools/testing/local_cluster.hpp), its hosts known
// to the signal handler: a second Ctrl-C SIGKILLs them.
class running_cluster {
public:
  explicit running_cluster(testing::cluster_options o)
      : cluster_(start(std::move(o))) {
    for (size_t i = 0; i < cluster_.pids().size() && i < max_hosts; ++i)
      live_pids[i].store(cluster_.pids()[i]);
    if (interrupt_signal.load() != 0) {
      down();
      throw interrupted_error{};
    }
  }
  ~running_cluster() { down(); }
  running_cluster(const running_cluster&) = delete;
  running_cluster& operator=(const running_cluster&) = delete;

  const std::vector<pid_t>& pids() const { return cluster_.pids(); }
  double up_s() const { return cluster_.up_s(); }

  actors::cluster_client connect() const {
    auto c = actors::cluster_client::connect(cluster_.address());
    if (!c)
      throw std::runtime_error(render(c.error()));
    return std::move(*c);
  }

  json status() {
    auto st = cluster_.status();
    if (!st)
      throw std::runtime_error(render(st.error()));
    return std::move(*st);
  }

  /// Idempotent: `lockstep down`, SIGKILL for whatever outlives it.
  void down() {
    if (auto err = cluster_.stop())
      std::fprintf(stderr, "lockstep-bench cluster: %s\n",
                   render(err).c_str());
    for (auto& p : live_pids)
      p.store(0);
  }

private:
  static testing::local_cluster start(testing::cluster_options o) {
    auto c = testing::local_cluster::start(std::move(o));
    if (!c) {
      check_interrupt();
      throw std::runtime_error(render(c.error()));
    }
    return std::move(*c);
  }

  testing::local_cluster cluster_;
};

// --- Measurements -------------------------------------------------------

const std::vector<int32_t> prompt{1, 2, 3, 4, 5, 6, 7, 8};

// One request, as the client saw it. Decode tokens/s is counted from the
// first token's arrival, as on the reference side, so that the two compare
// the same work; TTFT is from sending the request.
struct request_figures {
  double ttft_ms = 0;
  double tokens_per_s = 0;         // decode: (n - 1) / (last - first arrival)
  double token_gap_us = 0;         // median inter-token arrival gap
  double mean_gap_us = 0;          // (last - first arrival) / (n - 1)
  double head_ttft_ms = 0;         // the head's own view, for comparison
  double request_tokens_per_s = 0; // n / (send to last arrival)
  std::vector<int32_t> tokens;
  std::string logits_sha256;
};

request_figures cluster_request(actors::cluster_client& client,
                                uint32_t tokens) {
  check_interrupt();
  // Thrown from the token callback, an interruption abandons the request
  // (and its connection) at once; the cluster is stopped on the way out.
  auto g = client.generate(prompt, tokens, {}, std::chrono::seconds(120),
                           [](uint32_t, int32_t) { check_interrupt(); });
  if (!g)
    throw std::runtime_error(render(g.error()));
  const auto& a = g->token_arrival_s;
  if (a.size() != tokens || g->tokens.size() != tokens)
    throw std::runtime_error("the cluster returned " +
                             std::to_string(g->tokens.size()) + " tokens (" +
                             std::to_string(a.size()) + " arrivals), not " +
                             std::to_string(tokens));
  request_figures f;
  f.ttft_ms = a.front() * 1e3;
  f.tokens_per_s = (tokens - 1) / (a.back() - a.front());
  std::vector<double> gaps;
  for (size_t i = 1; i < a.size(); ++i)
    gaps.push_back((a[i] - a[i - 1]) * 1e6);
  f.token_gap_us = median(gaps);
  f.mean_gap_us = (a.back() - a.front()) / (tokens - 1) * 1e6;
  f.head_ttft_ms = g->ttft_ms;
  f.request_tokens_per_s = tokens / a.back();
  f.tokens = std::move(g->tokens);
  f.logits_sha256 = std::move(g->logits_sha256);
  return f;
}

// The reference engine's figures for the same request: TTFT = prefill of the
// whole prompt + the first sample; decode tokens/s after it.
request_figures reference_request(model::reference_engine& engine,
                                  uint32_t tokens) {
  check_interrupt();
  auto t = time_reference(engine, prompt, tokens);
  request_figures f;
  f.ttft_ms = t.ttft_ms;
  f.tokens_per_s = t.tokens_per_s;
  return f;
}

json to_json(const spread& s) {
  return {
      {"min", s.min}, {"median", s.median}, {"max", s.max}, {"runs", s.runs}};
}

// A per-link counter of `lockstep status -o json`, summed over the links.
double sum_over_links(const json& status, const char* counter) {
  double n = 0;
  for (const auto& l : status.value("links", json::array()))
    n += l.value(counter, 0.0);
  return n;
}

struct case_spec {
  const char* key;    // "local8"
  const char* config; // "local-8"
  const char* model;
  uint32_t tokens;
  double target_ratio;
};

// What `lockstep up` gets for case `cs`: stores and logs in `work_dir`
// (kept between the suite's clusters of one config).
testing::cluster_options up_options(const case_spec& cs, uint32_t batch,
                                    uint32_t context, uint64_t paced_slot_us,
                                    const fs::path& work_dir) {
  testing::cluster_options o;
  o.config = cs.config;
  o.model = cs.model;
  o.batch = batch;
  o.context = context;
  o.paced_slot_us = paced_slot_us;
  o.work_dir = work_dir;
  return o;
}

struct options {
  int reps = 5;
  double idle_s = 5;
  // Few enough misses to call paced mode working on a loaded 2-core VM
  // (load 6-7, miss fraction of one run each: 1000 us 19%, 2000 us 14%,
  // 4000 us 4%, 8000 us 0.1%; wake-ups 10-17 ms late seen under the
  // cluster's own load), as in the paced tests (bench/README.md).
  uint64_t paced_slot_us = 20000;
  // Paced steps last a whole schedule of wall-clock slots (local-64 at 20 ms:
  // ~4 s), so the paced requests are short.
  uint32_t paced_tokens = 4;
  bool text = true;
};

// Loud, on stderr too: a mismatch means the cluster computes other math, a
// failure that figures are missing.
void shout(const std::string& what) {
  std::fprintf(stderr, "!!! lockstep-bench cluster: %s\n", what.c_str());
  std::fflush(stderr);
}

// Cluster vs reference for one config, plus (`idle_and_paced`: local-64)
// idle CPU and paced mode.
json run_case(const case_spec& cs, const fs::path& scratch, const options& o,
              unsigned threads, bool idle_and_paced) {
  json out{{"config", cs.config},
           {"model", cs.model},
           {"prompt_tokens", prompt.size()},
           {"max_tokens", cs.tokens}};
  auto spec = model::find_preset(cs.model);
  if (!spec)
    throw std::runtime_error(render(spec.error()));
  // The bytes every host generates into its store (seed 42).
  auto weights =
      model::model_weights::generate(model::weight_generator{*spec, 42});
  model::reference_engine engine{weights, threads};
  std::vector<model::generation_request> req{{0, prompt, cs.tokens, {}, 0}};
  auto ref = model::generate(engine, req);
  if (!ref)
    throw std::runtime_error(render(ref.error()));
  const auto& ref_sha = (*ref)[0].logits_sha256;
  out["reference_logits_sha256"] = ref_sha;

  auto db_root = scratch / cs.config;
  std::string logical_sha, logical_short_sha;
  {
    running_cluster cluster{up_options(cs, 1, 0, 0, db_root)};
    out["up_s"] = cluster.up_s();
    auto client = cluster.connect();
    // The first request after `up` pays for first touches and connections.
    auto warm = cluster_request(client, cs.tokens);
    logical_sha = warm.logits_sha256;
    if (idle_and_paced) {
      double c0 = 0, c1 = 0;
      for (auto pid : cluster.pids())
        c0 += cpu_s(pid);
      double t0 = now_s();
      while (now_s() < t0 + o.idle_s) {
        check_interrupt();
        std::this_thread::sleep_for(100ms);
      }
      double t1 = now_s();
      for (auto pid : cluster.pids())
        c1 += cpu_s(pid);
      out["idle_cpu_percent"] = (c1 - c0) / (t1 - t0) * 100;
      out["idle_seconds"] = t1 - t0;
      out["host_processes"] = cluster.pids().size();
    }
    std::vector<double> c_tps, c_ttft, c_gap, c_mean_gap, c_head_ttft, c_whole,
        r_tps, r_ttft;
    bool identical =
        warm.logits_sha256 == ref_sha && warm.tokens == (*ref)[0].tokens;
    for (int i = 0; i < o.reps; ++i) {
      // Alternating, so a neighbour's burst hits both sides alike.
      auto c = cluster_request(client, cs.tokens);
      identical = identical && c.logits_sha256 == ref_sha &&
                  c.tokens == (*ref)[0].tokens;
      c_tps.push_back(c.tokens_per_s);
      c_ttft.push_back(c.ttft_ms);
      c_gap.push_back(c.token_gap_us);
      c_mean_gap.push_back(c.mean_gap_us);
      c_head_ttft.push_back(c.head_ttft_ms);
      c_whole.push_back(c.request_tokens_per_s);
      auto r = reference_request(engine, cs.tokens);
      r_tps.push_back(r.tokens_per_s);
      r_ttft.push_back(r.ttft_ms);
    }
    out["cluster"] = {{"tokens_per_s", to_json(spread_of(c_tps))},
                      {"ttft_ms", to_json(spread_of(c_ttft))},
                      {"head_ttft_ms", to_json(spread_of(c_head_ttft))},
                      {"request_tokens_per_s", to_json(spread_of(c_whole))}};
    out["reference"] = {{"tokens_per_s", to_json(spread_of(r_tps))},
                        {"ttft_ms", to_json(spread_of(r_ttft))}};
    out["ratio_vs_reference"] = median(c_tps) / median(r_tps);
    out["ttft_over_reference"] = median(c_ttft) / median(r_ttft);
    out["bit_identical"] = identical;
    out["logits_sha256"] = logical_sha;
    if (!identical)
      shout(std::string{cs.config} + ": the cluster's tokens/logits " +
            "differ from the reference's (" + logical_sha + " vs " + ref_sha +
            ")");

    // The planner's prediction for the plan the cluster runs: the same
    // inputs (the head plans in the config's slot in logical mode), checked
    // by the plan hash.
    auto st = cluster.status();
    auto config = planner::load_cluster_config(config_path(cs.config));
    if (!config)
      throw std::runtime_error(render(config.error()));
    uint32_t batch = st.value("batch", 1u), context = st.value("context", 0u);
    auto plan = planner::make_plan(*config, *spec, {batch, context, {}});
    if (!plan)
      throw std::runtime_error(render(plan.error()));
    double predicted = plan->p.predicted.token_latency_us;
    double measured = median(c_gap);
    out["predicted_token_latency_us"] = predicted;
    out["measured_token_latency_us"] = measured;
    out["predicted_over_measured"] = predicted / measured;
    // A client that wakes late reads several tokens at once: gaps of
    // microseconds beside long ones. The median gap then says little about
    // the step time; the mean gap (= 1 / decode tokens/s) still does.
    out["mean_token_gap_us"] = median(c_mean_gap);
    out["arrivals_in_bursts"] = measured < 0.5 * median(c_mean_gap);
    out["plan"] = {
        {"batch", batch},
        {"context", context},
        {"hash_matches_cluster", planner::plan_hash(*config, plan->p) ==
                                     st.value("plan_hash", std::string{})}};
    if (idle_and_paced)
      logical_short_sha = cluster_request(client, o.paced_tokens).logits_sha256;
  }
  if (!idle_and_paced)
    return out;

  // Paced: the same config and store, wall-clock slots.
  json paced{{"slot_us", o.paced_slot_us}, {"max_tokens", o.paced_tokens}};
  try {
    running_cluster cluster{up_options(cs, 1, 0, o.paced_slot_us, db_root)};
    paced["up_s"] = cluster.up_s();
    auto client = cluster.connect();
    cluster_request(client, o.paced_tokens / 2); // warm-up, as above
    double warm_misses = sum_over_links(cluster.status(), "slot_misses");
    auto r = cluster_request(client, o.paced_tokens);
    auto st = cluster.status();
    double misses = sum_over_links(st, "slot_misses");
    double arrivals = sum_over_links(st, "transfers_received");
    paced["tokens_per_s"] = r.tokens_per_s;
    paced["ttft_ms"] = r.ttft_ms;
    paced["slot_misses_warmup"] = warm_misses;
    paced["slot_misses_measured"] = misses - warm_misses;
    paced["transfers_received"] = arrivals;
    paced["miss_fraction"] = arrivals > 0 ? misses / arrivals : 0.0;
    paced["bit_identical_to_logical"] = r.logits_sha256 == logical_short_sha;
    out["paced_slot_misses"] = misses;
    if (!paced["bit_identical_to_logical"].get<bool>())
      shout(std::string{cs.config} + " paced: the logits differ from " +
            "the logical run's (" + r.logits_sha256 + " vs " +
            logical_short_sha + ")");
  } catch (const interrupted_error&) {
    throw;
  } catch (const std::exception& e) {
    check_interrupt(); // a signal also ends the client's wait (EINTR)
    paced["error"] = e.what();
    shout(std::string{cs.config} + " paced: " + e.what());
  }
  out["paced"] = std::move(paced);
  return out;
}

// Aggregate tokens/s of `n` identical requests sent at once, each on its own
// connection: all generated tokens / (first send to last token).
double aggregate_tokens_per_s(running_cluster& cluster, uint32_t n,
                              uint32_t tokens, std::vector<std::string>& shas) {
  std::vector<actors::cluster_client> clients;
  for (uint32_t i = 0; i < n; ++i)
    clients.push_back(cluster.connect()); // before the clock starts
  std::vector<std::optional<request_figures>> got(n);
  std::vector<std::string> errors(n);
  double t0 = now_s();
  std::vector<std::thread> workers;
  for (uint32_t i = 0; i < n; ++i)
    workers.emplace_back([&, i] {
      try {
        got[i] = cluster_request(clients[i], tokens);
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    });
  for (auto& w : workers)
    w.join();
  double wall = now_s() - t0;
  check_interrupt();
  size_t total = 0;
  for (uint32_t i = 0; i < n; ++i) {
    if (!got[i])
      throw std::runtime_error("request " + std::to_string(i) + " of " +
                               std::to_string(n) + ": " + errors[i]);
    total += got[i]->tokens.size();
    shas.push_back(got[i]->logits_sha256);
  }
  return static_cast<double>(total) / wall;
}

json run_batching(const case_spec& cs, const fs::path& scratch,
                  const options& o, const std::string& logical_sha) {
  constexpr uint32_t batch = 4;
  // A request here needs prompt + tokens = 32 positions; a short KV cache
  // keeps the plan's SRAM (and its first touches) small.
  constexpr uint32_t context = 256;
  json out{{"config", cs.config},
           {"model", cs.model},
           {"batch", batch},
           {"context", context},
           {"max_tokens", cs.tokens}};
  running_cluster cluster{
      up_options(cs, batch, context, 0, scratch / cs.config)};
  out["up_s"] = cluster.up_s();
  std::vector<std::string> shas;
  aggregate_tokens_per_s(cluster, 1, cs.tokens, shas); // warm-up
  aggregate_tokens_per_s(cluster, batch, cs.tokens, shas);
  std::vector<double> one, four;
  for (int i = 0; i < std::max(3, o.reps / 2 + 1); ++i) {
    one.push_back(aggregate_tokens_per_s(cluster, 1, cs.tokens, shas));
    four.push_back(aggregate_tokens_per_s(cluster, batch, cs.tokens, shas));
  }
  // Each request equals its own batch-1 run (docs/cluster.md, Serving).
  const auto& expected = logical_sha.empty() ? shas.front() : logical_sha;
  bool identical = true;
  for (const auto& s : shas)
    identical = identical && s == expected;
  out["tokens_per_s_1"] = median(one);
  out["tokens_per_s_4"] = median(four);
  out["speedup_4"] = median(four) / median(one);
  out["tokens_per_s_1_spread"] = to_json(spread_of(one));
  out["tokens_per_s_4_spread"] = to_json(spread_of(four));
  out["bit_identical"] = identical;
  if (!identical)
    shout("batching: a request's logits differ from the batch-1 run's");
  return out;
}

// --- Text ---------------------------------------------------------------

void print_case(const case_spec& cs, const json& j, int reps,
                unsigned threads) {
  if (j.contains("error")) {
    std::printf("%-8s %s: FAILED: %s\n", cs.config, cs.model,
                j["error"].get<std::string>().c_str());
    return;
  }
  auto m = [&](const char* side, const char* what) {
    return j[side][what]["median"].get<double>();
  };
  auto range = [&](const char* side, const char* what) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "[%.1f..%.1f]",
                  j[side][what]["min"].get<double>(),
                  j[side][what]["max"].get<double>());
    return std::string{buf};
  };
  std::printf("%s %s: prompt %zu tokens, %u generated, medians of %d "
              "(alternating; reference on %u threads); up in %.1f s\n",
              cs.config, cs.model, prompt.size(), cs.tokens, reps, threads,
              j["up_s"].get<double>());
  std::printf("  decode  cluster %8.1f tok/s %-16s reference %8.1f tok/s "
              "%-16s ratio %.2f (target >= %.1f)\n",
              m("cluster", "tokens_per_s"),
              range("cluster", "tokens_per_s").c_str(),
              m("reference", "tokens_per_s"),
              range("reference", "tokens_per_s").c_str(),
              j["ratio_vs_reference"].get<double>(), cs.target_ratio);
  std::printf("  TTFT    cluster %8.2f ms    %-16s reference %8.2f ms    "
              "%-16s (head's own TTFT %.2f ms)\n",
              m("cluster", "ttft_ms"), range("cluster", "ttft_ms").c_str(),
              m("reference", "ttft_ms"), range("reference", "ttft_ms").c_str(),
              m("cluster", "head_ttft_ms"));
  std::printf("  logits  %s\n", j["bit_identical"].get<bool>()
                                    ? "bit-identical to the reference"
                                    : "DIFFER FROM THE REFERENCE");
  std::printf("  token latency: predicted %.1f us (plan: batch %u, context "
              "%u%s), measured %.1f us (median inter-token gap); "
              "predicted/measured %.3f\n",
              j["predicted_token_latency_us"].get<double>(),
              j["plan"]["batch"].get<uint32_t>(),
              j["plan"]["context"].get<uint32_t>(),
              j["plan"]["hash_matches_cluster"].get<bool>()
                  ? ", same hash as the cluster's"
                  : ", HASH DIFFERS from the cluster's",
              j["measured_token_latency_us"].get<double>(),
              j["predicted_over_measured"].get<double>());
  if (j["arrivals_in_bursts"].get<bool>())
    std::printf("  (tokens reached the client in bursts: median gap well "
                "below the mean gap %.1f us; predicted/mean gap %.3f)\n",
                j["mean_token_gap_us"].get<double>(),
                j["predicted_token_latency_us"].get<double>() /
                    j["mean_token_gap_us"].get<double>());
  if (j.contains("idle_cpu_percent"))
    std::printf("  idle    %.2f %% of one core (%zu host processes over "
                "%.1f s, after one request) (target < 2)\n",
                j["idle_cpu_percent"].get<double>(),
                j["host_processes"].get<size_t>(),
                j["idle_seconds"].get<double>());
  if (j.contains("paced")) {
    const auto& p = j["paced"];
    if (p.contains("error"))
      std::printf("  paced   (slot %llu us) FAILED: %s\n",
                  static_cast<unsigned long long>(p["slot_us"].get<uint64_t>()),
                  p["error"].get<std::string>().c_str());
    else
      std::printf("  paced   (--slot-us %llu, %u tokens) %.1f tok/s, TTFT "
                  "%.1f ms; slot misses %.0f since up (%.1f %% of %.0f "
                  "arrivals; %.0f in the warm-up request, %.0f in the "
                  "measured one) (ideally 0); logits %s\n",
                  static_cast<unsigned long long>(p["slot_us"].get<uint64_t>()),
                  p["max_tokens"].get<uint32_t>(),
                  p["tokens_per_s"].get<double>(), p["ttft_ms"].get<double>(),
                  j["paced_slot_misses"].get<double>(),
                  p["miss_fraction"].get<double>() * 100,
                  p["transfers_received"].get<double>(),
                  p["slot_misses_warmup"].get<double>(),
                  p["slot_misses_measured"].get<double>(),
                  p["bit_identical_to_logical"].get<bool>()
                      ? "equal to the logical run's"
                      : "DIFFER FROM THE LOGICAL RUN'S");
  }
}

// The stores go; after a failure the hosts' logs stay, for the reader.
void remove_scratch(const fs::path& scratch, bool keep_logs) {
  std::error_code ec;
  if (!keep_logs) {
    fs::remove_all(scratch, ec);
    return;
  }
  // <scratch>/<config>/run/host-N are stores; logs are in .../run/logs.
  for (const auto& cluster : fs::directory_iterator{scratch, ec})
    if (cluster.is_directory())
      for (const auto& e :
           fs::directory_iterator{cluster.path() / "run", ec})
        if (e.path().filename().string().rfind("host-", 0) == 0)
          fs::remove_all(e.path(), ec);
  std::fprintf(stderr, "lockstep-bench cluster: hosts' logs kept in %s\n",
               scratch.c_str());
}

} // namespace

int run_cluster(int argc, char** argv) {
  CLI::App app{"running clusters against the reference engine"};
  std::string format = "text";
  options o;
  app.add_option("-o,--output", format)->check(CLI::IsMember({"text", "json"}));
  app.add_option("--reps", o.reps, "runs per side (medians)")
      ->check(CLI::Range(3, 50));
  app.add_option("--idle-s", o.idle_s, "idle CPU window, seconds")
      ->check(CLI::Range(5.0, 60.0));
  app.add_option("--paced-slot-us", o.paced_slot_us,
                 "paced slot length for local-64, microseconds")
      ->check(CLI::Range(uint64_t{1000}, uint64_t{100000}));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  o.text = format == "text";
  // The reference at its default thread count: all cores, as `generate
  // --reference` runs.
  unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  double t_start = now_s();

  std::string pattern = "/tmp/lockstep-bench-cluster-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) {
    std::perror("lockstep-bench cluster: mkdtemp");
    return 1;
  }
  fs::path scratch = pattern;
  for (int sig : {SIGINT, SIGTERM, SIGHUP})
    ::signal(sig, on_interrupt);

  json out{{"threads", threads}, {"reps", o.reps}};
  bool failed = false;
  const case_spec local8{"local8", "local-8", "tiny-8", 48, 0.8};
  const case_spec local64{"local64", "local-64", "tiny-64", 24, 0.5};
  std::string logical64_sha;
  for (const auto* cs : {&local8, &local64}) {
    try {
      out[cs->key] = run_case(*cs, scratch, o, threads, cs == &local64);
      if (cs == &local64)
        logical64_sha = out[cs->key]["logits_sha256"];
      if (out[cs->key].contains("paced") &&
          out[cs->key]["paced"].contains("error"))
        failed = true;
    } catch (const std::exception& e) {
      // A signal also ends the client's wait (EINTR): not a failure.
      if (interrupt_signal.load() != 0)
        break;
      out[cs->key] = {{"error", e.what()}};
      shout(std::string{cs->config} + ": " + e.what());
      failed = true;
    }
    if (o.text)
      print_case(*cs, out[cs->key], o.reps, threads);
  }
  try {
    check_interrupt();
    out["batching"] = run_batching(local64, scratch, o, logical64_sha);
    // The same figure as tokens_per_s_1 on the batch-1 cluster: what the
    // batch-4 plan costs a lone request.
    if (out["local64"].contains("cluster"))
      out["batching"]["tokens_per_s_1_batch1_cluster"] =
          out["local64"]["cluster"]["request_tokens_per_s"]["median"];
  } catch (const std::exception& e) {
    if (interrupt_signal.load() == 0) {
      out["batching"] = {{"error", e.what()}};
      shout(std::string{"batching: "} + e.what());
      failed = true;
    }
  }
  if (int sig = interrupt_signal.load(); sig != 0) {
    // Whatever it was doing failed because of the signal: no figures.
    remove_scratch(scratch, false);
    std::fprintf(stderr,
                 "lockstep-bench cluster: interrupted (signal %d); "
                 "every cluster it started is down\n",
                 sig);
    return 128 + sig;
  }
  if (o.text) {
    const auto& b = out["batching"];
    if (b.contains("error"))
      std::printf("batching FAILED: %s\n",
                  b["error"].get<std::string>().c_str());
    else
      std::printf(
          "batching %s %s --batch %u --context %u, %u tokens a "
          "request (medians of %zu): 1 request %.1f tok/s, 4 at once "
          "%.1f tok/s aggregate, speedup %.2f (target >= 2); logits "
          "%s\n",
          local64.config, local64.model, b["batch"].get<uint32_t>(),
          b["context"].get<uint32_t>(), local64.tokens,
          b["tokens_per_s_1_spread"]["runs"].get<size_t>(),
          b["tokens_per_s_1"].get<double>(), b["tokens_per_s_4"].get<double>(),
          b["speedup_4"].get<double>(),
          b["bit_identical"].get<bool>() ? "equal to the batch-1 run's"
                                         : "DIFFER FROM THE BATCH-1 RUN'S");
    if (b.contains("tokens_per_s_1_batch1_cluster"))
      std::printf("  (one request on the --batch 1 local-64 cluster, same "
                  "measure: %.1f tok/s)\n",
                  b["tokens_per_s_1_batch1_cluster"].get<double>());
  }
  out["wall_s"] = now_s() - t_start;
  remove_scratch(scratch, failed);
  if (!o.text)
    std::printf("%s\n", out.dump(2).c_str());
  else
    std::printf("wall %.0f s\n", out["wall_s"].get<double>());
  return failed ? 1 : 0;
}

} // namespace lockstep::bench
