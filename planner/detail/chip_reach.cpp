#include "planner/detail/chip_reach.hpp"

#include <algorithm>
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

// Bron-Kerbosch with Tomita's pivot, on sorted neighbour lists. `best` is
// the largest clique size seen; returns false once the budget is spent.
class clique_search {
public:
  explicit clique_search(const std::vector<std::vector<uint32_t>>& adj)
      : adj_(adj) {}

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
    if (++calls_ > clique_budget)
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
  uint64_t calls_ = 0;
};

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
  if (!clique_search{adj_}.run(clique_))
    clique_ = max_degree_ + 1;
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
  return std::max(2u, min_reach(k));
}

} // namespace lockstep::planner::detail
