#pragma once

// The coordinator's batch: which request holds which of the plan's batch
// slots, what each slot feeds the next decode step, and what becomes of
// each logit row — the host side of the token loop (token_loop) for the
// decode program.
//
// A request joins at a step boundary when a slot is free (admit()). Its
// prompt rides the decode steps, a token a step beside everyone else (a
// chunk of one: the same bits as any chunking, docs/determinism.md), and,
// when the policy says so (detail/programs.hpp), goes through the prefill
// program in chunks of the plan's `prefill.tokens` rows, one slot's chunk
// per prefill step. The row of its last prompt token emits logits, and from
// then on each decode step feeds the token the previous one sampled — read
// back from the rows the sample op wrote (the loop closes inside the
// schedule), or, the first decode step after a prefill step (whose run
// overwrote them), rebuilt from the slot. Its slot is free again the step
// after its last token.
//
// Sampling is model::sample with request id 0: a request's draws depend on
// its own seed, prompt and settings only, never on what else runs, so any
// request equals its own reference run.
//
// Thread-safety: none; the coordinator actor owns it.

#include "actors/chip_executor.hpp"
#include "actors/detail/programs.hpp"
#include "common/digest.hpp"
#include "model/generation.hpp"

#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <vector>

namespace lockstep::actors::detail {

struct request {
  uint64_t id = 0; // the coordinator's
  std::vector<int32_t> prompt;
  uint32_t max_tokens = 0;
  model::sampling_params sampling;
  std::chrono::steady_clock::time_point received;
};

/// What happened to a request in a step.
struct request_event {
  uint64_t request = 0;
  uint32_t index = 0; // of the token
  int32_t token = 0;
  bool done = false;
  // done: the whole result and its timing.
  model::generation_result result;
  double ttft_ms = 0;
  double tokens_per_s = 0;
};

class request_slots final : public token_loop {
public:
  /// `max_queue`: requests waiting for a slot at most. `prefill`: when
  /// prompts go through the plan's prefill program (off: never; a cluster
  /// that does not run it passes off).
  request_slots(const planner::plan& p, size_t max_queue,
                prefill_policy prefill);

  /// Validates and queues a request. Errors: bad_request (empty prompt,
  /// tokens outside the vocabulary, prompt + max_tokens beyond the plan's
  /// context, bad sampling settings); overloaded: the queue is full (the
  /// request is refused at once; nothing admitted is affected).
  caf::error enqueue(request r);

  /// Fills free slots from the queue, oldest first. Call at step
  /// boundaries only.
  void admit();

  /// The program of the next step (call after admit(), when busy()), by
  /// the policy. While no slot generates: a chunk of the slot with the
  /// longest prompt left (the one already begun first), if it is the only
  /// prompt in or has a chunk's worth left — else a decode step advances
  /// every prompt at once. While slots generate: interleave alternates a
  /// chunk with a decode step; idle and off run decode steps.
  planner::program_kind begin_step();

  /// Any request in a slot or waiting for one.
  bool busy() const;
  size_t active() const;
  size_t queued() const { return queue_.size(); }

  /// Tokens and completions since the last call.
  std::vector<request_event> take_events();

  /// Drops a request (its client went away): from the queue, or its slot
  /// is freed at the next step boundary.
  void cancel(uint64_t request);

  caf::error feed(planner::program_kind kind, uint32_t mb, uint64_t step,
                  std::span<const model::token_row> carried,
                  std::span<model::token_row> out) override;
  caf::error sample(planner::program_kind kind, uint32_t mb, uint64_t step,
                    std::span<const model::token_row> rows,
                    std::span<const float> logits, uint32_t vocab,
                    std::span<model::token_row> next) override;

private:
  struct slot {
    std::optional<request> req;
    uint32_t fed = 0; // prompt tokens fed so far
    std::vector<int32_t> tokens;
    sha256 hash;
    std::chrono::steady_clock::time_point first, last;
    bool done = false;
    bool cancelled = false;
  };

  bool generating(const slot& s) const;
  bool prefilling(const slot& s) const;
  caf::error feed_prefill(uint64_t step, std::span<model::token_row> out);

  const planner::plan& plan_;
  size_t max_queue_;
  prefill_policy prefill_;
  planner::program_kind last_ = planner::program_kind::decode;
  uint32_t prefill_slot_ = 0; // the slot this prefill step feeds
  std::deque<request> queue_;
  std::vector<slot> slots_;
  std::vector<request_event> events_;
};

} // namespace lockstep::actors::detail
