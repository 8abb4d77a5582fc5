// lockstep-bench calibrate — the figures a local cluster config holds,
// measured on this machine the way the cluster uses it.
//
// A local cluster runs its chips as actors in host processes that share the
// machine's cores (docs/planner.md, "Chips that share a machine"), so the
// planner needs, per core and with every core busy:
//   machine.cores             cores this process may run on
//   chip.sram_bytes_per_s     bytes/s one core streams through the decode
//                             kernel (the matmul every chip op calls), over
//                             a working set of the config's own chip-sized
//                             shards (the model's weights, as the plan places
//                             them), while every other core does the same
//   chip.flops                FLOP/s of one core in the prefill matmul
//                             (cache-resident, 32 tokens), all cores busy
//   memcpy link               an in-process copy (chip <-> its host's
//                             endpoint): 64 KiB for the bandwidth, 64 B for
//                             the latency
//   local link                chip to chip in one process: the copy, then
//                             the receiving chip's actor must run — a
//                             message to an actor whose workers sleep (the
//                             latency), at memcpy bandwidth
//   shm link                  chip to chip across processes: the slotted
//                             transport's one-way latency at 4 KiB and
//                             64 KiB (from `lockstep-bench transport -o
//                             json`, --transport-json), fitted as latency +
//                             bytes / bandwidth, plus waking the receiving
//                             process's progress thread (FUTEX_WAKE to a
//                             sleeper in another process) and then its chip
//                             actor
// chip.op_overhead_ns — the CPU the runtime spends per op besides the math
// (messages, sends, progress threads) — can only be measured on a running
// cluster: scripts/calibrate-local.sh does that from `lockstep status`
// (process CPU minus the chips' kernel CPU, per op) and writes every figure
// into the configs (this suite's -o env).

#include "bench/benches.hpp"
#include "bench/stats.hpp"

#include "common/error.hpp"
#include "model/kernels.hpp"
#include "model/model_spec.hpp"
#include "model/tensor.hpp"
#include "planner/cluster_config.hpp"
#include "planner/planner.hpp"

#include <caf/all.hpp>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <linux/futex.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <csignal>
#include <unistd.h>

#include <atomic>
#include <barrier>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <thread>

