// The verifier catches each kind of violation in hand-built bad plans: each
// test takes a verified plan, breaks exactly one rule, and expects the
// verifier to name it.

#include "tests/planner/planner_fixture.hpp"

#include <functional>
#include <optional>
#include <stdexcept>

namespace lockstep::planner {
namespace {

using test::load;
using test::make;

// Applies `mutate` to a copy of a good plan; returns all violations.
std::string violations_of(plan p, const cluster_config& config,
                          const std::function<void(plan&)>& mutate) {
  mutate(p);
  auto r = verify_plan(p, config);
  std::string all;
  for (const auto& v : r.violations)
    all += v + "\n";
  return all;
}

class verifier : public ::testing::Test {
protected:
  static void SetUpTestSuite() {
    config_ = new cluster_config(load("local-64"));
    good_ = new plan(make(*config_, "tiny-64").p);
  }
  static void TearDownTestSuite() {
    delete good_;
    delete config_;
  }

  std::string violations(const std::function<void(plan&)>& mutate) {
    return violations_of(*good_, *config_, mutate);
  }

  const op& first(op_kind k) const {
    for (const auto& o : good_->ops)
      if (o.kind == k)
        return o;
    throw std::runtime_error("no such op");
  }

  static cluster_config* config_;
  static plan* good_;
};

cluster_config* verifier::config_ = nullptr;
plan* verifier::good_ = nullptr;

#define EXPECT_VIOLATION(text, needle)                                         \
  EXPECT_NE((text).find(needle), std::string::npos) << (text)

TEST_F(verifier, accepts_the_good_plan) {
  ASSERT_GT(good_->tp_degree, 1u) << "the fixture needs reduction splits";
  EXPECT_EQ(violations([](plan&) {}), "");
}

TEST_F(verifier, link_carrying_two_transfers_in_one_slot) {
  auto v = violations([](plan& p) {
    // Two transfers onto one link: move the second onto the first's link
    // and slot (ends adjusted to stay consistent).
    auto& a = p.transfers[0];
    for (auto& b : p.transfers)
      if (b.id != a.id && b.src == a.src && b.link != a.link) {
        b.link = a.link;
        b.dst = a.dst;
        b.start_slot = a.start_slot;
        return;
      }
    for (auto& b : p.transfers)
      if (b.id != a.id) {
        b.link = a.link;
        b.src = a.src;
        b.dst = a.dst;
        b.start_slot = a.start_slot;
        return;
      }
  });
  EXPECT_VIOLATION(v, "carries transfer");
}

TEST_F(verifier, chip_running_two_ops_at_once) {
  auto v = violations([](plan& p) {
    for (auto& a : p.ops)
      for (auto& b : p.ops)
        if (a.id < b.id && a.chip == b.chip) {
          b.start_slot = a.start_slot;
          return;
        }
  });
  EXPECT_VIOLATION(v, "at once");
}

TEST_F(verifier, op_starting_before_its_input_arrives) {
  auto v = violations([](plan& p) {
    for (auto& o : p.ops)
      if (!o.after_transfers.empty()) {
        o.start_slot = p.transfers[o.after_transfers[0]].start_slot;
        return;
      }
  });
  EXPECT_VIOLATION(v, "starts before its input");
}

TEST_F(verifier, transfer_faster_than_the_link) {
  auto v = violations([](plan& p) {
    auto& t = p.transfers[0];
    t.payload_bytes = 1u << 30;
    t.bytes = t.payload_bytes + 24;
  });
  EXPECT_VIOLATION(v, "need");
}

TEST_F(verifier, sram_exceeded) {
  auto v = violations([&](plan& p) {
    p.usage[p.chips_used[0]].kv_bytes += config_->chip.sram_bytes;
  });
  EXPECT_VIOLATION(v, "bytes of SRAM");
}

TEST_F(verifier, work_on_a_spare_chip) {
  auto v = violations([&](plan& p) { p.ops[0].chip = config_->spares[0]; });
  EXPECT_VIOLATION(v, "spare or failed chip");
}

TEST_F(verifier, combine_in_a_non_canonical_order) {
  auto v = violations([](plan& p) {
    for (auto& o : p.ops)
      if (o.kind == op_kind::combine) {
        // Split the first part's maximal node into its two halves: the same
        // sum, a different (non-canonical) addition order.
        for (size_t i = 0; i < o.nodes.size(); ++i)
          if (o.nodes[i].count > 1) {
            auto n = o.nodes[i];
            o.nodes[i] = {n.first, n.count / 2};
            o.nodes.insert(o.nodes.begin() + i + 1,
                           {n.first + n.count / 2, n.count / 2});
            return;
          }
      }
  });
  EXPECT_VIOLATION(v, "not the canonical tree's maximal node");
}

TEST_F(verifier, reduction_split_off_block_boundaries) {
  auto v = violations([](plan& p) {
    for (auto& o : p.ops)
      if (o.kind == op_kind::combine) {
        o.parts[1].first_block += 1; // a gap: blocks lost
        return;
      }
  });
  EXPECT_VIOLATION(v, "do not tile blocks");
}

TEST_F(verifier, overlapping_receive_windows) {
  auto v = violations([](plan& p) {
    for (auto& a : p.transfers)
      for (auto& b : p.transfers)
        if (a.id < b.id && a.dst == b.dst) {
          b.dst_offsets[0] = a.dst_offsets[0];
          return;
        }
  });
  EXPECT_VIOLATION(v, "overlap");
}

TEST_F(verifier, buffer_overwritten_before_its_consumer_ran) {
  auto v = violations([](plan& p) {
    // One buffer, rewritten every step, with a step shorter than the time
    // from the write to the end of its read.
    auto& t = p.transfers[0];
    t.dst_offsets.resize(1);
    p.slots_per_step = 1;
  });
  EXPECT_VIOLATION(v, "before its consumer");
}

TEST_F(verifier, weight_not_placed) {
  auto v = violations([](plan& p) {
    auto it = std::find_if(p.shards.begin(), p.shards.end(), [](auto& s) {
      return s.tensor.kind == model::tensor_kind::w_up;
    });
    p.usage[it->chip].weight_bytes -= it->bytes;
    p.shards.erase(it);
  });
  EXPECT_VIOLATION(v, "l0.w_up: shards cover");
}

TEST_F(verifier, broken_multi_hop_route) {
  auto c = load("groq-64");
  auto r = make(c, "llama-3-8b", {1, 1024, {}});
  ASSERT_TRUE(r.verdict.ok());
  auto hop = std::find_if(r.p.transfers.begin(), r.p.transfers.end(),
                          [](auto& t) { return t.after_transfer != no_id; });
  ASSERT_NE(hop, r.p.transfers.end()) << "the fixture needs a 2-hop route";
  // Claim the second hop continues some other transfer.
  for (const auto& t : r.p.transfers)
    if (t.dst != hop->src) {
      hop->after_transfer = t.id;
      break;
    }
  auto report = verify_plan(r.p, c);
  ASSERT_FALSE(report.ok());
  std::string all;
  for (const auto& s : report.violations)
    all += s + "\n";
  EXPECT_VIOLATION(all, "route broken");
}

// Groups wider than a node reduce in two levels: partial combines inside
// each node (outputs: canonical pieces of the node's block range), then a
// root combine across nodes. The verifier follows where every part's
// values come from.
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
  std::string violations(const std::function<void(plan&)>& mutate) {
    return violations_of(*good_, *config_, mutate);
  }
  // A root combine that reads a partial combine of another chip.
  static op& two_level_root(plan& p) {
    for (auto& o : p.ops)
      if (o.kind == op_kind::combine && !partial(o))
        for (const auto& part : o.parts)
          if (part.chip != o.chip)
            for (auto t : o.after_transfers) {
              auto prod = p.transfers[t].after_op;
              if (prod != no_id && partial(p.ops[prod]))
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
  auto v = violations([](plan& p) {
    for (auto& o : p.ops)
      if (partial(o))
        for (auto& reader : p.ops)
          if (reader.chip == o.chip && reader.kind == op_kind::gather &&
              reader.start_slot >= o.start_slot + o.duration_slots) {
            reader.after_ops.push_back(o.id); // x assembled from partials
            return;
          }
  });
  EXPECT_VIOLATION(v, "partial sums read by");
}

TEST_F(two_level_verifier, part_claimed_from_the_wrong_chip) {
  auto v = violations([](plan& p) {
    auto& o = two_level_root(p);
    for (auto& part : o.parts)
      if (part.chip != o.chip) {
        part.chip = o.chip == 0 ? 1 : 0; // not where the values come from
        return;
      }
  });
  EXPECT_VIOLATION(v, "no input carries the part");
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
