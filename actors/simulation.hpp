#pragma once

// `lockstep generate --simulate`: every chip of a plan in one process, run
// exactly as the cluster will run it. One arena of the chip's SRAM size per
// chip; weights read from the RocksDB store into their planned offsets; each
// node's program executed by its chip_executor in slot order; each transfer
// copies its planned framed bytes from the sender's send window to the
// receiver's receive window of the step's parity, in its slot. Prompts go
// through the prefill program chunk by chunk (chunks overlapping at the
// program's period, as planned), then the batch decodes through the decode
// program, the token loop closing through the host's feed and sample ops.
//
// Nothing here computes model math itself: the executors do, with the
// functions the reference engine uses.
//
// Thread-safety: one generate() at a time.

#include "actors/chip_executor.hpp"
#include "actors/sram.hpp"
#include "model/generation.hpp"
#include "planner/cluster_config.hpp"
#include "planner/plan.hpp"
#include "storage/weight_store.hpp"

#include <caf/expected.hpp>

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace lockstep::actors {

struct simulation_options {
  /// Threads for matmuls inside ops (0: all cores). Results do not depend
  /// on it.
  unsigned threads = 0;
  /// Test hook: this decode transfer is never delivered.
  uint32_t drop_decode_transfer = planner::no_id;
};

struct simulation_report {
  std::vector<model::generation_result> requests; // in request order
  uint64_t ops_executed = 0;      // ops run, both programs, host ops included
  uint64_t bytes_transferred = 0; // framed bytes of every transfer run
  uint64_t prefill_steps = 0;
  uint64_t decode_steps = 0;
  double seconds = 0;        // the whole generate()
  double decode_seconds = 0; // the decode steps alone
};

/// Memory the simulation of `config` needs for its arenas (every chip's
/// SRAM), checked against this machine's available memory.
/// Errors: too_large naming both figures.
caf::error check_simulation_memory(const planner::cluster_config& config);

class simulation {
public:
  /// Allocates the arenas, loads every shard of `p` from `weights` (the
  /// store's model must be the plan's) and binds every node's executors.
  /// The plan and config must outlive the simulation.
  /// Errors: storage errors (corrupt tiles), bad_program, too_large.
  static caf::expected<std::unique_ptr<simulation>>
  load(const planner::plan& p, const planner::cluster_config& config,
       const storage::weight_store& weights,
       const simulation_options& options = {});

  ~simulation();

  /// Runs the requests (one batch slot each; at most the plan's batch):
  /// prefill of each prompt, then decode until every request has its
  /// max_tokens. Tokens and logits hashes equal model::generate's.
  /// Errors: bad_request (too many requests, a prompt beyond the plan's
  /// context, bad sampling), and any executor error (naming chip, op, slot).
  caf::expected<simulation_report>
  generate(std::span<const model::generation_request> requests);

  /// A node's arena (tests corrupt weights through it).
  std::span<std::byte> sram(uint32_t node);

  const planner::plan& plan() const noexcept { return plan_; }

private:
  class request_table;

  simulation(const planner::plan& p, const planner::cluster_config& config,
             const simulation_options& options);
  caf::error load_weights(const storage::weight_store& weights);
  caf::error bind(planner::program_kind kind);
  // Runs `n` steps of a program from global step `first`, each starting one
  // period after the previous.
  caf::error run_steps(planner::program_kind kind, uint64_t first, uint64_t n,
                       simulation_report& report);

  const planner::plan& plan_;
  const planner::cluster_config& config_;
  simulation_options options_;
  model::rope_table rope_;
  std::unique_ptr<model::worker_pool> pool_;
  std::unique_ptr<request_table> loop_;
  std::vector<std::unique_ptr<sram_arena>> arenas_; // by node (null: unused)
  // Executors by program and node (null: nothing to run there).
  std::vector<std::unique_ptr<chip_executor>> executors_[2];
  // Each program's events of one step in execution order: (slot, kind,
  // id) with kind 0 a transfer, 1 an op.
  struct event {
    uint32_t slot;
    uint8_t kind;
    uint32_t id;
  };
  std::vector<event> events_[2];
  uint64_t steps_run_[2] = {0, 0};
};

} // namespace lockstep::actors