namespace lockstep::bench {

namespace {

using json = nlohmann::json;

unsigned usable_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
    return static_cast<unsigned>(CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

// Runs `work(t)` on `threads` threads started together; returns each
// thread's rate (units of work per second) as work(t) reports it: work
// returns the units it did, and runs for at least `min_s`.
std::vector<double> concurrently(unsigned threads, double min_s,
                                 const std::function<double(unsigned)>& work) {
  std::vector<double> rate(threads, 0.0);
  std::barrier start{static_cast<std::ptrdiff_t>(threads)};
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      start.arrive_and_wait();
      double t0 = now_s(), units = 0, elapsed = 0;
      do {
        units += work(t);
        elapsed = now_s() - t0;
      } while (elapsed < min_s);
      rate[t] = units / elapsed;
    });
  for (auto& th : pool)
    th.join();
  return rate;
}

double mean(const std::vector<double>& v) {
  double s = 0;
  for (auto x : v)
    s += x;
  return v.empty() ? 0 : s / double(v.size());
}

// The chips' weight bytes as the plan places them, as f32 matrices of
// d_model columns in one buffer (one per used chip).
struct shard_set {
  std::vector<float> memory;
  std::vector<model::tensor_view> shards;
  uint64_t bytes = 0;
};

shard_set chip_shards(const planner::plan& p) {
  const uint32_t cols = p.spec.d_model;
  std::vector<uint32_t> rows;
  uint64_t total_rows = 0;
  for (auto c : p.chips_used) {
    auto r = static_cast<uint32_t>(p.usage[c].weight_bytes / (4ull * cols));
    if (r == 0)
      continue;
    rows.push_back(r);
    total_rows += r;
  }
  shard_set s;
  s.memory.assign(total_rows * cols, 0.5f);
  uint64_t at = 0;
  for (auto r : rows) {
    model::tensor_shape shape{r, cols};
    s.shards.emplace_back(
        shape, model::dtype::f32, model::whole(shape),
        reinterpret_cast<const std::byte*>(s.memory.data() + at * cols),
        nullptr);
    at += r;
    s.bytes += uint64_t{r} * cols * 4;
  }
  return s;
}

// Bytes/s per core of the decode matmul over the chips' shards, `threads`
// cores at once, thread t taking chips t, t + threads, ...
double stream_rate(const shard_set& s, unsigned threads, int reps) {
  std::vector<double> per_rep;
  for (int rep = 0; rep < reps; ++rep) {
    auto rates = concurrently(threads, 0.3, [&](unsigned t) {
      std::vector<float> x(s.shards.empty() ? 0 : s.shards[0].cols(), 0.5f);
      std::vector<float> y;
      double bytes = 0;
      for (size_t i = t; i < s.shards.size(); i += threads) {
        const auto& w = s.shards[i];
        y.resize(w.rows());
        model::matmul({x.data(), 1, w.cols(), w}, y.data(), w.rows());
        bytes += double(w.bytes().size());
      }
      return bytes;
    });
    per_rep.push_back(mean(rates));
  }
  return median(per_rep);
}

// FLOP/s per core of a cache-resident 32-token matmul, all cores at once.
double matmul_rate(uint32_t cols, unsigned threads, int reps) {
  const uint32_t rows = 1024, tokens = 32;
  std::vector<std::vector<float>> w(threads,
                                    std::vector<float>(size_t{rows} * cols, 0.5f));
  std::vector<double> per_rep;
  for (int rep = 0; rep < reps; ++rep) {
    auto rates = concurrently(threads, 0.3, [&](unsigned t) {
      model::tensor_shape shape{rows, cols};
      model::tensor_view v{shape, model::dtype::f32, model::whole(shape),
                           reinterpret_cast<const std::byte*>(w[t].data()),
                           nullptr};
      std::vector<float> x(size_t{tokens} * cols, 0.5f),
          y(size_t{tokens} * rows);
      model::matmul({x.data(), tokens, cols, v}, y.data(), rows);
      return 2.0 * tokens * rows * cols;
    });
    per_rep.push_back(mean(rates));
  }
  return median(per_rep);
}

// One actor-to-actor message on the work-sharing scheduler (as lockstepd
// runs it, `cores` workers): a ping-pong of `rounds` exchanges between two
// actors, timed from the request that starts it to the reply that ends it;
// the median of 7 batches, per message.
using start_atom = caf::atom_constant<caf::atom("start")>;
using ping_atom = caf::atom_constant<caf::atom("ping")>;
using pong_atom = caf::atom_constant<caf::atom("pong")>;

struct pinger_state {
  caf::response_promise done;
};

caf::behavior pinger(caf::stateful_actor<pinger_state>* self, caf::actor pong) {
  return {[=](start_atom, int64_t rounds) {
            self->state.done = self->make_response_promise();
            self->send(pong, ping_atom::value, rounds);
          },
          [=](pong_atom, int64_t left) {
            if (left > 1)
              self->send(pong, ping_atom::value, left - 1);
            else
              self->state.done.deliver(int64_t{0});
          }};
}

caf::behavior ponger(caf::event_based_actor*) {
  return {[](ping_atom, int64_t left) {
    return caf::make_message(pong_atom::value, left);
  }};
}

double handoff_ns(unsigned cores) {
  caf::actor_system_config cfg;
  cfg.set("scheduler.policy", caf::atom("sharing"));
  cfg.set("scheduler.max-threads", static_cast<size_t>(cores));
  caf::actor_system sys{cfg};
  auto pong = sys.spawn(ponger);
  auto ping = sys.spawn(pinger, pong);
  constexpr int64_t rounds = 20000;
  std::vector<double> per_batch;
  caf::scoped_actor self{sys};
  for (int batch = 0; batch < 7; ++batch) {
    double t0 = now_s();
    self->request(ping, caf::infinite, start_atom::value, rounds)
        .receive([](int64_t) {}, [](caf::error&) {});
    per_batch.push_back((now_s() - t0) / double(2 * rounds) * 1e9);
  }
  self->send_exit(ping, caf::exit_reason::user_shutdown);
  self->send_exit(pong, caf::exit_reason::user_shutdown);
  return median(per_batch);
}

// A message to an actor whose workers sleep, from a thread outside the
// scheduler (as a host's progress thread hands an arrival to a chip): the
// median one-way latency of 201, each after a pause long enough for the
// workers to block.
using stamp_atom = caf::atom_constant<caf::atom("stamp")>;
using collect_atom = caf::atom_constant<caf::atom("collect")>;

struct stamp_state {
  std::vector<double> delays_ns;
};

caf::behavior stamper(caf::stateful_actor<stamp_state>* self) {
  return {[=](stamp_atom, double sent_s) {
            self->state.delays_ns.push_back((now_s() - sent_s) * 1e9);
          },
          [=](collect_atom) { return median(self->state.delays_ns); }};
}

double cold_handoff_ns(unsigned cores) {
  caf::actor_system_config cfg;
  cfg.set("scheduler.policy", caf::atom("sharing"));
  cfg.set("scheduler.max-threads", static_cast<size_t>(cores));
  caf::actor_system sys{cfg};
  auto target = sys.spawn(stamper);
  for (int i = 0; i < 201; ++i) {
    std::this_thread::sleep_for(std::chrono::microseconds(500));
    caf::anon_send(target, stamp_atom::value, now_s());
  }
  caf::scoped_actor self{sys};
  double out = 0;
  self->request(target, caf::infinite, collect_atom::value)
      .receive([&](double d) { out = d; }, [](caf::error&) {});
  self->send_exit(target, caf::exit_reason::user_shutdown);
  return out;
}

// A thread of another process blocked in FUTEX_WAIT, woken by FUTEX_WAKE
// (a host's doorbell, transport/detail/doorbell.hpp): median delay of 201
// from the wake call to the sleeper running.
double process_wake_ns() {
  struct shared {
    std::atomic<uint32_t> word{0};
    std::atomic<int64_t> sent_ns{0};
    std::atomic<uint32_t> ready{0};
    double delays_ns[201];
  };
  void* mem = mmap(nullptr, sizeof(shared), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED)
    return 0;
  auto* sh = new (mem) shared{};
  auto mono_ns = [] {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
  };
  pid_t child = fork();
  if (child < 0) {
    munmap(mem, sizeof(shared));
    return 0; // reported as 0: no second process to wake
  }
  if (child == 0) {
    for (int i = 0; i < 201; ++i) {
      uint32_t seen = static_cast<uint32_t>(i);
      sh->ready.store(seen + 1);
      while (sh->word.load() == seen)
        syscall(SYS_futex, reinterpret_cast<uint32_t*>(&sh->word),
                FUTEX_WAIT, seen, nullptr, nullptr, 0);
      sh->delays_ns[i] = double(mono_ns() - sh->sent_ns.load());
    }
    _exit(0);
  }
  for (uint32_t i = 0; i < 201; ++i) {
    // The child announces each wait; one that died never does: give up.
    for (int polls = 0; sh->ready.load() != i + 1; ++polls) {
      if (polls > 50'000 || waitpid(child, nullptr, WNOHANG) == child) {
        kill(child, SIGKILL);
        waitpid(child, nullptr, 0);
        munmap(mem, sizeof(shared));
        return 0;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(500)); // asleep
    sh->sent_ns.store(mono_ns());
    sh->word.store(i + 1);
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(&sh->word), FUTEX_WAKE, 1,
            nullptr, nullptr, 0);
  }
  int status = 0;
  waitpid(child, &status, 0);
  std::vector<double> v(sh->delays_ns, sh->delays_ns + 201);
  munmap(mem, sizeof(shared));
  return median(v);
}

// ns per call of memcpy(`bytes`), median of 201 batches.
double copy_ns(size_t bytes) {
  std::vector<char> a(bytes, 1), b(bytes, 0);
  const int inner = bytes < 4096 ? 4096 : 64;
  std::vector<double> v;
  volatile char sink = 0;
  for (int i = 0; i < 201; ++i) {
    double t0 = now_s();
    for (int k = 0; k < inner; ++k) {
      a[0] = static_cast<char>(k);
      std::memcpy(b.data(), a.data(), bytes);
      sink = sink + b[bytes - 1];
    }
    v.push_back((now_s() - t0) / inner * 1e9);
  }
  return median(v);
}

struct link_fit {
  double bytes_per_s = 0;
  double latency_ns = 0;
};

// latency(bytes) = latency_ns + bytes / bytes_per_s through the slotted
// transport's 4 KiB and 64 KiB one-way latencies.
caf::expected<link_fit> shm_from(const std::string& file) {
  std::ifstream in{file};
  if (!in)
    return caf::make_error(caf::sec::runtime_error,
                           file + ": cannot read the transport bench's JSON");
  json j;
  try {
    j = json::parse(in);
    double l4 = 0, l64 = 0;
    for (const auto& s : j.at("shm").at("sizes")) {
      if (s.at("bytes") == 4096)
        l4 = s.at("slotted_latency_us").get<double>() * 1e3;
      if (s.at("bytes") == 65536)
        l64 = s.at("slotted_latency_us").get<double>() * 1e3;
    }
    if (l4 <= 0 || l64 <= l4)
      return caf::make_error(caf::sec::runtime_error,
                             file + ": shm.sizes lacks increasing 4 KiB and "
                                    "64 KiB slotted_latency_us");
    link_fit f;
    f.bytes_per_s = (65536.0 - 4096.0) / ((l64 - l4) * 1e-9);
    f.latency_ns = std::max(0.0, l4 - 4096.0 / f.bytes_per_s * 1e9);
    return f;
  } catch (const json::exception& e) {
    return caf::make_error(caf::sec::runtime_error,
                           file + ": not the transport bench's JSON: " +
                               e.what());
  }
}

} // namespace

