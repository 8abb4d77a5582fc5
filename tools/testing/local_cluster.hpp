#pragma once

// A cluster of `lockstepd` processes on this machine, for tests, benchmarks
// and anyone who runs multi-process experiments: the C++ twin of
//
//   export LOCKSTEP_CONTEXT=$(mktemp -d)/context.json
//   lockstep up cluster_configs/local-64.yaml --model tiny-64
//   lockstep generate --prompt-tokens 1,2,3 --max-tokens 8
//   lockstep status -o json
//   lockstep down
//
// start() runs `lockstep up` with a context file of its own (so it never
// sees, or stops, a cluster someone else has up) and returns once every host
// is ready; generate() and status() talk to the head through the client
// library; stop() (and the destructor) runs `lockstep down`, SIGKILLs any
// host still running after it and removes the working directory it made:
// nothing is left behind on any exit path.
//
// Link with the CMake target `lockstep_local_cluster`. Thread-safety:
// generate() and status() may run from several threads at once (each opens
// its own connection to the head: concurrent requests); the rest, one call
// at a time. spawn_cli() children run on their own.

#include "actors/client.hpp"

#include <caf/expected.hpp>
#include <nlohmann/json.hpp>

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace lockstep::testing {

struct cluster_options {
  std::string config; // a YAML path, or a shipped name ("local-64")
  std::string model;  // preset, e.g. "tiny-64"
  uint32_t batch = 1;
  uint32_t context = 0;   // KV tokens per sequence; 0: the model's
  uint64_t paced_slot_us = 0; // 0: logical slots; else paced, this long
  uint32_t max_queue = 64;    // requests waiting for a batch slot at most
  uint64_t weight_seed = 42;
  /// Context file, stores and logs. Empty: a fresh directory under
  /// $TMPDIR, removed by stop(). Given: kept (stores are reused).
  std::filesystem::path work_dir;
  /// Further `lockstep up` arguments.
  std::vector<std::string> extra_args;
  /// The `lockstep` binary. Empty: $LOCKSTEP_CLI, else the one this
  /// library was built with, else `lockstep` beside the running executable.
  std::filesystem::path cli;
};

/// One finished CLI run.
struct cli_output {
  int code = -1; // exit code, or 128 + signal
  std::string out, err;
};

/// A `lockstep` child running on its own (e.g. a `generate` to interrupt).
class cli_process {
public:
  cli_process(pid_t pid, std::filesystem::path out, std::filesystem::path err)
      : pid_(pid)
      , out_(std::move(out))
      , err_(std::move(err)) {}
  cli_process(cli_process&& other) noexcept;
  cli_process& operator=(cli_process&&) = delete;
  /// SIGKILLs and reaps the child if nobody waited for it.
  ~cli_process();

  pid_t pid() const { return pid_; }
  /// Sends `sig` (SIGINT: what a terminal's Ctrl-C does).
  void signal(int sig) const;
  /// Waits for the child to end; timed_out (the child is then killed)
  /// after `timeout`.
  caf::expected<cli_output> wait(std::chrono::milliseconds timeout);

private:
  pid_t pid_ = -1;
  std::filesystem::path out_, err_;
};

/// What the kernel says about one host process.
struct process_figures {
  pid_t pid = 0;
  uint64_t rss_bytes = 0;      // VmRSS
  uint64_t peak_rss_bytes = 0; // VmHWM
  double cpu_s = 0;            // user + system, every thread
};

class local_cluster {
public:
  /// Runs `lockstep up` and waits until every host is ready. Errors:
  /// cluster_failed with `up`'s own last line (bad config or model, a
  /// host that failed; exit code in the text).
  static caf::expected<local_cluster> start(cluster_options o);

  local_cluster(local_cluster&& other) noexcept;
  local_cluster& operator=(local_cluster&&) = delete;
  ~local_cluster();

  /// One request through the client library (tokens, logits hash, TTFT,
  /// per-token arrival times). Errors as cluster_client::generate.
  caf::expected<actors::cluster_generation>
  generate(const std::vector<int32_t>& prompt, uint32_t max_tokens,
           const model::sampling_params& sampling = {});

  /// `lockstep status -o json`: per host, chip and link counters.
  caf::expected<nlohmann::json> status();

  /// Runs `lockstep ARGS...` against this cluster and waits for it.
  cli_output run_cli(const std::vector<std::string>& args) const;
  /// Starts `lockstep ARGS...` against this cluster and returns at once.
  caf::expected<cli_process> spawn_cli(const std::vector<std::string>& args);

  /// Idempotent: `lockstep down`, then SIGKILL for any host that outlived
  /// it, then the working directory if start() made it. Errors: `down`
  /// failed or a host had to be killed (the cluster is gone either way).
  caf::error stop();

  const actors::cluster_address& address() const { return address_; }
  const std::vector<pid_t>& pids() const { return pids_; }
  /// Wall time of `lockstep up`, seconds.
  double up_s() const { return up_s_; }
  const std::filesystem::path& work_dir() const { return work_dir_; }
  std::filesystem::path context_file() const;
  /// The figures of every host process still running.
  std::vector<process_figures> processes() const;

private:
  local_cluster() = default;

  cluster_options options_;
  std::filesystem::path work_dir_;
  bool own_dir_ = false;
  actors::cluster_address address_;
  std::vector<pid_t> pids_;
  double up_s_ = 0;
  bool up_ = false;
  uint64_t spawned_ = 0; // names spawn_cli's output files
};

/// Whether `pid` runs (a zombie does not).
bool process_runs(pid_t pid);
/// The figures of `pid`, or nullopt once it is gone.
std::optional<process_figures> figures_of(pid_t pid);
/// The path of a shipped config: "local-64" -> <source>/cluster_configs/
/// local-64.yaml; anything with a '/' or ".yaml" is returned as is.
std::string config_path(const std::string& name);

} // namespace lockstep::testing
