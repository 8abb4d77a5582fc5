// Paced mode of host_transport with clock trouble compressed into seconds:
// hosts with offset and drifting clocks (test hooks), the periodic re-sync
// with a drift estimate, its control without re-sync, and a late send.
// Wall-clock deadlines: these tests run alone (RUN_SERIAL), and a run that
// misses slots is repeated (up to `attempts` in all) before it fails: other
// processes on this shared 2-core machine (compilers of other worktrees,
// load average 8 at times) stall ours by tens of milliseconds now and then,
// which no slot length short of that absorbs. A real fault — a wrong epoch
// sign, a missing re-sync, a mis-stamped arrival — misses slots in every
// run (the control without re-sync misses dozens each time). When every
// run missed under heavy CPU pressure the test is skipped, saying why.

#include "host_cluster.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>

using namespace lockstep;
using namespace lockstep::transport;
using namespace lockstep::transport::test;
using namespace std::chrono_literals;

namespace {

// Four hosts whose clocks are off by milliseconds and drift by 3-4 ms per
// second against each other (test hooks; real crystals drift ~100 times
// less): over the ~8 s run the drift alone moves host 1 by 32 ms, more than
// a slot. Slots are 20 ms: on this machine's 2 shared cores a sleeping
// progress thread is woken late now and then — libfabric's shm provider
// stalls for a scheduler tick or two (4-8 ms: a process preempted inside the
// spinlock of a shared-memory queue while its peers spin on it; measured by
// timing the fi_* calls), and on this VM wake-ups of 10-17 ms were seen
// (10 ms slots missed 1-6 of 400 arrivals in 3 runs of 3) — and a paced slot
// must absorb that.
run_config drifting_clocks(bool resync) {
  run_config cfg;
  cfg.table = build_slot_table(ring_pattern(4, 1, 2, 1, 4096));
  cfg.settings = settings("shm", slot_mode::paced, 20'000, 5000);
  cfg.steps = 200; // 2 slots per step: 8 s
  cfg.clock_offsets_ns = {-3'000'000, 7'000'000, 2'000'000, -5'000'000};
  cfg.clock_drift_ppb = {0, 4'000'000, -3'500'000, 3'000'000};
  cfg.resync = resync;
  return cfg;
}

int report_paced(uint32_t host, host_transport& t, uint64_t& misses) {
  auto late = t.lateness_samples();
  misses = 0;
  for (uint32_t l = 0; l < t.program().links().size(); ++l)
    misses += t.counters(l).slot_misses;
  auto c = t.clock();
  std::fprintf(stderr,
               "host %u: %llu misses of %zu arrivals; lateness p50 %.0f us, "
               "p99 %.0f us, max %.0f us; offset %lld ns, drift %lld ppb, "
               "error %llu ns, %llu re-syncs\n",
               host, (unsigned long long)misses, late.size(),
               percentile(late, 0.5) / 1e3, percentile(late, 0.99) / 1e3,
               percentile(late, 1.0) / 1e3, (long long)c.offset_ns,
               (long long)c.drift_ppb, (unsigned long long)c.error_ns,
               (unsigned long long)c.resyncs);
  return 0;
}

constexpr int attempts = 3;

// Share of the wall time during which some task waited for a CPU
// (/proc/pressure/cpu "some"), or -1 where PSI is unavailable.
struct cpu_pressure {
  double total_us = -1;
  std::chrono::steady_clock::time_point at = std::chrono::steady_clock::now();
  static cpu_pressure now() {
    cpu_pressure p;
    std::ifstream in{"/proc/pressure/cpu"};
    std::string word;
    while (in >> word)
      if (word.rfind("total=", 0) == 0) {
        p.total_us = std::stod(word.substr(6));
        break; // the "some" line comes first
      }
    return p;
  }
  double since(const cpu_pressure& start) const {
    if (total_us < 0 || start.total_us < 0)
      return -1;
    auto wall_us =
        std::chrono::duration<double, std::micro>(at - start.at).count();
    return (total_us - start.total_us) / wall_us;
  }
};

/// Runs the cluster until a run passes, at most `attempts` times. If every
/// run missed while tasks waited for a CPU more than a quarter of the time
/// (other sessions' load: PSI), the machine could not keep wall-clock
/// deadlines and the test is skipped, saying so; otherwise it fails.
void run_paced(uint32_t hosts, const run_config& cfg) {
  double least_pressure = 1e9;
  for (int i = 1; i <= attempts; ++i) {
    auto start = cpu_pressure::now();
    if (run_cluster(hosts, cfg, 180s, false))
      return;
    auto pressure = cpu_pressure::now().since(start);
    least_pressure = std::min(least_pressure, pressure);
    std::fprintf(stderr, "run %d of %d missed (CPU pressure %.0f%%)\n", i,
                 attempts, 100 * pressure);
  }
  if (least_pressure >= 0.25)
    GTEST_SKIP() << "every run missed slots while tasks waited for a CPU "
                 << static_cast<int>(100 * least_pressure)
                 << "% of the time or more: this machine is too loaded to "
                    "keep paced deadlines (not a transport verdict)";
  ADD_FAILURE() << "paced runs missed slots in all " << attempts
                << " attempts (CPU pressure at least "
                << static_cast<int>(100 * least_pressure) << "%)";
}

} // namespace

TEST(paced_host_transport, offset_and_drifting_clocks_miss_no_slot) {
  auto cfg = drifting_clocks(true);
  cfg.check = [&](uint32_t host, host_transport& t, const host_memory&,
                  const caf::error& err) {
    if (int rc = expect_all_received(host, t, err, cfg.steps))
      return rc;
    uint64_t misses = 0;
    report_paced(host, t, misses);
    CHILD_CHECK(misses == 0, 90, "%llu slot misses",
                (unsigned long long)misses);
    if (host > 0) {
      // Host 0's clock runs (1 + rate) times as fast as this one's:
      // rate ~ -drift of this host (host 0 does not drift).
      auto expected = -cfg.clock_drift_ppb[host];
      auto c = t.clock();
      CHILD_CHECK(std::llabs(c.drift_ppb - expected) < 50'000, 91,
                  "drift estimate %lld ppb, expected %lld +- 50000",
                  (long long)c.drift_ppb, (long long)expected);
      CHILD_CHECK(c.resyncs >= 3, 92, "%llu re-syncs",
                  (unsigned long long)c.resyncs);
    }
    return 0;
  };
  run_paced(4, cfg);
}

TEST(paced_host_transport, without_resync_drifting_clocks_miss_slots) {
  // The control for the test above: the same clocks aligned only once at
  // start-up drift apart by more than a slot, and arrivals are counted late.
  auto cfg = drifting_clocks(false);
  cfg.check = [&](uint32_t host, host_transport& t, const host_memory&,
                  const caf::error& err) {
    if (int rc = expect_all_received(host, t, err, cfg.steps))
      return rc;
    uint64_t misses = 0;
    report_paced(host, t, misses);
    CHILD_CHECK(t.clock().resyncs == 0, 93, "re-synced");
    // Host 1's clock runs fast: its deadlines come early. Host 0 hears
    // from host 2, whose slow clock sends late.
    if (host <= 1)
      CHILD_CHECK(misses > 0, 94, "no misses without re-sync");
    return 0;
  };
  run_cluster(4, cfg, 180s);
}

TEST(paced_host_transport, delayed_send_is_the_one_counted_miss) {
  run_config cfg;
  cfg.table = build_slot_table(ring_pattern(2, 1, 1, 1, 4096));
  cfg.settings = settings("shm", slot_mode::paced, 10'000, 5000);
  cfg.steps = 60;
  cfg.clock_offsets_ns = {2'000'000, -4'000'000};
  cfg.clock_drift_ppb = {0, 300'000};
  // Link 0 (h0.c0 -> h1.c0, slot 1, deadline slot 2): step 30 leaves 1.5
  // slots after its slot starts, half a slot after its deadline.
  cfg.hooks = [](uint32_t host, const slot_program&) {
    threaded_hooks h;
    h.delay_ns = [host](uint64_t step, uint32_t transfer) -> int64_t {
      return host == 0 && step == 30 && transfer == 0 ? 15'000'000 : 0;
    };
    return h;
  };
  cfg.check = [&](uint32_t host, host_transport& t, const host_memory&,
                  const caf::error& err) {
    if (int rc = expect_all_received(host, t, err, cfg.steps))
      return rc;
    uint32_t in = host == 1 ? 0 : 1;
    auto c = t.counters(in);
    std::fprintf(stderr,
                 "host %u: link %u: %llu misses, max lateness %lld us\n", host,
                 in, (unsigned long long)c.slot_misses,
                 (long long)c.max_lateness_ns / 1000);
    if (host == 1) {
      CHILD_CHECK(c.slot_misses == 1, 95, "%llu misses on the delayed link",
                  (unsigned long long)c.slot_misses);
      CHILD_CHECK(
          c.max_lateness_ns > 2'500'000 && c.max_lateness_ns < 15'000'000, 96,
          "lateness %lld ns, expected ~5 ms", (long long)c.max_lateness_ns);
    } else {
      CHILD_CHECK(c.slot_misses == 0, 97, "%llu misses",
                  (unsigned long long)c.slot_misses);
    }
    return 0;
  };
  run_paced(2, cfg);
}
