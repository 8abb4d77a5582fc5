#pragma once

// A plan: where every weight shard lives and, for one decode step, what each
// chip computes in which slots and what each link carries in which slots.
// Built by the scheduler, checked by the verifier (separate code), serialised
// by plan_codec into planner/plan.capnp, whose per-link part is exactly the
// transport's slot table.

#include "model/block_rule.hpp"
#include "model/model_spec.hpp"
#include "model/tensor.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace lockstep::planner {

inline constexpr uint32_t planner_version = 2;
inline constexpr uint32_t no_id = 0xFFFFFFFFu;

struct shard {
  uint32_t chip = 0; // flat id
  model::tensor_id tensor;
  model::shard_range range;
  uint64_t bytes = 0;
};

enum class op_kind : uint8_t {
  embed,      // a column slice of the embedding lookup
  gather,     // assembles slices received from other chips (no arithmetic)
  attention,  // norm, q/k/v rows, RoPE, attention, wo partial (own heads)
  mlp,        // norm, gate/up rows, SwiGLU, w_down partial (own rows)
  combine,    // canonical-tree combine of reduction parts + residual add
  final_norm, // final RMSNorm
  lm_head,    // a row slice (vocab) of the LM head
  forward,    // store-and-forward on a multi-hop route
};

const char* to_string(op_kind k);

/// One part of a reduction split: reduction blocks [first, end) of a matmul
/// whose reduction has `n_blocks` blocks, computed on `chip`.
struct reduction_part {
  uint32_t chip = 0;
  uint32_t first_block = 0;
  uint32_t end_block = 0;
};

struct op {
  uint32_t id = 0;
  op_kind kind = op_kind::gather;
  uint32_t chip = 0;
  uint32_t layer = model::global_layer;
  uint32_t micro_batch = 0;
  uint32_t start_slot = 0;
  uint32_t duration_slots = 1;
  uint64_t duration_ns = 0; // from the cost model, before rounding to slots
  std::vector<uint32_t> after_ops;       // same-chip ops it depends on
  std::vector<uint32_t> after_transfers; // transfers into this chip it reads
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

struct transfer {
  uint32_t id = 0;
  uint32_t link = 0; // directed link id (topology)
  uint32_t src = 0;  // node ids (= the link's ends; chips, or a host endpoint)
  uint32_t dst = 0;
  uint32_t start_slot = 0;
  uint32_t duration_slots = 1;
  uint64_t payload_bytes = 0;
  uint64_t bytes = 0; // framed (transport::framed_bytes)
  uint64_t src_offset = 0;
  std::vector<uint64_t> dst_offsets; // alternating buffers by step parity
  uint32_t after_op = no_id;         // producer on src (op id)
  uint32_t after_transfer = no_id;   // previous hop, for multi-hop routes
  uint32_t consumer_op = no_id;      // the op on dst that reads it
};

struct chip_usage {
  uint64_t weight_bytes = 0;
  uint64_t kv_bytes = 0;
  uint64_t recv_arena_bytes = 0;
  uint64_t send_arena_bytes = 0;
  uint64_t total() const {
    return weight_bytes + kv_bytes + recv_arena_bytes + send_arena_bytes;
  }
};

struct predictions {
  double token_latency_us = 0;
  double tokens_per_s_per_user = 0;
  double aggregate_tokens_per_s = 0;
  double ttft_ms = 0; // for a prompt of `ttft_prompt_tokens`
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
  uint32_t micro_batches = 1;
  uint32_t tp_degree = 1; // chips per layer group
  uint32_t layers_per_group = 1;
  bool aligned_splits = false;  // MLP parts on canonical tree nodes
  uint64_t slot_ns = 0;
  uint32_t slots_per_step = 0;
  std::vector<uint32_t> failed_chips;
  bool incremental = false; // failures handled by replan (not from scratch)
  std::vector<uint32_t> spares;
  std::vector<uint32_t> chips_used;  // sorted flat ids holding shards or ops
  std::vector<uint32_t> group_chips; // [group][tp_degree] flat ids
  std::vector<uint32_t> embed_chips;
  std::vector<uint32_t> head_chips;
  std::vector<shard> shards;
  std::vector<op> ops;
  std::vector<transfer> transfers;
  std::vector<chip_usage> usage; // by flat chip id
  predictions predicted;
};

} // namespace lockstep::planner
