// lockstep-bench simulate: decode tokens/s of `generate --simulate` (every
// chip of a plan in this process, actors/simulation.hpp) beside the
// single-process reference engine on the same weights, measured in the same
// run, alternating, medians of several runs each; and how long local-1500
// takes to plan, load and start.
//
// The ratio says what executing a plan costs beyond the math: both sides
// compute the same kernels on the same bytes; the simulation adds the
// per-op checks, the transfers' copies and running ops chip by chip.

#include "bench/benches.hpp"
#include "bench/stats.hpp"

#include "actors/simulation.hpp"
#include "model/generation.hpp"
#include "planner/planner.hpp"
#include "storage/store.hpp"
#include "storage/weight_store.hpp"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <thread>

namespace lockstep::bench {

namespace {

using nlohmann::json;

// A weight store in a fresh temporary directory, removed afterwards.
class temp_store {
public:
  explicit temp_store(const std::string& model) {
    std::string pattern = "/tmp/lockstep-bench-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr)
      throw std::runtime_error("mkdtemp failed");
    dir_ = pattern;
    auto db = storage::store::open(dir_, {.create_if_missing = true});
    if (!db)
      throw std::runtime_error(render(db.error()));
    db_ = std::move(*db);
    auto init = storage::init_weights(*db_, *model::find_preset(model), 42);
    if (!init)
      throw std::runtime_error(render(init.error()));
    auto ws = storage::weight_store::open(*db_);
    if (!ws)
      throw std::runtime_error(render(ws.error()));
    ws_.emplace(std::move(*ws));
  }
  ~temp_store() {
    ws_.reset();
    db_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  const storage::weight_store& weights() const { return *ws_; }

private:
  std::filesystem::path dir_;
  std::unique_ptr<storage::store> db_;
  std::optional<storage::weight_store> ws_;
};

planner::cluster_config config_of(const std::string& name) {
  auto c = planner::load_cluster_config(std::string{LOCKSTEP_SOURCE_DIR} +
                                        "/cluster_configs/" + name + ".yaml");
  if (!c)
    throw std::runtime_error(render(c.error()));
  return std::move(*c);
}

planner::plan plan_for(const planner::cluster_config& c,
                       const model::model_spec& spec) {
  auto r = planner::make_plan(c, spec, {});
  if (!r)
    throw std::runtime_error(render(r.error()));
  if (!r->verdict.ok())
    throw std::runtime_error(r->verdict.violations.front());
  return std::move(r->p);
}

const std::vector<int32_t> prompt{1, 2, 3, 4, 5, 6, 7, 8};

// Reference decode tokens/s: one sequence, after its prefill.
double reference_decode(const model::model_weights& w, unsigned threads,
                        uint32_t tokens) {
  model::reference_engine engine{w, threads};
  auto seq = engine.new_sequence();
  model::sequence_chunk first{&seq, prompt};
  auto logits = engine.forward({&first, 1});
  std::vector<int32_t> tok{model::sample((*logits)[0], {}, 0, 0)};
  model::sequence_chunk c{&seq, tok};
  double t0 = now_s();
  for (uint32_t i = 1; i < tokens; ++i) {
    logits = engine.forward({&c, 1});
    tok[0] = model::sample((*logits)[0], {}, 0, i);
  }
  return (tokens - 1) / (now_s() - t0);
}

struct pair_figures {
  spread simulate, reference;
  double ratio = 0;
  size_t ops = 0, transfers = 0;
};

pair_figures compare(const std::string& config_name, const std::string& model,
                     uint32_t tokens, int reps, unsigned threads) {
  temp_store store{model};
  auto c = config_of(config_name);
  auto p = plan_for(c, store.weights().spec());
  auto w = model::model_weights::load(store.weights().spec(), [&](auto id) {
    return store.weights().read(id);
  });
  if (!w)
    throw std::runtime_error(render(w.error()));
  auto sim = actors::simulation::load(p, c, store.weights(), {threads});
  if (!sim)
    throw std::runtime_error(render(sim.error()));
  std::vector<model::generation_request> reqs{{0, prompt, tokens, {}, 0}};
  std::vector<double> s, r;
  for (int i = 0; i < reps; ++i) {
    // Alternating, so a neighbour's burst hits both sides alike.
    auto report = (*sim)->generate(reqs);
    if (!report)
      throw std::runtime_error(render(report.error()));
    s.push_back(report->decode_steps / report->decode_seconds);
    r.push_back(reference_decode(*w, threads, tokens));
  }
  pair_figures out;
  out.simulate = spread_of(s);
  out.reference = spread_of(r);
  out.ratio = out.simulate.median / out.reference.median;
  out.ops = p.decode.ops.size();
  out.transfers = p.decode.transfers.size();
  return out;
}

} // namespace

int run_simulate(int argc, char** argv) {
  CLI::App app{"generate --simulate against the reference engine"};
  std::string format = "text";
  int reps = 5;
  app.add_option("-o,--output", format)->check(CLI::IsMember({"text", "json"}));
  app.add_option("--reps", reps, "runs per side (medians)")
      ->check(CLI::Range(3, 50));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  bool text = format == "text";
  // The reference at its default thread count: all cores, as `generate
  // --reference` runs; the simulation's matmuls get the same pool.
  unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  json out;
  out["threads"] = threads;
  out["reps"] = reps;
  try {
    struct run_case {
      const char* key;
      const char* config;
      const char* model;
      uint32_t tokens;
    };
    for (const auto& rc : {run_case{"local8", "local-8", "tiny-8", 48},
                           run_case{"local64", "local-64", "tiny-64", 16}}) {
      auto f = compare(rc.config, rc.model, rc.tokens, reps, threads);
      out[rc.key] = {
          {"simulate_tokens_per_s", f.simulate.median},
          {"simulate_tokens_per_s_min", f.simulate.min},
          {"simulate_tokens_per_s_max", f.simulate.max},
          {"reference_tokens_per_s", f.reference.median},
          {"reference_tokens_per_s_min", f.reference.min},
          {"reference_tokens_per_s_max", f.reference.max},
          {"ratio_vs_reference", f.ratio},
          {"decode_ops_per_step", f.ops},
          {"decode_transfers_per_step", f.transfers}};
      if (text)
        std::printf("%-8s tiny decode: simulate %8.1f tok/s, reference %8.1f "
                    "tok/s (medians of %d), ratio %.2f  (%zu ops, %zu "
                    "transfers a step)\n",
                    rc.config, f.simulate.median, f.reference.median, reps,
                    f.ratio, f.ops, f.transfers);
    }
    // local-1500: plan it, then load it (arenas, every shard from RocksDB,
    // executors bound) and start (a first token through both programs).
    temp_store store{"tiny-1500"};
    auto c = config_of("local-1500");
    std::vector<double> plan_s, load_s, first_s;
    for (int i = 0; i < 3; ++i) {
      double t0 = now_s();
      auto p = plan_for(c, store.weights().spec());
      double t1 = now_s();
      auto sim = actors::simulation::load(p, c, store.weights(), {threads});
      if (!sim)
        throw std::runtime_error(render(sim.error()));
      double t2 = now_s();
      auto report = (*sim)->generate(
          std::vector<model::generation_request>{{0, prompt, 2, {}, 0}});
      if (!report)
        throw std::runtime_error(render(report.error()));
      double t3 = now_s();
      plan_s.push_back(t1 - t0);
      load_s.push_back(t2 - t0);
      first_s.push_back(t3 - t0);
    }
    out["local1500"] = {{"plan_s", median(plan_s)},
                        {"load_s", median(load_s)},
                        {"first_tokens_s", median(first_s)}};
    if (text)
      std::printf("local-1500 tiny-1500: plan %.2f s, load_s %.2f s (plan + "
                  "arenas + weights from RocksDB + executors), 2 tokens "
                  "after %.2f s (medians of 3)\n",
                  median(plan_s), median(load_s), median(first_s));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lockstep-bench simulate: %s\n", e.what());
    return 1;
  }
  if (!text)
    std::printf("%s\n", out.dump(2).c_str());
  else
    std::printf("targets: ratio_vs_reference >= 0.7 (local-8, local-64)\n");
  return 0;
}

} // namespace lockstep::bench
