// lockstep-bench kernels: reference-engine decode speed and kernel
// throughput, side by side with this machine's memory bandwidth measured by a
// stream-like probe in the same run.

#include "bench/benches.hpp"
#include "bench/stats.hpp"

#include "model/generation.hpp"
#include "model/kernels.hpp"
#include "model/model_weights.hpp"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

namespace lockstep::bench {

namespace {

using nlohmann::json;

// Probe arrays far above the 480 MiB L3 this machine reports.
constexpr size_t probe_bytes = size_t{1536} << 20;

// Read bandwidth: sum a large array with independent accumulators (what a
// weight-streaming matvec does). Returns the best of 7 runs in GB/s over
// `threads` threads: the bound the engine is judged against.
double read_bandwidth_gbs(const std::vector<float>& a, int threads,
                          int reps = 7) {
  std::vector<float> sums(static_cast<size_t>(threads) * 16);
  auto body = [&](int id) {
    size_t n = a.size() / threads;
    const float* p = a.data() + n * id;
    float acc[16] = {};
    for (size_t i = 0; i + 16 <= n; i += 16)
      for (int l = 0; l < 16; ++l)
        acc[l] += p[i + l];
    for (int l = 0; l < 16; ++l)
      sums[id * 16 + l] = acc[l];
  };
  double s = best_seconds(reps, [&] {
    std::vector<std::thread> ts;
    for (int i = 1; i < threads; ++i)
      ts.emplace_back(body, i);
    body(0);
    for (auto& t : ts)
      t.join();
  });
  volatile float sink = sums[0];
  (void)sink;
  return a.size() * sizeof(float) / s / 1e9;
}

// STREAM triad a = b + s * c (two reads, one write) for reference.
double triad_bandwidth_gbs() {
  size_t n = probe_bytes / 3 / sizeof(float);
  std::vector<float> a(n, 0.0f), b(n, 1.0f), c(n, 2.0f);
  double s = best_seconds(7, [&] {
    for (size_t i = 0; i < n; ++i)
      a[i] = b[i] + 3.0f * c[i];
  });
  volatile float sink = a[n / 2];
  (void)sink;
  return 3.0 * n * sizeof(float) / s / 1e9;
}

struct decode_figures {
  double tokens_per_s;
  double weight_gb;
  double fraction; // median over reps of rate / (probe bandwidth / weights)
};

// Median decode speed of one sequence (prefill excluded).
// Each rep probes the bandwidth right before it decodes, so a shared
// machine's swings hit both sides of the ratio alike.
decode_figures decode(const model::model_weights& weights, unsigned threads,
                      uint32_t tokens, int reps,
                      const std::function<double()>& probe_gbs) {
  const auto& spec = weights.spec;
  double weight_gb = spec.weight_bytes() / 1e9;
  model::reference_engine engine{weights, threads};
  std::vector<double> rates, fractions;
  for (int r = 0; r < reps; ++r) {
    double bw = probe_gbs();
    auto seq = engine.new_sequence();
    std::vector<int32_t> tok{1};
    model::sequence_chunk c{&seq, tok};
    (void)engine.forward({&c, 1}); // prefill/warm-up
    double t0 = now_s();
    for (uint32_t i = 0; i < tokens; ++i) {
      auto logits = engine.forward({&c, 1});
      tok[0] = model::sample((*logits)[0], {}, 0, i);
    }
    rates.push_back(tokens / (now_s() - t0));
    fractions.push_back(rates.back() / (bw / weight_gb));
  }
  return {median(rates), weight_gb, median(fractions)};
}

} // namespace

int run_kernels(int argc, char** argv) {
  CLI::App app{"kernel and reference-engine benchmarks"};
  std::string format = "text";
  bool quick = false;
  app.add_option("-o,--output", format)->check(CLI::IsMember({"text", "json"}));
  app.add_flag("--quick", quick, "skip the 2 GiB model (for smoke tests)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  bool json_out = format == "json";
  auto log = [&](const char* fmt, auto... xs) {
    if (!json_out) {
      std::printf(fmt, xs...);
      std::fflush(stdout);
    }
  };
  json out;

  // 1. Memory bandwidth of this machine, measured now.
  std::vector<float> probe(probe_bytes / sizeof(float), 1.0f);
  double read1 = read_bandwidth_gbs(probe, 1);
  double read2 = read_bandwidth_gbs(probe, 2);
  double bound1 = read1, bound2 = read2; // raised below by faster streams
  double triad = triad_bandwidth_gbs();
  out["memory"] = {{"read_gbs_1thread", read1},
                   {"read_gbs_2threads", read2},
                   {"triad_gbs_1thread", triad},
                   {"probe_bytes", probe_bytes}};
  log("memory    read %.2f GB/s (1 thread), %.2f GB/s (2 threads), triad "
      "%.2f GB/s\n",
      read1, read2, triad);

  // 2. Kernel throughput: compute-bound (cache-resident, 32 tokens) and
  // bandwidth-bound (1 token over a 512 MiB f32 weight).
  {
    auto spec = *model::find_preset("tiny-64");
    model::weight_generator gen{spec, 1};
    auto w = gen.generate({0, model::tensor_kind::w_gate}); // 1024 x 512
    uint32_t t = 32;
    std::vector<float> x(size_t{t} * w.cols(), 0.5f), y(size_t{t} * w.rows());
    double s = median_seconds(9, [&] {
      model::matmul({x.data(), t, w.cols(), w.view()}, y.data(), w.rows());
    });
    double gflops = 2.0 * t * w.rows() * w.cols() / s / 1e9;
    out["matmul_gflops_cached"] = gflops;
    log("matmul    %.2f GFLOP/s (f32, %ux%u weight in cache, %u tokens)\n",
        gflops, w.rows(), w.cols(), t);

    // A 1 GiB LM head (vocab 131072 x 2048): twice the L3, so DRAM-bound.
    auto big_spec = *model::find_preset("bench-2g");
    big_spec.vocab = 131072;
    model::weight_generator big{big_spec, 1};
    auto head =
        big.generate({model::global_layer, model::tensor_kind::lm_head});
    std::vector<float> hx(head.cols(), 0.5f), hy(head.rows());
    for (unsigned threads : {1u, 2u}) {
      model::worker_pool pool{threads};
      double hs = median_seconds(5, [&] {
        model::matmul({hx.data(), 1, head.cols(), head.view(), &pool}, hy.data(),
                      head.rows());
      });
      double gbs = head.bytes().size() / hs / 1e9;
      double bw = threads == 1 ? read1 : read2;
      auto key =
          std::to_string(threads) + (threads == 1 ? "thread" : "threads");
      // The bound is the best read bandwidth seen in this run: the probe's
      // or, when it streams faster, the matvec's own.
      (threads == 1 ? bound1 : bound2) = std::max(bw, gbs);
      out["matvec_gbs_" + key] = gbs;
      out["matvec_fraction_of_read_bw_" + key] = gbs / bw;
      log("matvec    %.2f GB/s (f32, 1 GiB weight, 1 token, %u thread(s)) = "
          "%.2f of read bandwidth\n",
          gbs, threads, gbs / bw);
    }
  }

  // 3. Reference-engine decode, on 1 thread and on both cores; each is
  // judged against the best read bandwidth measured with the same thread
  // count (probe or matvec, whichever streamed faster).
  out["bound_gbs_1thread"] = bound1;
  out["bound_gbs_2threads"] = bound2;
  struct model_run {
    const char* name;
    uint32_t tokens;
    int reps;
  };
  std::vector<model_run> runs{{"tiny-8", 200, 5}, {"tiny-64", 40, 5}};
  if (!quick)
    runs.push_back({"bench-2g", 4, 3});
  for (const auto& r : runs) {
    auto weights =
        model::model_weights::generate({*model::find_preset(r.name), 1});
    for (unsigned threads : {1u, 2u}) {
      auto f = decode(weights, threads, r.tokens, r.reps, [&] {
        return read_bandwidth_gbs(probe, static_cast<int>(threads), 2);
      });
      double bw = threads == 1 ? bound1 : bound2;
      double bound = bw / f.weight_gb; // tokens/s if weights stream at bw
      auto key =
          std::to_string(threads) + (threads == 1 ? "thread" : "threads");
      out["decode_detail"][r.name][key] = {
          {"tokens_per_s", f.tokens_per_s},
          {"bandwidth_bound_tokens_per_s", bound},
          {"fraction_of_bandwidth_bound", f.fraction}};
      // The headline figure per model: the faster of the two thread counts.
      auto& best = out["decode_tokens_per_s"][r.name];
      if (best.is_null() || best.get<double>() < f.tokens_per_s)
        best = f.tokens_per_s;
      log("decode    %-9s %u thread(s) %8.2f tokens/s  (weights %.3f GB; "
          "bound %.2f tokens/s; fraction %.2f, probed before each rep)\n",
          r.name, threads, f.tokens_per_s, f.weight_gb, bound, f.fraction);
      // Judged on both cores against the whole machine's read bandwidth.
      if (std::string{r.name} == "bench-2g")
        out[threads == 2 ? "fraction_of_bandwidth_bound"
                         : "fraction_of_bandwidth_bound_1thread"] = f.fraction;
    }
  }
  if (!quick)
    log("          fraction_of_bandwidth_bound is for bench-2g (2.3 GB of "
        "weights, > L3); target >= 0.5\n");
  if (json_out)
    std::printf("%s\n", out.dump(2).c_str());
  return 0;
}

} // namespace lockstep::bench
