// When a step is over (planner/step_order.hpp): the cluster switches
// between decode and prefill on shared SRAM only after a step's samples,
// which is safe only if every op and transfer of a step leads to one.

#include "planner/errc.hpp"
#include "planner/step_order.hpp"
#include "tests/planner/planner_fixture.hpp"

namespace lockstep::planner {
namespace {

using test::both_programs;
using test::load_shipped;
using test::make;

struct pair_case {
  const char* config;
  const char* model;
  plan_options options;
};

TEST(step_order, every_step_of_the_shipped_local_plans_ends_at_its_samples) {
  for (const auto& c : {pair_case{"local-8", "tiny-8", {}},
                        pair_case{"local-64", "tiny-64", {}},
                        pair_case{"local-64", "tiny-64", {16, 128, {}}},
                        pair_case{"local-512", "tiny-512", {}},
                        pair_case{"local-1500", "tiny-1500", {}}}) {
    auto p = make(load_shipped(c.config), c.model, c.options).p;
    for (auto kind : both_programs)
      EXPECT_EQ(check_step_ends_at_samples(p.program(kind)), caf::error{})
          << c.config << " " << to_string(kind) << ": "
          << render(check_step_ends_at_samples(p.program(kind)));
  }
}

TEST(step_order, an_op_that_leads_to_no_sample_is_named) {
  auto p = make(load_shipped("local-8"), "tiny-8").p;
  for (auto kind : both_programs) {
    auto prog = p.program(kind);
    // A copy of the first attention op, which nothing reads.
    auto extra = test::find_op(
        prog, [](const op& o) { return o.kind == op_kind::attention; });
    extra.id = static_cast<uint32_t>(prog.ops.size());
    prog.ops.push_back(extra);
    auto err = check_step_ends_at_samples(prog);
    ASSERT_TRUE(err);
    EXPECT_EQ(err.code(), static_cast<uint8_t>(errc::invalid_plan));
    EXPECT_NE(render(err).find("op " + std::to_string(extra.id)),
              std::string::npos)
        << render(err);
  }
}

TEST(step_order, a_transfer_nobody_reads_is_named) {
  auto p = make(load_shipped("local-8"), "tiny-8").p;
  auto prog = p.prefill;
  ASSERT_FALSE(prog.transfers.empty());
  auto extra = prog.transfers.front();
  extra.id = static_cast<uint32_t>(prog.transfers.size());
  prog.transfers.push_back(extra);
  auto err = check_step_ends_at_samples(prog);
  ASSERT_TRUE(err);
  EXPECT_NE(render(err).find("transfer " + std::to_string(extra.id)),
            std::string::npos)
      << render(err);
}

TEST(step_order, a_program_without_a_sample_is_refused) {
  auto p = make(load_shipped("local-8"), "tiny-8").p;
  auto prog = p.decode;
  std::erase_if(prog.ops, [](const op& o) { return o.kind == op_kind::sample; });
  auto err = check_step_ends_at_samples(prog);
  ASSERT_TRUE(err);
  EXPECT_NE(render(err).find("no sample op"), std::string::npos)
      << render(err);
}

} // namespace
} // namespace lockstep::planner
