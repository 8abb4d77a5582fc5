#include "planner/detail/chip_reach.hpp"

#include <algorithm>
#include <bit>
#include <cassert>
#include <map>

namespace lockstep::planner::detail {

namespace {

// Edge visits allowed for counting balls exactly (all chips together);
// beyond it M(r) is the Moore bound. 40 M visits is ~0.1 s; groq-10440
// needs ~2.5 M at radius 2.
constexpr uint64_t ball_budget = 40'000'000;

// Recursive calls allowed for the largest clique; beyond it the clique
// bound falls back to (largest degree + 1), which is still a bound.
constexpr uint64_t clique_budget = 2'000'000;

// Work allowed for the largest set of diameter 2 (edge visits plus clique
// search calls, all chips together); beyond it the bound falls back to
// M(2). groq-10440 takes ~10 M (a search over bit sets of a ball's
// chips); a 2-hop walk from every chip of every ball took 46 M and 198 ms.
constexpr uint64_t diameter2_budget = 30'000'000;

// Bron-Kerbosch with Tomita's pivot, on sorted neighbour lists. `best` is
// the largest clique size seen; returns false once `calls` passes
// `budget`.
class clique_search {
public:
  clique_search(const std::vector<std::vector<uint32_t>>& adj, uint64_t& calls,
                uint64_t budget)
      : adj_(adj), calls_(calls), budget_(budget) {}

  bool run(uint32_t& best) {
    for (uint32_t v = 0; v < adj_.size(); ++v) {
      std::vector<uint32_t> later;
      for (auto u : adj_[v])
        if (u > v)
          later.push_back(u);
      if (!expand(1, later, {}, best))
        return false;
    }
    return true;
  }

private:
  std::vector<uint32_t> meet(const std::vector<uint32_t>& a, uint32_t v) const {
    std::vector<uint32_t> out;
    std::set_intersection(a.begin(), a.end(), adj_[v].begin(), adj_[v].end(),
                          std::back_inserter(out));
    return out;
  }

  bool expand(uint32_t size, std::vector<uint32_t> cand,
              std::vector<uint32_t> done, uint32_t& best) {
    if (++calls_ > budget_)
      return false;
    if (cand.empty()) {
      best = std::max(best, size);
      return true;
    }
    if (size + cand.size() <= best)
      return true; // cannot beat the best
    // Pivot: the vertex of cand ∪ done with most neighbours in cand.
    uint32_t pivot = cand.front();
    size_t most = 0;
    for (const auto* set : {&cand, &done})
      for (auto u : *set) {
        size_t n = meet(cand, u).size();
        if (n >= most) {
          most = n;
          pivot = u;
        }
      }
    std::vector<uint32_t> branch;
    std::set_difference(cand.begin(), cand.end(), adj_[pivot].begin(),
                        adj_[pivot].end(), std::back_inserter(branch));
    for (auto v : branch) {
      if (!expand(size + 1, meet(cand, v), meet(done, v), best))
        return false;
      cand.erase(std::lower_bound(cand.begin(), cand.end(), v));
      done.insert(std::lower_bound(done.begin(), done.end(), v), v);
    }
    return true;
  }

  const std::vector<std::vector<uint32_t>>& adj_;
  uint64_t& calls_;
  uint64_t budget_;
};

// A set of at most 128 chips of one ball, by index.
struct chip_set {
  static constexpr uint32_t capacity = 128;
  uint64_t w[2] = {0, 0};
  void set(uint32_t i) { w[i / 64] |= uint64_t{1} << (i % 64); }
  void reset(uint32_t i) { w[i / 64] &= ~(uint64_t{1} << (i % 64)); }
  bool empty() const { return (w[0] | w[1]) == 0; }
  uint32_t count() const {
    return static_cast<uint32_t>(std::popcount(w[0]) + std::popcount(w[1]));
  }
  uint32_t first() const {
    return w[0] != 0 ? static_cast<uint32_t>(std::countr_zero(w[0]))
                     : 64 + static_cast<uint32_t>(std::countr_zero(w[1]));
  }
  chip_set& operator|=(const chip_set& o) {
    w[0] |= o.w[0];
    w[1] |= o.w[1];
    return *this;
  }
  friend chip_set operator&(chip_set a, const chip_set& b) {
    a.w[0] &= b.w[0];
    a.w[1] &= b.w[1];
    return a;
  }
  friend chip_set operator-(chip_set a, const chip_set& b) {
    a.w[0] &= ~b.w[0];
    a.w[1] &= ~b.w[1];
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
  clique_ = usable_count_ == 0 ? 0 : 1;
  uint64_t calls = 0;
  if (!clique_search{adj_, calls, clique_budget}.run(clique_))
    clique_ = max_degree_ + 1;
}

uint64_t chip_reach::max_diameter2_set() {
  if (diameter2_ != 0)
    return diameter2_;
  // A set of diameter <= 2 is a clique of G^2 (chips joined when at most 2
  // hops apart). Each such clique has a lowest chip v and lies in v's ball
  // of radius 2: the largest one containing v as its lowest chip is
  // 1 + the largest clique of G^2 among the later chips of that ball.
  // Its cost, about: per chip, its ball (d + d^2 visits) and two passes
  // over its later chips' links. Past the budget, do not start.
  uint64_t d = max_degree_;
  if (uint64_t{usable_count_} * (d + d * d + max_ball(2) * (d + 1)) >
      diameter2_budget) {
    diameter2_ = max_ball(2);
    return diameter2_;
  }
  uint64_t work = 0;
  uint32_t best = std::max(clique_, usable_count_ == 0 ? 0u : 1u);
  std::vector<uint32_t> seen(usable_count_, UINT32_MAX); // stamp: chip
  std::vector<uint32_t> slot(usable_count_);             // valid if seen
  std::vector<uint32_t> later;                           // of v's ball
  std::vector<chip_set> near_later; // by slot: later chips at most 1 hop away
  std::vector<chip_set> g2;         // by later chip: G^2 among them
  for (uint32_t v = 0; v < usable_count_; ++v) {
    // The later chips within 2 hops of v.
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
      for (auto w : adj_[u])
        reached(w);
    }
    if (1 + later.size() <= best)
      continue;
    if (later.size() > chip_set::capacity) {
      diameter2_ = max_ball(2); // too wide for the search: the ball bound
      return diameter2_;
    }
    // Two later chips are within 2 hops iff some chip is at most 1 hop
    // from both: for every chip x next to (or one of) them, the set of
    // later chips at most 1 hop from x; then each one's G^2 row is the
    // union over its own closed neighbourhood. Stamps: v + usable (the
    // ball walk above used v).
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
    g2.assign(later.size(), {});
    for (uint32_t i = 0; i < later.size(); ++i) {
      g2[i] |= near_later[slot[later[i]]];
      for (auto x : adj_[later[i]]) {
        ++work;
        g2[i] |= near_later[slot[x]];
      }
      g2[i].reset(i);
    }
    chip_set all;
    for (uint32_t i = 0; i < later.size(); ++i)
      all.set(i);
    uint32_t rest = best - 1;
    if (work > diameter2_budget ||
        !largest_clique(g2, all, 0, rest, work, diameter2_budget)) {
      diameter2_ = max_ball(2); // too costly: the ball bound
      return diameter2_;
    }
    best = std::max(best, rest + 1);
  }
  diameter2_ = best;
  return diameter2_;
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