int run_calibrate(int argc, char** argv) {
  CLI::App app{"measure a local config's chip, machine and link figures"};
  std::string config_file, model_name, transport_json, format = "text";
  int reps = 5;
  app.add_option("--config", config_file, "a local-*.yaml cluster config")
      ->required();
  app.add_option("--model", model_name, "the model the config is sized for")
      ->required();
  app.add_option("--transport-json", transport_json,
                 "`lockstep-bench transport -o json` output, for the shm link");
  app.add_option("--reps", reps, "repetitions (medians)")->check(CLI::Range(3, 50));
  app.add_option("-o,--output", format)
      ->check(CLI::IsMember({"text", "json", "env"}));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  auto fail = [](const std::string& what) {
    std::fprintf(stderr, "lockstep-bench calibrate: %s\n", what.c_str());
    return 2;
  };
  auto config = planner::load_cluster_config(config_file);
  if (!config)
    return fail(render(config.error()));
  auto spec = model::find_preset(model_name);
  if (!spec)
    return fail(render(spec.error()));
  // Shard sizes depend on SRAM, not on the figures measured here.
  auto plan = planner::make_plan(*config, *spec, {1, 0, {}});
  if (!plan)
    return fail(render(plan.error()));

  unsigned cores = usable_cores();
  auto shards = chip_shards(plan->p);
  double stream_all = stream_rate(shards, cores, reps);
  double stream_alone = stream_rate(shards, 1, reps);
  double flops_all = matmul_rate(spec->d_model, cores, reps);
  double handoff = handoff_ns(cores);
  double cold = cold_handoff_ns(cores);
  double wake = process_wake_ns();
  double copy64k = copy_ns(65536), copy64 = copy_ns(64);

  json out;
  out["config"] = config_file;
  out["model"] = model_name;
  out["cores"] = cores;
  out["working_set_bytes"] = shards.bytes;
  out["shards"] = shards.shards.size();
  out["sram_bytes_per_s_per_core"] = stream_all;
  out["sram_bytes_per_s_one_core_alone"] = stream_alone;
  out["flops_per_core"] = flops_all;
  out["actor_handoff_ns"] = handoff;
  out["actor_wake_ns"] = cold;
  out["process_wake_ns"] = wake;
  double copy_bps = 65536.0 / (copy64k * 1e-9);
  out["memcpy"] = {{"bytes_per_s", copy_bps},
                   {"latency_ns", std::max(1.0, copy64)}};
  out["local"] = {{"bytes_per_s", copy_bps}, {"latency_ns", cold}};
  if (!transport_json.empty()) {
    auto shm = shm_from(transport_json);
    if (!shm)
      return fail(render(shm.error()));
    out["shm"] = {{"bytes_per_s", shm->bytes_per_s},
                  {"latency_ns", shm->latency_ns + wake + cold},
                  {"transport_latency_ns", shm->latency_ns}};
  }

  if (format == "json") {
    std::printf("%s\n", out.dump(2).c_str());
  } else if (format == "env") {
    // Rounded to 2 significant digits: the machine is noisier than that.
    auto sig2 = [](double v) {
      char b[32];
      std::snprintf(b, sizeof b, "%.1e", v);
      return std::string{b};
    };
    std::printf("cores=%u\n", cores);
    std::printf("flops=%s\n", sig2(flops_all).c_str());
    std::printf("sram_bytes_per_s=%s\n", sig2(stream_all).c_str());
    std::printf("memcpy_bytes_per_s=%s\n", sig2(copy_bps).c_str());
    std::printf("memcpy_latency_ns=%.0f\n", std::max(1.0, copy64));
    std::printf("local_bytes_per_s=%s\n", sig2(copy_bps).c_str());
    std::printf("local_latency_ns=%.0f\n", cold);
    if (out.contains("shm")) {
      std::printf("shm_bytes_per_s=%s\n",
                  sig2(out["shm"]["bytes_per_s"].get<double>()).c_str());
      std::printf("shm_latency_ns=%.0f\n",
                  out["shm"]["latency_ns"].get<double>());
    }
  } else {
    std::printf("calibrate %s (%s): %u cores, %zu chip shards, %.1f MB\n",
                config_file.c_str(), model_name.c_str(), cores,
                shards.shards.size(), shards.bytes / 1e6);
    std::printf("  decode kernel  %.2f GB/s per core with %u cores busy "
                "(one core alone %.2f; ratio %.2f)\n",
                stream_all / 1e9, cores, stream_alone / 1e9,
                stream_all / stream_alone);
    std::printf("  matmul         %.2f GFLOP/s per core, all cores busy\n",
                flops_all / 1e9);
    std::printf("  actor hand-off %.0f ns (work sharing, %u workers); to a "
                "sleeping worker %.0f ns\n",
                handoff, cores, cold);
    std::printf("  process wake   %.0f ns (FUTEX_WAKE to another process)\n",
                wake);
    std::printf("  memcpy         %.1f GB/s (64 KiB), %.0f ns (64 B)\n",
                out["memcpy"]["bytes_per_s"].get<double>() / 1e9, copy64);
    std::printf("  local link     %.1f GB/s, %.0f ns\n", copy_bps / 1e9, cold);
    if (out.contains("shm"))
      std::printf("  shm link       %.2f GB/s, %.0f ns (transport %.0f + "
                  "process wake %.0f + actor wake %.0f)\n",
                  out["shm"]["bytes_per_s"].get<double>() / 1e9,
                  out["shm"]["latency_ns"].get<double>(),
                  out["shm"]["transport_latency_ns"].get<double>(), wake,
                  cold);
  }
  return 0;
}

} // namespace lockstep::bench
