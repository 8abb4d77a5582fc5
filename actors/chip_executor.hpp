#pragma once

// Executes one node's part of a plan's step program: the chip's ops in slot
// order, computing with the shard-level model API (model/shard_ops.hpp) on
// weights, KV slices and activations at the SRAM offsets the plan gives, in
// an arena of the chip's SRAM size. The host endpoint's feed and sample ops
// hand the step's rows and logits to a token_loop (the coordinator).
//
// It knows nothing of actors or of how bytes travel: the in-process
// simulation copies transfers between arenas, the chip actors of a cluster
// let the slotted transport write them, and both call note_arrival() and
// run() the same way. So the code that runs a chip is one unit, here.
//
// Every operand is checked when the executor is made (inside the arena,
// shapes consistent with the model and the op's weights) and every input
// again when its op runs: it must be exactly a buffer its declared producer
// (an op of this node, or a transfer's arrival) wrote in this step, or the
// op fails with an error naming chip, op and slot — never silently reads
// stale or foreign bytes.
//
// Thread-safety: one run() or note_arrival() at a time per executor;
// executors of different nodes are independent (separate arenas).

#include "actors/errc.hpp"
#include "model/kernels.hpp"
#include "model/shard_ops.hpp"
#include "planner/cluster_config.hpp"
#include "planner/plan.hpp"

#include <caf/expected.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <vector>

namespace lockstep::actors {

/// The head host's side of the token loop: what goes into a step and what
/// becomes of its logits. Implemented by the coordinator (and by the
/// simulation's request table).
class token_loop {
public:
  virtual ~token_loop() = default;

  /// The row table of micro-batch `mb` for `step`: `out.size()` rows
  /// (sequences x tokens). Decode passes the rows the previous step's
  /// sample wrote (`carried`); prefill passes none.
  virtual caf::error feed(planner::program_kind kind, uint32_t mb,
                          uint64_t step,
                          std::span<const model::token_row> carried,
                          std::span<model::token_row> out) = 0;

  /// The logits of micro-batch `mb`'s sequences (`rows`, one per sequence:
  /// the emitting row's table entry, flags 0 if none emitted), full
  /// vocabulary each, `vocab` floats per row. Writes the next step's row of
  /// each sequence into `next`.
  virtual caf::error sample(planner::program_kind kind, uint32_t mb,
                            uint64_t step,
                            std::span<const model::token_row> rows,
                            std::span<const float> logits, uint32_t vocab,
                            std::span<model::token_row> next) = 0;
};

class chip_executor {
public:
  /// Binds `node`'s part of program `kind` of `p` to `sram` (the node's
  /// whole arena: weights and KV at their offsets, filled by the caller).
  /// `rope` is shared by all nodes of a process; `loop` is needed on the
  /// sampler node only. The plan, rope and loop must outlive the executor.
  /// Errors: bad_program naming chip, op, slot and what is wrong.
  static caf::expected<std::unique_ptr<chip_executor>>
  make(const planner::plan& p, const planner::cluster_config& config,
       planner::program_kind kind, uint32_t node, std::span<std::byte> sram,
       const model::rope_table& rope, token_loop* loop = nullptr);

  uint32_t node() const noexcept { return node_; }
  const planner::cluster_config& config() const noexcept { return config_; }
  const planner::step_program& program() const noexcept { return prog_; }
  /// This node's ops (ids into program().ops), in slot order.
  const std::vector<uint32_t>& ops() const noexcept { return ops_; }

  /// Per op of ops(), in that order: the transfers (plan ids) that leave
  /// when it has run — the first hops, and relay hops, it produces.
  std::vector<std::vector<uint32_t>> sends_by_op() const;

  /// Records that transfer `t` of `step` arrived in its receive window (the
  /// bytes are there now). REQUIRES: t goes to this node.
  void note_arrival(uint32_t t, uint64_t step);

  /// Whether every input of op `id` (but the carried one) has been
  /// written for `step`: run() would not fail for a missing input. Cheap:
  /// the chip actors ask it on every arrival.
  bool ready(uint32_t id, uint64_t step) const;

  /// Runs op `id` of `step`. Errors: missing_input (an input not written by
  /// its producer in this step), compute_failed (the model refused the
  /// data: e.g. a row outside the KV slice), each naming chip, op and slot.
  caf::error run(uint32_t id, uint64_t step, model::worker_pool* pool = nullptr);

  /// The node's other program has run on this SRAM since this program's
  /// last step: nothing this executor wrote is there any more. Forgets it
  /// all, so that the next step's feed takes no carried rows (the token
  /// loop supplies them). REQUIRES: no step of this program under way.
  void forget_writes() { written_.clear(); }

  /// Checks that outgoing transfer `t`'s send window holds what its
  /// producer wrote in `step` (never stale bytes). Errors: missing_input
  /// naming the transfer, its producer, chip and slot.
  caf::error check_sendable(uint32_t t, uint64_t step) const;

  /// The SRAM of a payload of transfer `t` (outgoing: its send window's
  /// framed bytes; incoming: the receive window of `step`'s parity).
  std::span<std::byte> send_window(uint32_t t);
  std::span<std::byte> receive_window(uint32_t t, uint64_t step);

private:
  chip_executor(const planner::plan& p, const planner::cluster_config& config,
                planner::program_kind kind, uint32_t node,
                std::span<std::byte> sram, const model::rope_table& rope,
                token_loop* loop);

  caf::error bind();
  // Every buffer the op's compute touches lies inside its operands.
  caf::error check_kind(const planner::op& o);
  caf::error fail(errc code, const planner::op& o, const std::string& what) const;
  std::string where(const planner::op& o) const;
  // Where input i of op o is in `step` (received inputs by parity).
  uint64_t input_offset(const planner::op& o, size_t i, uint64_t step) const;
  caf::error check_inputs(const planner::op& o, uint64_t step) const;
  void wrote(uint64_t offset, uint64_t bytes, uint32_t writer, bool transfer,
             uint64_t step);
  template <class T>
  T* at(uint64_t offset) {
    return reinterpret_cast<T*>(sram_.data() + offset);
  }
  model::tensor_view weight(uint32_t shard) const;

  caf::error run_compute(const planner::op& o, uint64_t step,
                         model::worker_pool* pool);

  const planner::plan& plan_;
  const planner::cluster_config& config_;
  const planner::step_program& prog_;
  uint32_t node_;
  std::span<std::byte> sram_;
  const model::rope_table& rope_;
  token_loop* loop_;
  std::vector<uint32_t> ops_;
  // Per attention op's KV slice: K and V of each sequence.
  std::map<uint32_t, std::vector<float*>> kv_k_, kv_v_;
  // Per combine op, its compiled rule.
  std::map<uint32_t, model::combine_rule> rules_;
  // Outputs that transfers send: the Cap'n Proto framing of their send
  // window, written with the payload each time (decode and prefill share
  // the space, so framing written at load would not survive the other
  // program).
  struct framed_output {
    uint32_t op, output;
    uint64_t window; // SRAM offset of the window (the framing's start)
    std::array<std::byte, 24> header;
  };
  std::vector<framed_output> framed_;
  // What was written where: offset -> (end, writer, transfer?, step).
  struct write_record {
    uint64_t end;
    uint32_t writer;
    bool transfer;
    uint64_t step;
  };
  std::map<uint64_t, write_record> written_;
};

} // namespace lockstep::actors
