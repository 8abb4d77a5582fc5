#pragma once

// A plan is the complete program of the machine: where every weight shard
// and KV-cache slice lives in each chip's SRAM, and two periodic slot
// programs (decode and prefill) that say what every node computes in which
// slots — each op with the SRAM offsets and shapes of its inputs, outputs,
// scratch, weights and KV slice — and what every link carries in which
// slots, from which producer output to which consumer input. A chip needs
// nothing but its part of this, its weight tiles and the slot table.
//
// Built by the scheduler, checked by the verifier (separate code), serialised
// by plan_codec into planner/plan.capnp, whose per-link part of each program
// is exactly the transport's slot table.

#include "model/block_rule.hpp"
#include "model/model_spec.hpp"
#include "model/tensor.hpp"

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace lockstep::planner {

inline constexpr uint32_t planner_version =
    7; // 4: no dead last-layer roots
       // 5: micro-batches booked by wavefront
       // 6: LM head first, on host 0
       // 7: ops read x as its slices;
       //    a wider LM head first
inline constexpr uint32_t no_id = 0xFFFFFFFFu;

/// A weight shard placed in a chip's SRAM: the elements row-major from
/// `offset` (model::tensor's layout), int8 row scales from `scales_offset`.
struct shard {
  uint32_t chip = 0; // flat id
  model::tensor_id tensor;
  model::shard_range range;
  uint64_t bytes = 0;         // elements + scales
  uint64_t offset = 0;        // SRAM offset of the elements
  uint64_t scales_offset = 0; // SRAM offset of the int8 row scales
};

/// A chip's slice of one layer's KV cache (model::kv_cache_slice): kv heads
/// [kv_head_begin, kv_head_end) of sequences (batch slots) [0, sequences),
/// positions [0, positions). K from `k_offset`, V from `v_offset`, each laid
/// out [sequence][position][kv_head - kv_head_begin][head_dim] f32.
struct kv_slice {
  uint32_t chip = 0;
  uint32_t layer = 0;
  uint32_t kv_head_begin = 0;
  uint32_t kv_head_end = 0;
  uint32_t sequences = 0;
  uint32_t positions = 0;
  uint64_t k_offset = 0;
  uint64_t v_offset = 0;
  /// Bytes of K (and again of V).
  uint64_t bytes_each(uint32_t head_dim) const {
    return uint64_t{sequences} * positions * (kv_head_end - kv_head_begin) *
           head_dim * 4;
  }
};

enum class op_kind : uint8_t {
  embed,      // embedding rows of the chip's vocabulary slice (zeros elsewhere)
  gather,     // assembles x from its d_model slices (no arithmetic)
  attention,  // norm, q/k/v of its heads, RoPE, KV append, attention, wo
  mlp,        // norm, gate/up rows, SwiGLU, w_down columns
  combine,    // canonical-tree combine of reduction parts (+ residual)
  final_norm, // final RMSNorm of each sequence's emitting row
  lm_head,    // a row slice (vocabulary) of the LM head
  forward,    // a byte copy: store-and-forward, or into the send arena
  feed,       // host: the step's row table (token ids, positions) out
  select,     // first root: each token's embedding row from its owner
  sample,     // host: one token per sequence from the logits; the next
              // step's row table
};

const char* to_string(op_kind k);

/// One part of a reduction split: reduction blocks [first, end) of a matmul
/// whose reduction has `n_blocks` blocks, computed on `chip`.
struct reduction_part {
  uint32_t chip = 0;
  uint32_t first_block = 0;
  uint32_t end_block = 0;
};

/// The shape of an activation buffer: `rows` token rows; with `row_table`,
/// rows x model::token_row (16 bytes each) come first; then the values
/// [rows][cols][pieces] f32: elements [col_first, col_first + cols) of a
/// logical vector (x: d_model; logits: the vocabulary), `pieces` canonical
/// tree-node values per element for partial sums (1 otherwise).
struct buffer_shape {
  uint32_t rows = 0;
  uint32_t col_first = 0;
  uint32_t cols = 0;
  uint32_t pieces = 1;
  bool row_table = false;

  uint64_t table_bytes() const { return row_table ? uint64_t{rows} * 16 : 0; }
  uint64_t bytes() const {
    return table_bytes() + uint64_t{rows} * cols * pieces * 4;
  }
  friend bool operator==(const buffer_shape&, const buffer_shape&) = default;
};

/// An input or output of an op: where it lives in its node's SRAM, and its
/// shape. An output sent by transfers lives in their (shared) send window;
/// an input that arrives by a transfer is read in place from the receive
/// window of the step's parity (`offset` is the parity-0 window's payload).
struct operand {
  uint64_t offset = 0; // SRAM offset of its first byte
  buffer_shape shape;
  uint32_t transfer = no_id;    // input: arrives by this transfer
  uint32_t producer = no_id;    // input: written by this op of the node
  uint32_t producer_output = 0; //   (its output index)
  bool carried = false; // input: written by the previous step (token loop)
  uint64_t bytes() const { return shape.bytes(); }
};

struct op {
  uint32_t id = 0;
  op_kind kind = op_kind::gather;
  uint32_t chip = 0; // node id: a chip, or a host endpoint (feed, sample)
  uint32_t layer = model::global_layer;
  uint32_t micro_batch = 0;
  uint32_t start_slot = 0;
  uint32_t duration_slots = 1;
  uint64_t duration_ns = 0; // from the cost model, before rounding to slots
  std::vector<uint32_t> after_ops;       // same-node ops it depends on
  std::vector<uint32_t> after_transfers; // transfers into this node it reads
  // What it reads and writes, in the order its kind defines
  // (docs/planner.md, "The program"), and its scratch space.
  std::vector<operand> inputs;
  std::vector<operand> outputs;
  uint64_t scratch_offset = 0;
  uint64_t scratch_bytes = 0;
  // The weight shards it reads (indices into plan::shards, in the order its
  // kind defines) and, for attention, its KV slice (index into
  // plan::kv_slices).
  std::vector<uint32_t> weights;
  uint32_t kv = no_id;
  // select only: input i + 1 holds the tokens [vocab_bounds[i],
  // vocab_bounds[i + 1]).
  std::vector<uint32_t> vocab_bounds;
  // combine only: the parts, and the node values each part sent. Parts that
  // tile all blocks make a root combine (plus the residual add); parts that
  // tile a sub-range [b0, b1) make a partial combine whose outputs are
  // model::canonical_pieces(n_blocks, b0, b1), consumed by a root combine
  // that lists them as one part on this chip.
  uint32_t n_blocks = 0;
  std::vector<reduction_part> parts;
  std::vector<model::tree_node> nodes; // in the order they are combined
  // combine only: the elements [out_first, out_end) of the d_model output
  // vector it produces (a reduce-scatter slice).
  uint32_t out_first = 0;
  uint32_t out_end = 0;
};

/// Attention and MLP ops read x either whole (one input) or as the slices
/// the all-gather brought, where they arrived (no gather op between: one
/// op and its slot rounding less per half-layer). Read as slices, x is
/// assembled at the end of the op's scratch: this many floats of it (0
/// when x is read whole).
inline uint64_t assembled_x_floats(const op& o) {
  if (o.inputs.size() < 2)
    return 0;
  uint64_t cols = 0;
  for (const auto& in : o.inputs)
    cols += in.shape.cols;
  return uint64_t{o.inputs.front().shape.rows} * cols;
}

struct transfer {
  uint32_t id = 0;
  uint32_t link = 0; // directed link id (topology)
  uint32_t src = 0;  // node ids (= the link's ends)
  uint32_t dst = 0;
  uint32_t start_slot = 0;
  uint32_t duration_slots = 1;
  uint64_t payload_bytes = 0;
  uint64_t bytes = 0;                // framed (transport::framed_bytes)
  uint64_t src_offset = 0;           // into src's send arena
  std::vector<uint64_t> dst_offsets; // into dst's receive arena, by parity
  uint32_t after_op = no_id;         // producer on src (op id)
  uint32_t src_output = 0;           //   the output of it this carries
  uint32_t after_transfer = no_id;   // previous hop, for multi-hop routes
  uint32_t consumer_op = no_id;      // the op on dst that reads it
  uint32_t consumer_input = 0;       //   as this input
};

/// One program's memory on a node beyond the weights and KV cache (which
/// both programs share): SRAM offsets of its send and receive arenas (the
/// slot table's offsets are relative to them) and the end of all it uses.
struct node_arenas {
  uint64_t send_base = 0;
  uint64_t send_bytes = 0;
  uint64_t recv_base = 0;
  uint64_t recv_bytes = 0;
  uint64_t end = 0; // first SRAM byte past activations, scratch and arenas
};

enum class program_kind : uint8_t { decode = 0, prefill = 1 };
const char* to_string(program_kind k);

/// A periodic slot program: what every node computes and every link carries
/// in one step. Decode: one token of every sequence of the batch, in
/// micro-batches pipelined through the layer groups; the token loop closes
/// from the LM head through the host's sampler to the next step's feed.
/// Prefill: one chunk of `tokens` prompt tokens of one sequence; chunks
/// start every `period_slots`, pipelined through the groups.
struct step_program {
  program_kind kind = program_kind::decode;
  uint32_t tokens = 1; // rows per sequence per step (prefill: the chunk)
  uint32_t micro_batches = 1;
  /// Micro-batch m holds sequences (batch slots) [v[m], v[m + 1]); its rows
  /// are those sequences' `tokens` rows each, in order. Prefill: one
  /// sequence, whichever slot the host prefills.
  std::vector<uint32_t> micro_batch_sequences;
  uint32_t slots_per_step = 0; // length of one step's program
  uint32_t period_slots = 0;   // steps may start every period_slots
  std::vector<op> ops;
  std::vector<transfer> transfers;
  std::vector<node_arenas> arenas; // by node

  uint32_t sequences(uint32_t mb) const {
    return micro_batch_sequences[mb + 1] - micro_batch_sequences[mb];
  }
  uint32_t rows(uint32_t mb) const { return sequences(mb) * tokens; }
  /// Framed bytes all links carry in one step.
  uint64_t transfer_bytes() const;
};

struct chip_usage {
  uint64_t weight_bytes = 0;
  uint64_t kv_bytes = 0;
  uint64_t decode_bytes = 0;  // activations, scratch and arenas of decode
  uint64_t prefill_bytes = 0; // same for prefill: they never run at once
  uint64_t total() const {
    return weight_bytes + kv_bytes + std::max(decode_bytes, prefill_bytes);
  }
};

struct predictions {
  double token_latency_us = 0;
  double tokens_per_s_per_user = 0;
  double aggregate_tokens_per_s = 0;
  double ttft_ms = 0; // for a prompt of `ttft_prompt_tokens`, by prefill
  uint32_t ttft_prompt_tokens = 2048;
  double lower_bound_token_latency_us = 0;
  double link_utilisation = 0; // busy link-slots / (links used * slots)
  double sram_utilisation = 0; // bytes used / SRAM of chips used
};

struct plan {
  std::string model;
  std::string cluster;
  model::model_spec spec;
  uint32_t batch = 1;
  uint32_t context = 0;
  uint32_t tp_degree = 1; // chips per layer group
  uint32_t layers_per_group = 1;
  bool aligned_splits = false;  // MLP parts on canonical tree nodes
  uint64_t slot_ns = 0;
  std::vector<uint32_t> failed_chips;
  bool incremental = false; // failures handled by replan (not from scratch)
  std::vector<uint32_t> spares;
  std::vector<uint32_t> chips_used;  // sorted flat ids holding shards or ops
  std::vector<uint32_t> group_chips; // [group][tp_degree] flat ids
  std::vector<uint32_t> embed_chips;
  std::vector<uint32_t> head_chips;
  uint32_t sampler = no_id; // node id of the head host's endpoint
  std::vector<shard> shards;
  std::vector<kv_slice> kv_slices;
  step_program decode;
  step_program prefill;
  std::vector<chip_usage> usage; // by node
  predictions predicted;

  const step_program& program(program_kind k) const {
    return k == program_kind::decode ? decode : prefill;
  }
};

} // namespace lockstep::planner
