#pragma once

// Test harness for host_transport clusters: one forked process per host,
// each creating its transport over test-owned arenas and running the
// table with a progress thread and chip workers (threaded_host.hpp), then
// checking, closing and proving no registration leaked; the parent checks
// exit codes and /dev/shm.

#include "multi_host.hpp"
#include "threaded_host.hpp"

#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace lockstep::transport::test {

struct run_config {
  std::vector<std::byte> table;
  transport_settings settings;
  uint64_t steps = 10;
  std::vector<int64_t> clock_offsets_ns; // per host, optional
  std::vector<int64_t> clock_drift_ppb;  // per host, optional
  bool resync = true;                    // paced: periodic re-sync
  std::function<threaded_hooks(uint32_t host, const slot_program&)> hooks;
  // Checks after the run; the transport is still open. 0 if fine.
  std::function<int(uint32_t, host_transport&, const host_memory&,
                    const caf::error&)>
      check;
};

/// Runs every host in its own process; returns whether all exited 0 (and,
/// with `report`, gtest-asserts it). /dev/shm must hold nothing of theirs
/// afterwards (always asserted).
bool run_cluster(uint32_t hosts, const run_config& cfg,
                 std::chrono::seconds timeout = std::chrono::seconds(120),
                 bool report = true);

/// Every transfer into and out of `host` went once per step, none refused.
int expect_all_received(uint32_t host, host_transport& t, const caf::error& err,
                        uint64_t steps);

/// True if render(err) contains `text` (else prints both).
bool contains(const caf::error& err, const std::string& text);

double percentile(std::vector<int64_t> v, double p);

} // namespace lockstep::transport::test
