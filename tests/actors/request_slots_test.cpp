// The coordinator's batch (actors/detail/request_slots.hpp): which program
// each step runs, the rows it feeds, and the token loop across prefill and
// decode steps — without a cluster: the feed and sample calls are the ones
// the sampler endpoint's executor makes.

#include "actors/detail/request_slots.hpp"
#include "model/model_spec.hpp"
#include "planner/planner.hpp"

#include <algorithm>
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace lockstep::actors::detail {
namespace {

using model::token_row;
using planner::program_kind;

planner::plan local_8_plan() {
  auto c = planner::load_cluster_config(std::string{LOCKSTEP_SOURCE_DIR} +
                                        "/cluster_configs/local-8.yaml");
  if (!c)
    throw std::runtime_error(render(c.error()));
  auto r = planner::make_plan(*c, *model::find_preset("tiny-8"),
                              planner::plan_options{4, 128, {}});
  if (!r)
    throw std::runtime_error(render(r.error()));
  return std::move(r->p);
}

request make_request(uint64_t id, size_t prompt, uint32_t max_tokens) {
  request r;
  r.id = id;
  for (size_t i = 0; i < prompt; ++i)
    r.prompt.push_back(static_cast<int32_t>(1 + i % 50));
  r.max_tokens = max_tokens;
  return r;
}

class request_slots_test : public ::testing::Test {
protected:
  planner::plan p_ = local_8_plan();
  uint32_t vocab_ = p_.spec.vocab;

  // Runs the feeds of one step of `kind` (every micro-batch, in order);
  // returns their rows, one table after the other.
  std::vector<token_row> feed(request_slots& s, program_kind kind,
                              std::span<const token_row> carried = {}) {
    const auto& prog = p_.program(kind);
    std::vector<token_row> rows;
    size_t at = 0;
    for (uint32_t mb = 0; mb < prog.micro_batches; ++mb) {
      std::vector<token_row> table(prog.rows(mb));
      auto mine = carried.empty() ? carried : carried.subspan(at, table.size());
      at += table.size();
      auto err = s.feed(kind, mb, 0, mine, table);
      EXPECT_FALSE(err) << render(err);
      rows.insert(rows.end(), table.begin(), table.end());
    }
    return rows;
  }

  // Samples greedily: logits peak at `token` for every emitting row. Takes
  // and returns whole steps' rows, as feed(). For decode (one row per
  // sequence) what it returns is the next step's carried rows.
  std::vector<token_row> sample(request_slots& s, program_kind kind,
                                std::span<const token_row> rows,
                                int32_t token) {
    const auto& prog = p_.program(kind);
    std::vector<token_row> out;
    size_t at = 0;
    for (uint32_t mb = 0; mb < prog.micro_batches; ++mb) {
      // One row per sequence: the emitting one (as the executor hands them).
      std::vector<token_row> emitting;
      for (uint32_t q = 0; q < prog.sequences(mb); ++q, at += prog.tokens) {
        token_row e{0, 0, rows[at].sequence, 0};
        for (uint32_t t = 0; t < prog.tokens; ++t)
          if (rows[at + t].flags & model::row_emits)
            e = rows[at + t];
        emitting.push_back(e);
      }
      std::vector<float> logits(emitting.size() * size_t{vocab_}, 0.0f);
      for (size_t i = 0; i < emitting.size(); ++i)
        logits[i * vocab_ + static_cast<size_t>(token)] = 1.0f;
      std::vector<token_row> next(emitting.size());
      auto err = s.sample(kind, mb, 0, emitting, logits, vocab_, next);
      EXPECT_FALSE(err) << render(err);
      out.insert(out.end(), next.begin(), next.end());
    }
    return out;
  }
};

TEST_F(request_slots_test, a_prompt_goes_in_chunks_and_its_last_row_emits) {
  uint32_t chunk = p_.prefill.tokens;
  ASSERT_GT(chunk, 1u);
  request_slots s{p_, 8, prefill_policy::idle};
  size_t prompt = chunk + 3; // two chunks, the second mostly padding
  ASSERT_FALSE(s.enqueue(make_request(1, prompt, 2)));
  s.admit();
  ASSERT_EQ(s.begin_step(), program_kind::prefill);
  auto rows = feed(s, program_kind::prefill);
  ASSERT_EQ(rows.size(), chunk);
  for (uint32_t j = 0; j < chunk; ++j) {
    EXPECT_EQ(rows[j].position, j);
    EXPECT_EQ(rows[j].flags, model::row_active) << j; // none emits yet
  }
  sample(s, program_kind::prefill, rows, 7);
  EXPECT_TRUE(s.take_events().empty()); // no token from a middle chunk
  ASSERT_EQ(s.begin_step(), program_kind::prefill);
  rows = feed(s, program_kind::prefill);
  for (uint32_t j = 0; j < chunk; ++j) {
    uint32_t pos = chunk + j;
    EXPECT_EQ(rows[j].position, pos);
    if (pos + 1 < prompt)
      EXPECT_EQ(rows[j].flags, model::row_active) << j;
    else if (pos + 1 == prompt)
      EXPECT_EQ(rows[j].flags, model::row_active | model::row_emits) << j;
    else
      EXPECT_EQ(rows[j].flags, 0u) << j; // padding past the prompt
  }
  sample(s, program_kind::prefill, rows, 7);
  auto events = s.take_events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].token, 7);
  EXPECT_EQ(events[0].index, 0u);
  // Now decoding: its first decode row comes from the slot (a prefill step
  // ran since the last decode step, so there are no carried rows).
  s.admit();
  ASSERT_EQ(s.begin_step(), program_kind::decode);
  rows = feed(s, program_kind::decode);
  EXPECT_EQ(rows[0].token, 7);
  EXPECT_EQ(rows[0].position, prompt);
  EXPECT_EQ(rows[0].flags, model::row_active | model::row_emits);
  for (size_t q = 1; q < rows.size(); ++q)
    EXPECT_EQ(rows[q].flags, 0u) << q;
  sample(s, program_kind::decode, rows, 9);
  events = s.take_events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_TRUE(events[0].done);
  EXPECT_EQ(events[0].result.tokens, (std::vector<int32_t>{7, 9}));
}

