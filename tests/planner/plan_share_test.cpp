// A host's share of a plan (planner/plan_share.hpp): its own nodes' ops and
// the transfers into and out of them stay exactly as planned; everyone
// else's lists are freed while ids and slots keep their meaning.

#include "planner/plan_share.hpp"
#include "tests/planner/planner_fixture.hpp"

namespace lockstep::planner {
namespace {

using test::both_programs;
using test::load;
using test::make;

TEST(plan_share, a_host_keeps_its_own_programs_whole) {
  auto c = load("local-64");
  auto whole = make(c, "tiny-64", {1, 0, {}}).p;
  std::vector<bool> mine(c.node_count());
  for (uint32_t n = 0; n < mine.size(); ++n)
    mine[n] = c.ref(n).host == 3;
  auto share = whole;
  keep_programs_of(share, mine);
  for (auto kind : both_programs) {
    const auto& w = whole.program(kind);
    const auto& s = share.program(kind);
    ASSERT_EQ(s.ops.size(), w.ops.size());
    ASSERT_EQ(s.transfers.size(), w.transfers.size());
    size_t kept = 0;
    for (size_t i = 0; i < w.ops.size(); ++i) {
      EXPECT_EQ(s.ops[i].id, w.ops[i].id);
      EXPECT_EQ(s.ops[i].chip, w.ops[i].chip);
      EXPECT_EQ(s.ops[i].start_slot, w.ops[i].start_slot);
      if (mine[w.ops[i].chip]) {
        ++kept;
        EXPECT_EQ(s.ops[i].inputs.size(), w.ops[i].inputs.size()) << i;
        EXPECT_EQ(s.ops[i].outputs.size(), w.ops[i].outputs.size()) << i;
        EXPECT_EQ(s.ops[i].weights, w.ops[i].weights) << i;
        EXPECT_EQ(s.ops[i].after_ops, w.ops[i].after_ops) << i;
      } else {
        EXPECT_TRUE(s.ops[i].inputs.empty() && s.ops[i].outputs.empty() &&
                    s.ops[i].weights.empty() && s.ops[i].after_ops.empty())
            << i;
      }
    }
    EXPECT_GT(kept, 0u);
    EXPECT_LT(kept, w.ops.size() / 4);
    for (size_t i = 0; i < w.transfers.size(); ++i) {
      const auto& t = w.transfers[i];
      bool touches = mine[t.src] || mine[t.dst];
      EXPECT_EQ(s.transfers[i].dst_offsets.empty(), !touches) << i;
      if (touches) {
        EXPECT_EQ(s.transfers[i].dst_offsets, t.dst_offsets) << i;
      }
      EXPECT_EQ(s.transfers[i].start_slot, t.start_slot);
      EXPECT_EQ(s.transfers[i].after_op, t.after_op);
    }
  }
}

} // namespace
} // namespace lockstep::planner
