#pragma once

// Test harness: really forks one process per host, runs a slot table
// through the slotted transport in each, and collects exit codes. Children
// report failures on stderr and through their exit code (gtest assertions
// stay in the parent).

#include "transport/slotted_transport.hpp"
#include "transport/table_builder.hpp"

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <set>
#include <string>
#include <vector>

namespace lockstep::transport::test {

/// Forks `hosts` children running body(host); returns their exit codes
/// (128 + signal when killed; 124 when killed for exceeding `timeout`).
std::vector<int> run_hosts(uint32_t hosts,
                           const std::function<int(uint32_t)>& body,
                           std::chrono::seconds timeout,
                           std::vector<int>* pids_out = nullptr);

/// A fresh rendezvous directory, removed on destruction.
class temp_dir {
public:
  temp_dir();
  ~temp_dir();
  const std::filesystem::path& path() const { return path_; }

private:
  std::filesystem::path path_;
};

/// The pattern key of a transfer's send window: transfers that share a
/// window (one output sent on several links) carry the same bytes.
uint32_t window_key(const slot_program& program, const transfer_plan& tp);

/// Deterministic payload word `i` of transfer `id` at `step`.
uint64_t pattern_word(uint32_t id, uint64_t step, size_t i);
void fill_payload(std::span<std::byte> p, uint32_t id, uint64_t step);
bool check_payload(std::span<const std::byte> p, uint32_t id, uint64_t step);

struct drive_hooks {
  /// Called before each send (e.g. to inject a delay).
  std::function<void(uint64_t step, const slot_op&)> before_send;
  /// Called after each receive, before verifying (e.g. a slow consumer).
  std::function<void(slotted_transport&, uint64_t step, const slot_op&)>
      after_receive;
  /// Skip this send (to provoke a missing delivery).
  std::function<bool(uint64_t step, const slot_op&)> skip_send;
};

/// Runs `steps` steps of the host's program with verified payloads.
caf::error drive(slotted_transport& t, uint64_t steps,
                 const drive_hooks& hooks = {});

/// Names in /dev/shm.
std::set<std::string> shm_entries();

/// /dev/shm segments libfabric's shm provider created for these processes
/// (it names them "<pid>:<ep>:<n>") and their doorbells
/// ("lockstep-bell-<pid>-...") that still exist.
std::vector<std::string> shm_segments_of(const std::vector<int>& pids);

/// Prints `what: render(err)` to stderr and returns `code`.
int fail(const std::string& what, const caf::error& err, int code = 1);

/// In a host's child process (where `host` names it): returns `code` with
/// a line naming the failed condition unless `cond` holds.
#define CHILD_CHECK(cond, code, ...)                                           \
  do {                                                                         \
    if (!(cond)) {                                                             \
      std::fprintf(stderr, "host %u: check failed (%s): ", host, #cond);       \
      std::fprintf(stderr, __VA_ARGS__);                                       \
      std::fprintf(stderr, "\n");                                              \
      return code;                                                             \
    }                                                                          \
  } while (false)

/// Transport settings for the tests' clusters.
transport_settings settings(const char* provider, slot_mode mode,
                            uint64_t slot_us, uint64_t hard_timeout_ms);

} // namespace lockstep::transport::test