TEST_F(request_slots_test, interleave_alternates_chunks_with_decode_steps) {
  uint32_t chunk = p_.prefill.tokens;
  request_slots s{p_, 8, prefill_policy::interleave};
  ASSERT_FALSE(s.enqueue(make_request(1, 2, 50))); // A: short prompt
  s.admit();
  ASSERT_EQ(s.begin_step(), program_kind::prefill); // alone: a chunk
  sample(s, program_kind::prefill, feed(s, program_kind::prefill), 5);
  s.take_events();
  // B arrives while A decodes: 100 prompt tokens. Chunks alternate with
  // decode steps, and B's prompt rides those decode steps too.
  uint32_t b_prompt = 100;
  ASSERT_FALSE(s.enqueue(make_request(2, b_prompt, 4)));
  std::vector<program_kind> kinds;
  std::vector<token_row> carried;
  uint32_t b_fed = 0;
  bool b_generating = false;
  constexpr int steps = 20;
  for (int i = 0; i < steps; ++i) {
    s.admit();
    auto kind = s.begin_step();
    kinds.push_back(kind);
    auto rows = feed(s, kind, kind == program_kind::decode && !carried.empty()
                                  ? std::span<const token_row>{carried}
                                  : std::span<const token_row>{});
    if (kind == program_kind::prefill) {
      EXPECT_EQ(rows[0].sequence, 1u);
      EXPECT_EQ(rows[0].position, b_fed);
      b_fed = std::min(b_prompt, b_fed + chunk);
      b_generating = b_fed == b_prompt;
    } else if (!b_generating) {
      EXPECT_EQ(rows[1].position, b_fed) << "B's prompt rides decode";
      EXPECT_EQ(rows[1].flags & model::row_active, model::row_active);
      ++b_fed;
      b_generating = b_fed == b_prompt;
    }
    auto next = sample(s, kind, rows, 5);
    // Carried rows survive only from a decode step to the next one.
    carried = kind == program_kind::decode ? next : std::vector<token_row>{};
  }
  EXPECT_TRUE(b_generating);
  using enum program_kind;
  // A's prefill was the last step, so a decode step comes first; then
  // chunks and decode steps alternate, each decode step feeding B one more
  // prompt token, until B's 100 are in (with 32-row chunks: 1 + 32 + 1 +
  // 32 + 1 + 32 + 1, the last ride emitting B's token); then decode only.
  std::vector<program_kind> want;
  uint32_t fed = 0;
  bool after_prefill = true;
  for (int i = 0; i < steps; ++i) {
    if (fed < b_prompt && !after_prefill) {
      want.push_back(prefill);
      fed = std::min(b_prompt, fed + chunk);
    } else {
      want.push_back(decode);
      fed += fed < b_prompt ? 1 : 0;
    }
    after_prefill = want.back() == prefill;
  }
  EXPECT_EQ(kinds, want) << "chunks of " << chunk;
  EXPECT_GE(std::count(kinds.begin(), kinds.end(), prefill), 3);
}

