// lockstep-bench transport: the slotted transport against raw libfabric on
// the same endpoints, same provider and same sizes, measured in one run in
// real forked processes; a 64-link fan-out/fan-in pattern across 8
// processes; paced-mode lateness of slot completions; the CPU 8 idle hosts
// use while blocked in wait(); and what a relay's copy would cost against
// the link (host_transport::post_forward avoids it).
//
// Baseline ("raw"): fi_writedata of the same bytes between the same
// registered arenas on the same endpoint and CQ, no slot logic (no table
// lookup, no framing read, no back-pressure credits, no pacing). Streaming
// keeps at most as many raw writes in flight as the slotted run has receive
// buffers (transfers per step x 2), so both move bytes with the same
// buffering.

#include "bench/benches.hpp"
#include "bench/stats.hpp"

#include "transport/detail/cq_data.hpp"
#include "transport/detail/fabric.hpp"
#include "transport/slotted_transport.hpp"
#include "transport/table_builder.hpp"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <thread>

namespace lockstep::bench {

namespace {

using nlohmann::json;
using namespace lockstep::transport;
namespace cq_data = transport::detail::cq_data;

// --- processes
// ----------------------------------------------------------------

// Forks `hosts` processes running body(host, rendezvous dir); returns what
// each printed as JSON (null for a failed host).
std::vector<json> run_procs(
    uint32_t hosts,
    const std::function<json(uint32_t, const std::filesystem::path&)>& body) {
  std::random_device rd;
  auto dir = std::filesystem::temp_directory_path() /
             ("lockstep-bench-" + std::to_string(getpid()) + "-" +
              std::to_string(rd()));
  std::filesystem::create_directories(dir);
  std::fflush(stdout);
  std::fflush(stderr);
  std::vector<pid_t> pids;
  std::vector<int> fds;
  for (uint32_t h = 0; h < hosts; ++h) {
    int p[2];
    if (pipe(p) != 0)
      break;
    pid_t pid = fork();
    if (pid == 0) {
      close(p[0]);
      alarm(300); // a hung benchmark process must not hang the run
      json out;
      try {
        out = body(h, dir);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "host %u: %s\n", h, e.what());
      }
      auto text = out.dump() + "\n";
      if (write(p[1], text.data(), text.size()) < 0)
        _exit(1);
      _exit(out.is_null() ? 1 : 0);
    }
    close(p[1]);
    pids.push_back(pid);
    fds.push_back(p[0]);
  }
  std::vector<json> results;
  for (size_t i = 0; i < pids.size(); ++i) {
    std::string text;
    char buf[4096];
    ssize_t n;
    while ((n = read(fds[i], buf, sizeof(buf))) > 0)
      text.append(buf, static_cast<size_t>(n));
    close(fds[i]);
    waitpid(pids[i], nullptr, 0);
    results.push_back(text.empty() ? json{}
                                   : json::parse(text, nullptr, false));
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return results;
}

[[noreturn]] void die(const std::string& what, const caf::error& err) {
  throw std::runtime_error(what + ": " + render(err));
}

template <class T>
T check(caf::expected<T> v, const std::string& what) {
  if (!v)
    die(what, v.error());
  return std::move(*v);
}

void check(const caf::error& err, const std::string& what) {
  if (err)
    die(what, err);
}

std::unique_ptr<slotted_transport>
open_transport(uint32_t host, const table_spec& spec,
               const transport_settings& settings,
               const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  file_rendezvous rv{dir};
  transport_options opts;
  opts.host = host;
  opts.settings = settings;
  auto prog = check(slot_program::load(build_slot_table(spec)), "load");
  return check(slotted_transport::create(opts, std::move(prog), rv), "create");
}

// --- raw libfabric baseline
// ------------------------------------------------------

// The raw loop reads the CQ itself; the transport only counts entries (raw
// ones may also be polled by the transport's own progress).
struct raw_loop {
  slotted_transport& t;
  fid_cq* cq;

  uint64_t local_done() const { return t.raw_local_completions(); }
  uint64_t remote_seen() const { return t.raw_remote_completions(); }

