// Groups wider than a node reduce in two levels: partial combines inside
// each node (outputs: canonical pieces of the node's block range), then a
// root combine across nodes. The verifier follows where every part's
// values come from (tiny-512 on local-512: groups of 16 over two nodes).

#include "tests/planner/verifier_fixture.hpp"

namespace lockstep::planner {
namespace {

using test::end_slot;
using test::joined;
using test::load;
using test::make;
using test::report_of;

class two_level_verifier : public ::testing::Test {
protected:
  static void SetUpTestSuite() {
    config_.emplace(load("local-512"));
    good_.emplace(make(*config_, "tiny-512").p);
  }
  static void TearDownTestSuite() {
    good_.reset();
    config_.reset();
  }
  static bool partial(const op& o) {
    return o.kind == op_kind::combine && !o.parts.empty() &&
           !(o.parts.front().first_block == 0 &&
             o.parts.back().end_block == o.n_blocks);
  }
  verify_report report(const std::function<void(plan&)>& mutate) {
    return report_of(*good_, *config_, mutate);
  }
  std::string violations(const std::function<void(plan&)>& mutate) {
    return joined(report(mutate));
  }
  // A root combine that reads a partial combine of another chip.
  static op& two_level_root(plan& p) {
    auto& prog = p.decode;
    for (auto& o : prog.ops)
      if (o.kind == op_kind::combine && !partial(o))
        for (const auto& part : o.parts)
          if (part.chip != o.chip)
            for (auto t : o.after_transfers) {
              auto prod = prog.transfers[t].after_op;
              if (prod != no_id && partial(prog.ops[prod]))
                return o;
            }
    throw std::runtime_error("no two-level combine");
  }
  static inline std::optional<cluster_config> config_;
  static inline std::optional<plan> good_;
};

TEST_F(two_level_verifier, accepts_the_good_plan) {
  plan p = *good_;
  ASSERT_GT(p.tp_degree, config_->chips_per_node) << "needs groups over nodes";
  EXPECT_NO_THROW(two_level_root(p));
  EXPECT_EQ(violations([](plan&) {}), "");
}

TEST_F(two_level_verifier, partial_sums_used_as_the_activation) {
  auto r = report([](plan& p) {
    for (auto& o : p.decode.ops)
      if (partial(o))
        for (auto& reader : p.decode.ops)
          if (reader.chip == o.chip &&
              (reader.kind == op_kind::gather ||
               reader.kind == op_kind::attention ||
               reader.kind == op_kind::mlp) &&
              reader.start_slot >= end_slot(o)) {
            reader.after_ops.push_back(o.id); // x assembled from partials
            return;
          }
  });
  EXPECT_VIOLATION(joined(r), "partial sums read by");
  EXPECT_RULES(r, "partial-readers");
}

TEST_F(two_level_verifier, part_claimed_from_the_wrong_chip) {
  auto r = report([](plan& p) {
    auto& o = two_level_root(p);
    for (auto& part : o.parts)
      if (part.chip != o.chip) {
        part.chip = o.chip == 0 ? 1 : 0; // not where the values come from
        return;
      }
  });
  EXPECT_VIOLATION(joined(r), "no input carries the part");
  EXPECT_RULES(r, "combine-provenance");
}

TEST_F(two_level_verifier, partial_of_another_slice) {
  auto v = violations([](plan& p) {
    auto& o = two_level_root(p);
    // The root combines slice [a, b) but reads a partial of other elements.
    o.out_first += 1;
  });
  EXPECT_VIOLATION(v, "no input carries the part");
}

TEST_F(two_level_verifier, output_outside_the_vector) {
  auto v = violations([](plan& p) {
    auto& o = two_level_root(p);
    o.out_end = p.spec.d_model + 1;
  });
  EXPECT_VIOLATION(v, "not a slice");
}

} // namespace
} // namespace lockstep::planner
