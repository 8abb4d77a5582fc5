#include "model/sampler.hpp"

#include "model/det_math.hpp"
#include "model/errc.hpp"
#include "model/weight_gen.hpp"

#include <algorithm>
#include <numeric>
#include <string>
#include <vector>

namespace lockstep::model {

caf::error validate(const sampling_params& p) {
  if (!(p.temperature >= 0.0f) || p.temperature > 1e6f)
    return caf::make_error(errc::invalid_argument,
                           "temperature must be in [0, 1e6], got " +
                               std::to_string(p.temperature));
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f))
    return caf::make_error(errc::invalid_argument,
                           "top_p must be in (0, 1], got " +
                               std::to_string(p.top_p));
  return {};
}

int32_t sample(std::span<const float> logits, const sampling_params& p,
               uint64_t request_id, uint64_t step) {
  auto n = static_cast<uint32_t>(logits.size());
  if (p.greedy()) {
    uint32_t best = 0;
    for (uint32_t i = 1; i < n; ++i)
      if (logits[i] > logits[best])
        best = i;
    return static_cast<int32_t>(best);
  }
  // Candidates in a total order: logit descending, token id ascending.
  std::vector<uint32_t> ids(n);
  std::iota(ids.begin(), ids.end(), 0u);
  uint32_t keep = p.top_k > 0 && p.top_k < n ? p.top_k : n;
  auto before = [&](uint32_t a, uint32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  std::partial_sort(ids.begin(), ids.begin() + keep, ids.end(), before);
  ids.resize(keep);
  double inv_t = 1.0 / static_cast<double>(p.temperature);
  double top = static_cast<double>(logits[ids[0]]) * inv_t;
  std::vector<double> w(keep);
  double total = 0.0;
  for (uint32_t i = 0; i < keep; ++i) {
    w[i] = det::exp(static_cast<double>(logits[ids[i]]) * inv_t - top);
    total += w[i];
  }
  if (p.top_p < 1.0f) {
    double cut = static_cast<double>(p.top_p) * total;
    double cum = 0.0;
    uint32_t m = 0;
    while (m < keep) {
      cum += w[m++];
      if (cum >= cut)
        break;
    }
    keep = m;
    total = cum;
  }
  // 53 random bits keyed on (seed, request, step): a uniform in [0, 1).
  uint64_t bits = mix64(mix64(p.seed, request_id), step);
  double u = static_cast<double>(bits >> 11) * 0x1p-53;
  double target = u * total;
  double cum = 0.0;
  for (uint32_t i = 0; i < keep; ++i) {
    cum += w[i];
    if (target < cum)
      return static_cast<int32_t>(ids[i]);
  }
  return static_cast<int32_t>(ids[keep - 1]);
}

} // namespace lockstep::model