  uint32_t idle = 0;

  // Same polite idling as the transport (spin, then yield), so both share
  // the 2 cores alike.
  void poll() {
    fi_cq_data_entry e[32];
    auto n = fi_cq_read(cq, e, 32);
    if (n == -FI_EAGAIN) {
      if (++idle >= 256)
        std::this_thread::yield();
      return;
    }
    idle = 0;
    if (n < 0) {
      fi_cq_err_entry err{};
      fi_cq_readerr(cq, &err, 0);
      throw std::runtime_error(std::string{"raw fi_cq_read: "} +
                               fi_strerror(err.err));
    }
    for (ssize_t i = 0; i < n; ++i)
      check(t.absorb_completion(e[i]), "absorb");
  }

  void write(const std::byte* src, size_t bytes, void* desc,
             const slotted_transport::raw_target& dst, uint64_t offset) {
    uint64_t data = uint64_t{3} << 62;
    for (;;) {
      auto ret =
          fi_writedata(t.raw_fabric().ep(), src, bytes, desc, data, dst.addr,
                       dst.remote_base + offset, dst.key, nullptr);
      if (ret == 0)
        return;
      if (ret != -FI_EAGAIN)
        throw std::runtime_error(std::string{"raw fi_writedata: "} +
                                 fi_strerror(static_cast<int>(-ret)));
      poll();
    }
  }
};

// --- pair benchmarks
// ------------------------------------------------------------

constexpr chip_ref chip_a{0, 0};
constexpr chip_ref chip_b{1, 0};

// Ping-pong table: A->B in slot 0, B->A in slot 1, double buffered.
table_spec pingpong_table(uint64_t bytes) {
  table_spec s;
  s.slots_per_step = 2;
  s.arenas = {{chip_a, 2 * bytes, bytes}, {chip_b, 2 * bytes, bytes}};
  s.links.push_back({chip_a, chip_b, {{1, 0, 1, bytes, 0, {0, bytes}}}});
  s.links.push_back({chip_b, chip_a, {{2, 1, 1, bytes, 0, {0, bytes}}}});
  return s;
}

// Streaming table: `k` transfers A->B per step, double buffered.
table_spec stream_table(uint64_t bytes, uint32_t k) {
  table_spec s;
  s.slots_per_step = k;
  // A's 64-byte receive arena only takes the raw run's acknowledgement.
  s.arenas = {{chip_a, 64, k * bytes}, {chip_b, 2 * k * bytes, 0}};
  link_spec l{chip_a, chip_b, {}};
  for (uint32_t j = 0; j < k; ++j)
    l.transfers.push_back(
        {j, j, 1, bytes, j * bytes, {2 * j * bytes, (2 * j + 1) * bytes}});
  s.links.push_back(l);
  return s;
}

// Median one-way latency (half the round trip), us.
json pingpong(uint32_t host, uint64_t bytes, int iters, int reps,
              const transport_settings& settings,
              const std::filesystem::path& dir) {
  auto t = open_transport(host, pingpong_table(bytes), settings, dir);
  raw_loop raw{*t, t->raw_fabric().cq()};
  auto peer = host == 0 ? chip_b : chip_a;
  auto me = host == 0 ? chip_a : chip_b;
  auto target = t->raw_target_of(peer);
  auto* src = t->raw_send_base(me);
  auto* desc = t->raw_send_desc(me);
  uint64_t step = 0;
  auto slotted_round = [&] {
    if (host == 0) {
      check(t->send(0, 0, step, payload_bytes_of(bytes)), "send");
      check(t->receive(1, 1, step), "receive");
    } else {
      check(t->receive(0, 0, step), "receive");
      check(t->send(1, 1, step, payload_bytes_of(bytes)), "send");
    }
    check(t->release(step), "release");
    ++step;
  };
  uint64_t expect = 0;
  auto raw_round = [&] {
    ++expect;
    if (host == 0) {
      raw.write(src, bytes, desc, target, 0);
      while (raw.remote_seen() < expect)
        raw.poll();
    } else {
      while (raw.remote_seen() < expect)
        raw.poll();
      raw.write(src, bytes, desc, target, 0);
    }
  };
  std::vector<double> slotted_us, raw_us;
  for (int i = 0; i < std::max(10, iters / 10); ++i) {
    slotted_round();
    raw_round();
  }
  for (int r = 0; r < reps; ++r) {
    double t0 = now_s();
    for (int i = 0; i < iters; ++i)
      slotted_round();
    double t1 = now_s();
    for (int i = 0; i < iters; ++i)
      raw_round();
    double t2 = now_s();
    slotted_us.push_back((t1 - t0) / iters / 2 * 1e6);
    raw_us.push_back((t2 - t1) / iters / 2 * 1e6);
  }
  while (raw.local_done() < expect)
    raw.poll();
  check(t->close(), "close");
  // Paired differences: each repetition measures both back to back, so
  // load changes on this shared machine mostly cancel.
  std::vector<double> added;
  for (size_t i = 0; i < slotted_us.size(); ++i)
    added.push_back(slotted_us[i] - raw_us[i]);
  return {{"slotted_latency_us", median(slotted_us)},
          {"raw_latency_us", median(raw_us)},
          {"added_latency_us", median(added)},
          // Best of the repetitions: the intrinsic cost when the shared
          // machine's other load does not interfere.
          {"added_latency_us_best",
           *std::min_element(slotted_us.begin(), slotted_us.end()) -
               *std::min_element(raw_us.begin(), raw_us.end())}};
}

// Streaming bandwidth A->B, GB/s, measured at A until B has everything.
json stream(uint32_t host, uint64_t bytes, uint32_t k, uint64_t steps, int reps,
            const transport_settings& settings,
            const std::filesystem::path& dir) {
  auto t = open_transport(host, stream_table(bytes, k), settings, dir);
  raw_loop raw{*t, t->raw_fabric().cq()};
  auto* src = t->raw_send_base(host == 0 ? chip_a : chip_b);
  auto* desc = t->raw_send_desc(host == 0 ? chip_a : chip_b);
  auto to_b = t->raw_target_of(chip_b);
  auto to_a = t->raw_target_of(chip_a);
  uint64_t step = 0;
  uint64_t raw_expect = 0;
  uint64_t raw_sent = 0;
  auto slotted_run = [&] {
    for (uint64_t s = 0; s < steps; ++s, ++step)
      for (uint32_t j = 0; j < k; ++j) {
        if (host == 0) {
          check(t->send_buffer(0, j), "send_buffer");
          check(t->send(0, j, step, payload_bytes_of(bytes)), "send");
        } else {
          check(t->receive(0, j, step), "receive");
          if (j + 1 == k)
            check(t->release(step), "release");
        }
      }
    if (host == 0)
      while (t->released_through(0) < static_cast<int64_t>(step) - 1)
        check(t->progress(), "progress");
  };
  auto raw_run = [&] {
    uint64_t n = steps * k;
    if (host == 0) {
      for (uint64_t i = 0; i < n; ++i) {
        while (raw_sent - raw.local_done() >= 2 * k)
          raw.poll();
        raw.write(src + (i % k) * bytes, bytes, desc, to_b,
                  (i % (2 * k)) * bytes);
        ++raw_sent;
      }
      ++raw_expect; // B's acknowledgement
      while (raw.remote_seen() < raw_expect)
        raw.poll();
    } else {
      raw_expect += n;
      while (raw.remote_seen() < raw_expect)
        raw.poll();
      // Acknowledge with 8 bytes into A's small receive arena.
      raw.write(src, 8, desc, to_a, 0);
      ++raw_sent;
    }
  };
  std::vector<double> slotted_gbs, raw_gbs;
  slotted_run(); // warm-up
  raw_run();
  for (int r = 0; r < reps; ++r) {
    double t0 = now_s();
    slotted_run();
    double t1 = now_s();
    raw_run();
    double t2 = now_s();
    double total = static_cast<double>(steps * k * bytes);
    slotted_gbs.push_back(total / (t1 - t0) / 1e9);
    raw_gbs.push_back(total / (t2 - t1) / 1e9);
  }
  while (raw.local_done() < raw_sent)
    raw.poll();
  check(t->close(), "close");
  std::vector<double> ratios;
  for (size_t i = 0; i < slotted_gbs.size(); ++i)
    ratios.push_back(slotted_gbs[i] / raw_gbs[i]);
  return {{"slotted_gbs", median(slotted_gbs)},
          {"raw_gbs", median(raw_gbs)},
          {"bw_ratio", median(ratios)},
          {"bw_ratio_best",
           *std::max_element(slotted_gbs.begin(), slotted_gbs.end()) /
               *std::max_element(raw_gbs.begin(), raw_gbs.end())}};
}

// --- fan-out / fan-in across 8 processes -------------------------------------

json fan(uint32_t host, uint64_t payload, uint64_t steps,
         const transport_settings& settings, const std::filesystem::path& dir) {
  auto spec = ring_pattern(8, 2, 4, 1, payload);
  auto t = open_transport(host, spec, settings, dir);
  auto program = t->program().host_program(host);
  uint64_t step = 0;
  auto run = [&](uint64_t n) {
    for (uint64_t s = 0; s < n; ++s, ++step) {
      for (const auto& op : program) {
        if (op.send) {
          auto buf = check(t->send_buffer(op.link, op.start_slot), "buffer");
          check(t->send(op.link, op.start_slot, step, buf.size()), "send");
        } else {
          check(t->receive(op.link, op.start_slot, step), "receive");
        }
      }
      check(t->release(step), "release");
    }
  };
  run(20);
  double t0 = now_s();
  run(steps);
  double elapsed = now_s() - t0;
  check(t->close(), "close");
  return {{"elapsed_s", elapsed}, {"links", spec.links.size()}};
}

// --- paced-mode lateness
// --------------------------------------------------------

double percentile(std::vector<int64_t> v, double p) {
  if (v.empty())
    return 0;
  std::sort(v.begin(), v.end());
  auto i = static_cast<size_t>(p * static_cast<double>(v.size() - 1));
  return static_cast<double>(v[i]);
}

json paced(uint32_t host, uint64_t slot_us, uint64_t steps,
           const std::filesystem::path& dir) {
  transport_settings settings;
  settings.mode = slot_mode::paced;
  settings.slot_ns = slot_us * 1000;
  // Each host feeds the other: 4 transfers of 4 KiB per link and step.
  auto spec = ring_pattern(2, 1, 1, 4, 4096 - 24);
  auto t = open_transport(host, spec, settings, dir);
  auto program = t->program().host_program(host);
  for (uint64_t step = 0; step < steps; ++step) {
    for (const auto& op : program) {
      if (op.send) {
        auto buf = check(t->send_buffer(op.link, op.start_slot), "buffer");
        check(t->send(op.link, op.start_slot, step, buf.size()), "send");
      } else {
        check(t->receive(op.link, op.start_slot, step), "receive");
      }
    }
    check(t->release(step), "release");
  }
  const auto& late = t->lateness_samples();
  uint64_t misses = 0;
  for (uint32_t l = 0; l < t->program().links().size(); ++l)
    misses += t->counters(l).slot_misses;
  json out{
      {"p50_lateness_us", percentile(late, 0.5) / 1e3},
      {"p99_lateness_us", percentile(late, 0.99) / 1e3},
      {"max_lateness_us", percentile(late, 1.0) / 1e3},
      {"misses", misses},
      {"completions", late.size()},
      {"clock_error_us", static_cast<double>(t->clock().error_ns) / 1e3},
      {"clock_offset_us", static_cast<double>(t->clock().offset_ns) / 1e3}};
  check(t->close(), "close");
  return out;
}

// --- idle cost
// ------------------------------------------------------------------

// One of 8 hosts of a 64-chip pattern, blocked in wait() for `seconds`
// with nothing to do: its own CPU time (all threads) over that window.
json idle(uint32_t host, const transport_settings& settings, double seconds,
          const std::filesystem::path& dir) {
  auto t = open_transport(host, ring_pattern(8, 8, 4, 1, 4096), settings, dir);
  auto cpu_s = [] {
    rusage r{};
    getrusage(RUSAGE_SELF, &r);
    return static_cast<double>(r.ru_utime.tv_sec + r.ru_stime.tv_sec) +
           static_cast<double>(r.ru_utime.tv_usec + r.ru_stime.tv_usec) * 1e-6;
  };
  auto& ht = t->transport();
  double c0 = cpu_s(), t0 = now_s();
  std::vector<transport_event> events;
  while (now_s() - t0 < seconds) {
    events.clear();
    check(ht.wait(events, std::chrono::nanoseconds(static_cast<int64_t>(
                              (seconds - (now_s() - t0)) * 1e9))),
          "wait");
  }
  json out{{"cpu_s", cpu_s() - c0},
           {"wall_s", now_s() - t0},
           {"sleeps", ht.counters().idle_sleeps}};
  check(t->close(), "close");
  return out;
}

// memcpy of `bytes` between two page-aligned buffers (what a relay's
// forward op costs when it copies a received payload into a send window),
// GB/s, best of a few repetitions of ~50 ms each.
double copy_gbs(uint64_t bytes) {
  auto a = check(detail::mapped_buffer::allocate(bytes), "alloc");
  auto b = check(detail::mapped_buffer::allocate(bytes), "alloc");
  std::memset(a.data(), 1, bytes);
  std::memset(b.data(), 2, bytes);
  double best = 0;
  for (int r = 0; r < 5; ++r) {
    uint64_t n = 0;
    double t0 = now_s();
    while (now_s() - t0 < 0.05) {
      std::memcpy(b.data(), a.data(), bytes);
      ++n;
    }
    best =
        std::max(best, static_cast<double>(n * bytes) / (now_s() - t0) / 1e9);
  }
  return best;
}

std::string size_label(uint64_t bytes) {
  return bytes >= (1u << 20) ? std::to_string(bytes >> 20) + "m"
                             : std::to_string(bytes >> 10) + "k";
}

} // namespace

int run_transport(int argc, char** argv) {
  CLI::App app{"lockstep-bench transport"};
  std::string output = "text";
  bool quick = false;
  app.add_option("-o,--output", output, "text or json")
      ->check(CLI::IsMember({"text", "json"}));
  app.add_flag("--quick", quick, "fewer sizes and repetitions");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  bool text = output == "text";
  json out;
  std::vector<uint64_t> sizes{4096, 65536, 1u << 20, 16u << 20};
  if (!quick)
    sizes.insert(sizes.begin() + 2, 262144);
  int reps = quick ? 3 : 7;
  struct prov {
    const char* key;
    const char* name;
  };
  for (auto p : {prov{"shm", "shm"}, prov{"tcp", "tcp;ofi_rxm"}}) {
    transport_settings settings;
    settings.provider = p.name;
    json rows = json::array();
    if (text)
      std::printf("%s: size  lat slotted/raw us  added us | bw slotted/raw "
                  "GB/s  ratio (medians of paired runs)\n",
                  p.name);
    for (auto bytes : sizes) {
      int iters = static_cast<int>(
          std::clamp<uint64_t>((32u << 20) / bytes, 10, quick ? 500 : 2000));
      auto pp = run_procs(2, [&](uint32_t h, const std::filesystem::path& d) {
        return pingpong(h, bytes, iters, reps, settings, d / "pp");
      });
      uint32_t k = static_cast<uint32_t>(
          std::clamp<uint64_t>((64u << 20) / bytes, 1, 8));
      uint64_t total = quick ? (32u << 20) : (64u << 20);
      uint64_t steps = std::max<uint64_t>(4, total / (k * bytes));
      auto st = run_procs(2, [&](uint32_t h, const std::filesystem::path& d) {
        return stream(h, bytes, k, steps, reps, settings, d / "st");
      });
      if (pp[0].is_null() || st[0].is_null()) {
        std::fprintf(stderr, "%s %s: a benchmark process failed\n", p.name,
                     size_label(bytes).c_str());
        return 1;
      }
      double sl = pp[0]["slotted_latency_us"], rl = pp[0]["raw_latency_us"];
      double added = pp[0]["added_latency_us"];
      double sb = st[0]["slotted_gbs"], rb = st[0]["raw_gbs"];
      double ratio = st[0]["bw_ratio"];
      json row{{"bytes", bytes},       {"slotted_latency_us", sl},
               {"raw_latency_us", rl}, {"added_latency_us", added},
               {"slotted_gbs", sb},    {"raw_gbs", rb},
               {"bw_ratio", ratio}};
      row["bw_ratio_best"] = st[0]["bw_ratio_best"];
      row["added_latency_us_best"] = pp[0]["added_latency_us_best"];
      rows.push_back(row);
      auto label = size_label(bytes);
      out[p.key]["bw_ratio_" + label] = ratio;
      out[p.key]["added_latency_us_" + label] = added;
      out[p.key]["bw_ratio_best_" + label] = st[0]["bw_ratio_best"];
      out[p.key]["added_latency_us_best_" + label] =
          pp[0]["added_latency_us_best"];
      if (text)
        std::printf("  %6s  %8.2f / %8.2f  %6.2f | %6.2f / %6.2f  %5.3f  "
                    "(best: %.2f us, %.3f)\n",
                    label.c_str(), sl, rl, added, sb, rb, ratio,
                    row["added_latency_us_best"].get<double>(),
                    row["bw_ratio_best"].get<double>());
    }
    out[p.key]["sizes"] = rows;
  }

  // 64 links across 8 processes, 64 KiB transfers.
  {
    transport_settings settings;
    uint64_t steps = quick ? 100 : 300;
    uint64_t bytes = 65536;
    auto res = run_procs(8, [&](uint32_t h, const std::filesystem::path& d) {
      return fan(h, bytes - 24, steps, settings, d / "fan");
    });
    double worst = 0;
    for (const auto& r : res) {
      if (r.is_null()) {
        std::fprintf(stderr, "fan-out/fan-in: a process failed\n");
        return 1;
      }
      worst = std::max(worst, r["elapsed_s"].get<double>());
    }
    double total = 64.0 * static_cast<double>(steps * bytes);
    out["fan"] = {{"processes", 8},
                  {"links", 64},
                  {"bytes_per_transfer", bytes},
                  {"step_us", worst / static_cast<double>(steps) * 1e6},
                  {"aggregate_gbs", total / worst / 1e9}};
    if (text)
      std::printf("fan-out/fan-in, 8 processes, 64 links x 64 KiB: %.1f us "
                  "per step, %.2f GB/s aggregate\n",
                  worst / static_cast<double>(steps) * 1e6,
                  total / worst / 1e9);
  }

  // Idle: 8 hosts blocked in wait(), CPU summed over the processes.
  {
    json runs = json::object();
    double seconds = quick ? 1.0 : 3.0;
    for (auto p : {prov{"shm", "shm"}, prov{"tcp", "tcp;ofi_rxm"}}) {
      transport_settings settings;
      settings.provider = p.name;
      auto res = run_procs(8, [&](uint32_t h, const std::filesystem::path& d) {
        return idle(h, settings, seconds, d / "idle");
      });
      double cpu = 0, wall = 0;
      uint64_t sleeps = 0;
      for (const auto& r : res) {
        if (r.is_null()) {
          std::fprintf(stderr, "idle %s: a process failed\n", p.name);
          return 1;
        }
        cpu += r["cpu_s"].get<double>();
        wall = std::max(wall, r["wall_s"].get<double>());
        sleeps += r["sleeps"].get<uint64_t>();
      }
      runs[p.key] = {{"hosts", 8},
                     {"core_percent", 100 * cpu / wall},
                     {"cpu_ms", cpu * 1e3},
                     {"wall_s", wall},
                     {"sleeps", sleeps}};
      if (text)
        std::printf("idle, 8 hosts blocked in wait() for %.1f s (%s): %.2f%% "
                    "of one core in sum, %llu sleeps\n",
                    wall, p.name, 100 * cpu / wall,
                    static_cast<unsigned long long>(sleeps));
    }
    out["idle"] = runs;
  }

  // Relays: the copy a forward op would make, against the link's rate.
  {
    json rows = json::array();
    for (auto bytes : sizes) {
      double gbs = copy_gbs(bytes);
      json row{{"bytes", bytes}, {"copy_gbs", gbs}};
      for (const auto& r : out["shm"]["sizes"])
        if (r["bytes"] == bytes)
          row["shm_link_gbs"] = r["slotted_gbs"];
      rows.push_back(row);
      if (text)
        std::printf("relay copy %6s: memcpy %.1f GB/s (shm link %.1f GB/s)\n",
                    size_label(bytes).c_str(), gbs,
                    row.value("shm_link_gbs", 0.0));
    }
    out["forward_copy"] = rows;
  }

  // Paced mode: lateness of completions against their slot deadlines.
  {
    json runs = json::array();
    uint64_t chosen = 0;
    json chosen_run;
    // Slot lengths tried, shortest first; 2 processes on 2 shared cores.
    for (uint64_t slot_us : {50, 100, 200, 500, 1000}) {
      uint64_t steps = std::max<uint64_t>(40, 400'000 / (slot_us * 8));
      auto res = run_procs(2, [&](uint32_t h, const std::filesystem::path& d) {
        return paced(h, slot_us, steps, d / "paced");
      });
      if (res[0].is_null() || res[1].is_null()) {
        std::fprintf(stderr, "paced %llu us: a process failed\n",
                     static_cast<unsigned long long>(slot_us));
        return 1;
      }
      json run = res[0];
      run["slot_us"] = slot_us;
      // Clock alignment as host 1 measured it against host 0.
      run["clock_error_us"] = res[1]["clock_error_us"];
      run["clock_offset_us"] = res[1]["clock_offset_us"];
      run["misses"] =
          res[0]["misses"].get<uint64_t>() + res[1]["misses"].get<uint64_t>();
      run["completions"] = res[0]["completions"].get<uint64_t>() +
                           res[1]["completions"].get<uint64_t>();
      run["p99_lateness_us"] =
          std::max(res[0]["p99_lateness_us"].get<double>(),
                   res[1]["p99_lateness_us"].get<double>());
      // Completion time after the slot started (transfers here are one slot
      // long, so this is lateness + slot length): the jitter itself.
      run["p99_after_slot_start_us"] =
          run["p99_lateness_us"].get<double>() + static_cast<double>(slot_us);
      run["p50_after_slot_start_us"] =
          run["p50_lateness_us"].get<double>() + static_cast<double>(slot_us);
      runs.push_back(run);
      double miss_rate = run["misses"].get<double>() /
                         std::max(1.0, run["completions"].get<double>());
      if (text)
        std::printf("paced %4llu us slots: p50 %.1f us, p99 %.1f us after "
                    "deadline, %.2f%% misses, clock error %.2f us\n",
                    static_cast<unsigned long long>(slot_us),
                    run["p50_lateness_us"].get<double>(),
                    run["p99_lateness_us"].get<double>(), 100 * miss_rate,
                    run["clock_error_us"].get<double>());
      // Sustainable: the shortest slot with under 1% misses.
      if (chosen == 0 && miss_rate < 0.01) {
        chosen = slot_us;
        chosen_run = run;
      }
    }
    if (chosen == 0) {
      chosen = 1000;
      chosen_run = runs.back();
    }
    out["paced"] = {
        {"slot_us", chosen},
        {"p99_after_slot_start_us", chosen_run["p99_after_slot_start_us"]},
        {"misses", chosen_run["misses"]},
        {"completions", chosen_run["completions"]},
        {"p50_lateness_us", chosen_run["p50_lateness_us"]},
        {"p99_lateness_us", chosen_run["p99_lateness_us"]},
        {"runs", runs}};
  }
  if (!text)
    std::printf("%s\n", out.dump(2).c_str());
  return 0;
}

} // namespace lockstep::bench