TEST_F(request_slots_test, idle_lets_prompts_ride_while_others_generate) {
  request_slots s{p_, 8, prefill_policy::idle};
  ASSERT_FALSE(s.enqueue(make_request(1, 2, 120))); // A outlasts B's prompt
  s.admit();
  ASSERT_EQ(s.begin_step(), program_kind::prefill);
  sample(s, program_kind::prefill, feed(s, program_kind::prefill), 5);
  ASSERT_FALSE(s.enqueue(make_request(2, 100, 4)));
  std::vector<token_row> carried;
  for (int i = 0; i < 100; ++i) {
    s.admit();
    ASSERT_EQ(s.begin_step(), program_kind::decode) << i;
    auto rows = feed(s, program_kind::decode, carried);
    EXPECT_EQ(rows[1].position, static_cast<uint32_t>(i));
    carried = sample(s, program_kind::decode, rows, 5);
  }
  auto events = s.take_events();
  EXPECT_EQ(events.back().request, 2u); // B's first token, from decode
}

TEST_F(request_slots_test, idle_chunks_a_long_prompt_but_steps_short_ones_together) {
  uint32_t chunk = p_.prefill.tokens;
  request_slots s{p_, 8, prefill_policy::idle};
  // Three short prompts at once: a decode step advances all three.
  for (uint64_t id = 1; id <= 3; ++id)
    ASSERT_FALSE(s.enqueue(make_request(id, 3, 2)));
  s.admit();
  EXPECT_EQ(s.begin_step(), program_kind::decode);
  request_slots t{p_, 8, prefill_policy::idle};
  // A long prompt beside a short one: chunks for the long one first.
  ASSERT_FALSE(t.enqueue(make_request(1, 3, 2)));
  ASSERT_FALSE(t.enqueue(make_request(2, chunk + 5, 2)));
  t.admit();
  ASSERT_EQ(t.begin_step(), program_kind::prefill);
  auto rows = feed(t, program_kind::prefill);
  EXPECT_EQ(rows[0].sequence, 1u);
}

TEST_F(request_slots_test, without_prefill_a_prompt_goes_one_token_a_step) {
  request_slots s{p_, 8, prefill_policy::off};
  ASSERT_FALSE(s.enqueue(make_request(1, 3, 2)));
  s.admit();
  std::vector<token_row> carried;
  for (uint32_t pos = 0; pos < 3; ++pos) {
    ASSERT_EQ(s.begin_step(), program_kind::decode);
    auto rows = feed(s, program_kind::decode, carried);
    EXPECT_EQ(rows[0].position, pos);
    carried = sample(s, program_kind::decode, rows, 4);
  }
  // The token loop: the next step's rows are what the sample wrote.
  ASSERT_EQ(s.begin_step(), program_kind::decode);
  auto rows = feed(s, program_kind::decode, carried);
  EXPECT_EQ(rows[0].token, 4);
  EXPECT_EQ(rows[0].position, 3u);
}

TEST_F(request_slots_test, a_broken_token_loop_is_an_error_not_a_guess) {
  request_slots s{p_, 8, prefill_policy::off};
  ASSERT_FALSE(s.enqueue(make_request(1, 1, 3)));
  s.admit();
  ASSERT_EQ(s.begin_step(), program_kind::decode);
  auto carried = sample(s, program_kind::decode,
                        feed(s, program_kind::decode), 4);
  carried[0].token = 11; // not what was sampled
  ASSERT_EQ(s.begin_step(), program_kind::decode);
  std::vector<token_row> rows(p_.decode.rows(0));
  auto err = s.feed(program_kind::decode, 0, 1,
                    std::span{carried}.first(rows.size()), rows);
  ASSERT_TRUE(err);
  EXPECT_NE(render(err).find("token loop is broken"), std::string::npos);
  // Decode-only: no carried rows for a generating slot is broken too.
  err = s.feed(program_kind::decode, 0, 1, {}, rows);
  EXPECT_TRUE(err);
}

} // namespace
} // namespace lockstep::actors::detail
