#include "actors/detail/request_slots.hpp"

#include "model/sampler.hpp"

#include <algorithm>

namespace lockstep::actors::detail {

using model::token_row;
using clock_type = std::chrono::steady_clock;

request_slots::request_slots(const planner::plan& p, size_t max_queue,
                             prefill_policy prefill)
    : plan_(p)
    , max_queue_(max_queue)
    , prefill_(prefill)
    , slots_(p.batch) {}

caf::error request_slots::enqueue(request r) {
  auto bad = [](const std::string& what) {
    return caf::make_error(errc::bad_request, what);
  };
  if (r.prompt.empty() || r.max_tokens == 0)
    return bad("a request needs prompt tokens and max_tokens >= 1");
  for (auto tok : r.prompt)
    if (tok < 0 || static_cast<uint32_t>(tok) >= plan_.spec.vocab)
      return bad("token " + std::to_string(tok) +
                 " is outside the vocabulary [0, " +
                 std::to_string(plan_.spec.vocab) + ") of " + plan_.spec.name);
  // Positions 0 .. prompt + max_tokens - 2 are written to the KV cache.
  if (r.prompt.size() + r.max_tokens - 1 > plan_.context)
    return bad(std::to_string(r.prompt.size()) + " prompt tokens + " +
               std::to_string(r.max_tokens) +
               " new tokens exceed the plan's context of " +
               std::to_string(plan_.context));
  if (auto err = model::validate(r.sampling))
    return err;
  // Requests waiting for a slot that frees at the next step boundary are
  // not waiting in the queue's sense: only the excess counts.
  if (queue_.size() >= max_queue_ + (slots_.size() - active()))
    return caf::make_error(
        errc::overloaded,
        "the admission queue is full (" + std::to_string(max_queue_) +
            " requests waiting for " + std::to_string(slots_.size()) +
            " batch slots); retry later");
  queue_.push_back(std::move(r));
  return {};
}

void request_slots::admit() {
  for (auto& s : slots_) {
    if (s.req && (s.done || s.cancelled))
      s = slot{};
    if (!s.req && !queue_.empty()) {
      s.req = std::move(queue_.front());
      queue_.pop_front();
    }
  }
}

bool request_slots::generating(const slot& s) const {
  return s.req && !s.done && !s.cancelled && s.fed == s.req->prompt.size();
}

bool request_slots::prefilling(const slot& s) const {
  return s.req && !s.done && !s.cancelled && s.fed < s.req->prompt.size();
}

planner::program_kind request_slots::begin_step() {
  using planner::program_kind;
  auto kind = program_kind::decode;
  if (prefill_ != prefill_policy::off) {
    size_t prompts = 0;
    bool others = false;
    // The slot whose prompt the chunks carry on with, else the one with the
    // most prompt left (the lowest on a tie).
    auto best = slots_.size();
    auto left = [&](size_t q) {
      return slots_[q].req->prompt.size() - slots_[q].fed;
    };
    for (size_t q = 0; q < slots_.size(); ++q) {
      others |= generating(slots_[q]);
      if (!prefilling(slots_[q]))
        continue;
      ++prompts;
      if (best == slots_.size() || left(q) > left(best))
        best = q;
    }
    if (prefill_slot_ < slots_.size() && prefilling(slots_[prefill_slot_]) &&
        slots_[prefill_slot_].fed > 0)
      best = prefill_slot_;
    bool chunk = false;
    if (best < slots_.size()) {
      if (!others)
        chunk = prompts == 1 || left(best) >= plan_.prefill.tokens;
      else
        chunk = prefill_ == prefill_policy::interleave &&
                last_ != program_kind::prefill;
    }
    if (chunk) {
      kind = program_kind::prefill;
      prefill_slot_ = static_cast<uint32_t>(best);
    }
  }
  last_ = kind;
  return kind;
}

bool request_slots::busy() const {
  return active() > 0 || !queue_.empty();
}

size_t request_slots::active() const {
  return std::count_if(slots_.begin(), slots_.end(), [](const slot& s) {
    return s.req && !s.done && !s.cancelled;
  });
}

std::vector<request_event> request_slots::take_events() {
  std::vector<request_event> out;
  out.swap(events_);
  return out;
}

void request_slots::cancel(uint64_t request) {
  std::erase_if(queue_, [&](const auto& r) { return r.id == request; });
  for (auto& s : slots_)
    if (s.req && s.req->id == request)
      s.cancelled = true;
}

caf::error request_slots::feed_prefill(uint64_t,
                                       std::span<token_row> out) {
  uint32_t q = prefill_slot_;
  auto& s = slots_[q];
  if (!prefilling(s))
    return caf::make_error(errc::bad_program,
                           "feed: a prefill step for slot " +
                               std::to_string(q) +
                               ", whose prompt is in already");
  const auto& prompt = s.req->prompt;
  for (size_t j = 0; j < out.size(); ++j) {
    auto pos = static_cast<uint32_t>(s.fed + j);
    bool real = pos < prompt.size();
    bool last = pos + 1 == prompt.size();
    out[j] = {real ? prompt[pos] : 0, pos, q,
              real ? model::row_active | (last ? model::row_emits : 0u) : 0u};
  }
  s.fed = static_cast<uint32_t>(
      std::min<size_t>(prompt.size(), s.fed + out.size()));
  return {};
}

caf::error request_slots::feed(planner::program_kind kind, uint32_t mb,
                               uint64_t step,
                               std::span<const token_row> carried,
                               std::span<token_row> out) {
  if (kind == planner::program_kind::prefill)
    return feed_prefill(step, out);
  uint32_t q = plan_.decode.micro_batch_sequences[mb];
  for (size_t j = 0; j < out.size(); ++j, ++q) {
    auto& s = slots_[q];
    if (!s.req || s.done || s.cancelled) {
      out[j] = {0, 0, q, 0};
      continue;
    }
    const auto& prompt = s.req->prompt;
    if (s.fed < prompt.size()) {
      bool last = s.fed + 1 == prompt.size();
      out[j] = {prompt[s.fed], s.fed, q,
                model::row_active | (last ? model::row_emits : 0u)};
      ++s.fed;
      continue;
    }
    // Generating: the token the sample op wrote back last step.
    auto pos = static_cast<uint32_t>(prompt.size() + s.tokens.size() - 1);
    token_row expected{s.tokens.back(), pos, q,
                       model::row_active | model::row_emits};
    if (prefill_ != prefill_policy::off && carried.empty()) {
      // A prefill step ran since: its run overwrote the rows (the
      // executor forgot them), so they come from the slot.
      out[j] = expected;
      continue;
    }
    if (j >= carried.size() || carried[j].sequence != q ||
        carried[j].token != expected.token ||
        carried[j].position != expected.position)
      return caf::make_error(errc::bad_program,
                             "feed: the rows of the previous step's sample "
                             "do not carry slot " +
                                 std::to_string(q) +
                                 "'s token (the token loop is broken)");
    out[j] = carried[j];
  }
  return {};
}

caf::error request_slots::sample(planner::program_kind, uint32_t, uint64_t,
                                 std::span<const token_row> rows,
                                 std::span<const float> logits, uint32_t vocab,
                                 std::span<token_row> next) {
  auto now = clock_type::now();
  constexpr uint32_t wanted = model::row_active | model::row_emits;
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto& r = rows[i];
    next[i] = {0, 0, r.sequence, 0};
    if ((r.flags & wanted) != wanted)
      continue;
    if (r.sequence >= slots_.size() || !slots_[r.sequence].req)
      return caf::make_error(errc::bad_program,
                             "sample: logits for slot " +
                                 std::to_string(r.sequence) +
                                 ", which holds no request");
    auto& s = slots_[r.sequence];
    if (s.cancelled || s.done)
      continue;
    auto row = logits.subspan(i * size_t{vocab}, vocab);
    s.hash.update_f32_le(row);
    int32_t token =
        model::sample(row, s.req->sampling, 0, s.tokens.size());
    if (s.tokens.empty())
      s.first = now;
    s.last = now;
    s.tokens.push_back(token);
    request_event ev;
    ev.request = s.req->id;
    ev.index = static_cast<uint32_t>(s.tokens.size() - 1);
    ev.token = token;
    s.done = s.tokens.size() >= s.req->max_tokens;
    if (s.done) {
      ev.done = true;
      ev.result.tokens = s.tokens;
      ev.result.logits_sha256 = s.hash.hex_digest();
      ev.ttft_ms = std::chrono::duration<double, std::milli>(
                       s.first - s.req->received)
                       .count();
      double total =
          std::chrono::duration<double>(s.last - s.req->received).count();
      ev.tokens_per_s = total > 0 ? s.tokens.size() / total : 0.0;
    }
    events_.push_back(std::move(ev));
    next[i] = {token, r.position + 1, r.sequence, s.done ? 0u : wanted};
  }
  return {};
}

} // namespace lockstep::actors::detail
