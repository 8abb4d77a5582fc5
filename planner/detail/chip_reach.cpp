#include "planner/detail/chip_reach.hpp"

#include <algorithm>
#include <bit>
#include <cassert>
#include <map>
#include <optional>

namespace lockstep::planner::detail {

namespace {

// Edge visits allowed for counting balls exactly (all chips together);
// beyond it M(r) is the Moore bound. 40 M visits is ~0.1 s; groq-10440
// needs ~2.5 M at radius 2.
constexpr uint64_t ball_budget = 40'000'000;

// Work allowed for the largest clique, and again for the largest set of
// diameter 2 (edge visits plus search calls, all chips together); beyond
// it the figure falls back to (largest degree + 1), or M(2), still bounds.
// groq-10440 takes ~10 M at radius 2 (a search over bit sets of a ball's
// chips); a 2-hop walk from every chip of every ball took 46 M and 198 ms.
constexpr uint64_t search_budget = 30'000'000;

// A set of at most 256 chips of one ball, by index (a local-1500 chip's
// later neighbours: 135).
struct chip_set {
  static constexpr uint32_t words = 4;
  static constexpr uint32_t capacity = 64 * words;
  uint64_t w[words] = {};
  void set(uint32_t i) { w[i / 64] |= uint64_t{1} << (i % 64); }
  void reset(uint32_t i) { w[i / 64] &= ~(uint64_t{1} << (i % 64)); }
  bool empty() const {
    uint64_t any = 0;
    for (auto x : w)
      any |= x;
    return any == 0;
  }
  uint32_t count() const {
    uint32_t n = 0;
    for (auto x : w)
      n += static_cast<uint32_t>(std::popcount(x));
    return n;
  }
  uint32_t first() const { // REQUIRES: !empty()
    uint32_t k = 0;
    while (w[k] == 0)
      ++k;
    return 64 * k + static_cast<uint32_t>(std::countr_zero(w[k]));
  }
  chip_set& operator|=(const chip_set& o) {
    for (uint32_t k = 0; k < words; ++k)
      w[k] |= o.w[k];
    return *this;
  }
  friend chip_set operator&(chip_set a, const chip_set& b) {
    for (uint32_t k = 0; k < words; ++k)
      a.w[k] &= b.w[k];
    return a;
  }
  friend chip_set operator-(chip_set a, const chip_set& b) {
    for (uint32_t k = 0; k < words; ++k)
      a.w[k] &= ~b.w[k];
    return a;
  }
};

// The largest clique within `cand` of the graph `adj` (rows as sets),
// `size` chips already taken: branch and bound with a pivot (a largest
// clique holds the pivot or one of its non-neighbours). `best` is the
// largest size seen; false once `calls` passes `budget`.
bool largest_clique(const std::vector<chip_set>& adj, chip_set cand,
                    uint32_t size, uint32_t& best, uint64_t& calls,
                    uint64_t budget) {
  if (++calls > budget)
    return false;
  if (cand.empty()) {
    best = std::max(best, size);
    return true;
  }
  if (size + cand.count() <= best)
    return true;
  uint32_t pivot = cand.first(), most = 0;
  for (chip_set rest = cand; !rest.empty(); rest.reset(rest.first())) {
    uint32_t u = rest.first(), n = (cand & adj[u]).count();
    if (n > most) {
      most = n;
      pivot = u;
    }
  }
  for (chip_set branch = cand - adj[pivot]; !branch.empty();) {
    uint32_t u = branch.first();
    branch.reset(u);
    if (!largest_clique(adj, cand & adj[u], size + 1, best, calls, budget))
      return false;
    cand.reset(u);
  }
  return true;
}

} // namespace

chip_reach::chip_reach(const cluster_config& config,
                       const std::vector<bool>& usable) {
  assert(usable.size() == config.chip_count());
  // Dense ids for usable chips.
  std::vector<uint32_t> id(config.chip_count(), UINT32_MAX);
  for (uint32_t c = 0; c < config.chip_count(); ++c)
    if (usable[c])
      id[c] = usable_count_++;
  adj_.resize(usable_count_);
  std::map<std::pair<uint32_t, uint32_t>, uint32_t> multiplicity;
  for (const auto& l : config.links) {
    if (!config.is_chip_link(l) || !usable[l.a] || !usable[l.b] || l.a == l.b)
      continue;
    uint32_t a = id[l.a], b = id[l.b];
    parallel_ = std::max(parallel_, ++multiplicity[{std::min(a, b),
                                                    std::max(a, b)}]);
    adj_[a].push_back(b);
    adj_[b].push_back(a);
  }
  for (auto& n : adj_) {
    std::sort(n.begin(), n.end());
    n.erase(std::unique(n.begin(), n.end()), n.end());
    max_degree_ = std::max<uint32_t>(max_degree_, uint32_t(n.size()));
  }
  balls_ = {usable_count_ == 0 ? 0u : 1u,
            std::min<uint64_t>(usable_count_, max_degree_ + 1)};
  clique_ = usable_count_ == 0
                ? 0
                : largest_close_set(1, 1).value_or(max_degree_ + 1);
}

uint64_t chip_reach::max_diameter2_set() {
  if (diameter2_ != 0 || usable_count_ == 0)
    return diameter2_;
  // Its cost, about: per chip, its ball (d + d^2 visits) and two passes
  // over its later chips' links. Past the budget, do not start.
  uint64_t d = max_degree_;
  if (uint64_t{usable_count_} * (d + d * d + max_ball(2) * (d + 1)) >
      search_budget) {
    diameter2_ = max_ball(2);
    return diameter2_;
  }
  diameter2_ = largest_close_set(2, std::max(clique_, 1u)).value_or(max_ball(2));
  return diameter2_;
}

std::optional<uint32_t> chip_reach::largest_close_set(uint32_t radius,
                                                      uint32_t best) {
  // A set of chips pairwise at most `radius` hops apart is a clique of G
  // (radius 1) or of G^2 (chips joined when at most 2 hops apart). Each
  // such clique has a lowest chip v and lies in v's ball of that radius:
  // the largest one containing v as its lowest chip is 1 + the largest
  // clique among the later chips of that ball.
  uint64_t work = 0;
  std::vector<uint32_t> seen(usable_count_, UINT32_MAX); // stamp: chip
  std::vector<uint32_t> slot(usable_count_);             // valid if seen
  std::vector<uint32_t> later;                           // of v's ball
  std::vector<chip_set> near_later; // by slot: later chips at most 1 hop away
  std::vector<chip_set> rows;       // by later chip: its neighbours among them
  for (uint32_t v = 0; v < usable_count_; ++v) {
    // The later chips within `radius` hops of v.
    later.clear();
    seen[v] = v;
    auto reached = [&](uint32_t x) {
      ++work;
      if (seen[x] != v) {
        seen[x] = v;
        if (x > v)
          later.push_back(x);
      }
    };
    for (auto u : adj_[v]) {
      reached(u);
      if (radius == 2)
        for (auto w : adj_[u])
          reached(w);
    }
    if (1 + later.size() <= best)
      continue;
    if (later.size() > chip_set::capacity)
      return std::nullopt; // too wide for the search
    // For every chip x next to (or one of) the later chips, the later chips
    // at most 1 hop from x. A later chip's row in G is its own entry; in
    // G^2 (two chips are within 2 hops iff some chip is at most 1 hop from
    // both) the union over its closed neighbourhood. Stamps: v + usable
    // (the ball walk above used v).
    uint32_t mark = usable_count_ + v;
    near_later.clear();
    auto slot_of = [&](uint32_t x) {
      if (seen[x] != mark) {
        seen[x] = mark;
        slot[x] = static_cast<uint32_t>(near_later.size());
        near_later.push_back({});
      }
      return slot[x];
    };
    for (uint32_t j = 0; j < later.size(); ++j) {
      near_later[slot_of(later[j])].set(j);
      for (auto x : adj_[later[j]]) {
        ++work;
        near_later[slot_of(x)].set(j);
      }
    }
    rows.assign(later.size(), {});
    for (uint32_t i = 0; i < later.size(); ++i) {
      rows[i] = near_later[slot[later[i]]];
      if (radius == 2)
        for (auto x : adj_[later[i]]) {
          ++work;
          rows[i] |= near_later[slot[x]];
        }
      rows[i].reset(i);
    }
    chip_set all;
    for (uint32_t i = 0; i < later.size(); ++i)
      all.set(i);
    uint32_t rest = best - 1;
    if (work > search_budget ||
        !largest_clique(rows, all, 0, rest, work, search_budget))
      return std::nullopt; // too costly
    best = std::max(best, rest + 1);
  }
  return best;
}

uint64_t chip_reach::max_ball(uint32_t r) {
  while (balls_.size() <= r) {
    auto radius = static_cast<uint32_t>(balls_.size());
    // The Moore bound: at most max_degree_ chips at hop 1 and each chip of
    // one hop adds at most max_degree_ - 1 at the next.
    uint64_t moore = 1, sphere = max_degree_;
    for (uint32_t i = 1; i <= radius && moore < usable_count_; ++i) {
      moore += sphere;
      sphere *= std::max<uint64_t>(max_degree_, 2) - 1;
    }
    uint64_t bound = std::min<uint64_t>(moore, usable_count_);
    if (balls_.back() >= usable_count_ || bound <= balls_.back()) {
      balls_.push_back(bound);
      continue;
    }
    // Exactly, by a BFS of depth `radius` from every chip, within budget.
    std::vector<uint32_t> seen(usable_count_, UINT32_MAX);
    std::vector<uint32_t> frontier, next;
    uint64_t visits = 0, most = 0;
    bool exact = true;
    for (uint32_t v = 0; v < usable_count_ && exact; ++v) {
      seen[v] = v;
      frontier = {v};
      uint64_t size = 1;
      for (uint32_t h = 0; h < radius && !frontier.empty(); ++h) {
        next.clear();
        for (auto x : frontier)
          for (auto u : adj_[x]) {
            ++visits;
            if (seen[u] != v) {
              seen[u] = v;
              next.push_back(u);
            }
          }
        size += next.size();
        frontier.swap(next);
      }
      most = std::max(most, size);
      exact = visits <= ball_budget;
    }
    balls_.push_back(exact ? most : bound);
  }
  return balls_[r];
}

uint32_t chip_reach::min_reach(uint32_t k) {
  assert(k <= usable_count_);
  uint32_t r = 0;
  // A ball that stops growing short of k: no k usable chips are connected
  // (no plan can use them); any figure is a bound then.
  while (max_ball(r) < k && (r == 0 || max_ball(r) > max_ball(r - 1)))
    ++r;
  return r;
}

uint32_t chip_reach::min_diameter(uint32_t k) {
  if (k <= 1)
    return 0;
  if (k <= clique_)
    return 1;
  return std::max(k <= max_diameter2_set() ? 2u : 3u, min_reach(k));
}

} // namespace lockstep::planner::detail
