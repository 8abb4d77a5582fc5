#pragma once

// A chip: its SRAM arena (weights, KV slice, activations and its send and
// receive windows at the plan's offsets), its programs (decode, and
// prefill when the cluster runs it), and an executor for each.
// Event-driven: an arrival may make the next op of its program's step
// runnable; ops run in slot order, each as soon as its inputs are there;
// an op's outgoing tensors are already in their send windows when it
// returns, and are posted to the program's transport, which sends them in
// their slots. When the step's last op has run, the chip releases its
// receive windows of that step and moves to the next.
//
// The two programs share the arena, so they must never run at once: the
// head switches programs only after a step's last sample, when every op of
// that step has run everywhere (planner/step_order.hpp). Each program keeps
// its own step count.
//
// The arena is owned by the host actor (it must outlive the transport's
// registration of it); the chip actor owns the executors.

#include "actors/chip_executor.hpp"
#include "actors/messages.hpp"

#include <caf/event_based_actor.hpp>

#include <atomic>
#include <memory>
#include <vector>

namespace lockstep::transport {
class host_transport;
}

namespace lockstep::actors {

/// Figures a chip publishes for status (read by the host's heartbeat).
struct chip_figures {
  std::atomic<uint64_t> ops_run{0};
  std::atomic<uint64_t> steps_run{0};
  /// Thread CPU time spent in the executor's ops (kernels and their
  /// bookkeeping), not in sends or messaging: beside the process's CPU
  /// time it shows what the runtime costs per op (scripts/calibrate-local.sh).
  /// Estimates: a random eighth of handlers (with their ops) is timed,
  /// scaled by 8.
  std::atomic<uint64_t> kernel_ns{0};
  /// Thread CPU time in the chip actor's handlers: its ops, their sends and
  /// its bookkeeping (kernel_ns included).
  std::atomic<uint64_t> handler_ns{0};
};

/// One program of a chip: its executor (null if the chip has no part in
/// it) and the lane its transfers travel.
struct chip_program {
  std::unique_ptr<chip_executor> executor;
  program_lane lane; // routes dropped on exit
};

struct chip_actor_args {
  // What the executors read and must outlive them (declared first, so it
  // is destroyed last): the plan, the arena, the RoPE table.
  std::vector<std::shared_ptr<const void>> keep;
  std::array<chip_program, 2> programs; // by program_kind
  std::shared_ptr<chip_figures> figures;
  caf::actor host; // told when the chip fails
};

class chip_actor : public caf::event_based_actor {
public:
  chip_actor(caf::actor_config& cfg, chip_actor_args args);

  caf::behavior make_behavior() override;
  void on_exit() override; // drops the handles that would keep actors alive

private:
  // Where a program of this chip is.
  struct progress {
    std::vector<std::vector<uint32_t>> sends; // per op: plan transfer ids
    size_t next = 0;   // index into the executor's ops()
    uint64_t step = 0; // the step being run
  };

  // Runs every op of program k's current step whose inputs are there, in
  // order.
  void advance(size_t k);
  void fail(const caf::error& err);
  // Whether to time this handler (and its ops) on the thread CPU clock: one
  // in `cpu_sample_every`, at random. A read costs ~1.2 us on a VM (a syscall;
  // the vDSO has no thread clocks), ~3 ms a local-64 step if every op and
  // handler paid two; sampled, the sums are scaled back up (chip_figures).
  bool sample_cpu();
  static constexpr uint64_t cpu_sample_every = 8;

  chip_actor_args args_;
  std::array<progress, 2> progress_; // by program_kind
  bool failed_ = false;
  uint64_t sample_state_; // xorshift64 state, seeded per chip
  bool timing_ = false;   // this handler is sampled
};

} // namespace lockstep::actors
