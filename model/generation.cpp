#include "model/generation.hpp"

#include "common/digest.hpp"

#include <algorithm>

namespace lockstep::model {

caf::expected<std::vector<generation_result>>
generate(reference_engine& engine, std::span<const generation_request> reqs) {
  const auto& spec = engine.spec();
  for (size_t i = 0; i < reqs.size(); ++i) {
    const auto& r = reqs[i];
    if (r.prompt.empty())
      return caf::make_error(errc::invalid_argument,
                             "request " + std::to_string(r.request_id) +
                                 ": empty prompt");
    if (auto err = validate(r.sampling))
      return err;
    if (r.prompt.size() + r.max_tokens > spec.max_context + size_t{1})
      return caf::make_error(
          errc::context_full,
          "request " + std::to_string(r.request_id) + ": " +
              std::to_string(r.prompt.size()) + " prompt tokens + " +
              std::to_string(r.max_tokens) + " new tokens exceed max_context " +
              std::to_string(spec.max_context));
  }
  size_t n = reqs.size();
  std::vector<sequence_state> seqs;
  std::vector<sha256> hashes(n);
  std::vector<generation_result> out(n);
  for (size_t i = 0; i < n; ++i)
    seqs.push_back(engine.new_sequence());

  auto record = [&](size_t i, const std::vector<float>& logits) {
    hashes[i].update_f32_le(logits);
    const auto& r = reqs[i];
    out[i].tokens.push_back(
        sample(logits, r.sampling, r.request_id, out[i].tokens.size()));
  };

  // Prefill: every request advances by one chunk per forward pass.
  std::vector<size_t> fed(n, 0);
  for (;;) {
    std::vector<sequence_chunk> batch;
    std::vector<size_t> owner;
    for (size_t i = 0; i < n; ++i) {
      const auto& p = reqs[i].prompt;
      if (reqs[i].max_tokens == 0 || fed[i] == p.size())
        continue;
      size_t chunk =
          reqs[i].prefill_chunk == 0 ? p.size() : reqs[i].prefill_chunk;
      size_t len = std::min(chunk, p.size() - fed[i]);
      batch.push_back({&seqs[i], std::span{p}.subspan(fed[i], len)});
      owner.push_back(i);
      fed[i] += len;
    }
    if (batch.empty())
      break;
    auto logits = engine.forward(batch);
    if (!logits)
      return logits.error();
    for (size_t b = 0; b < owner.size(); ++b)
      if (fed[owner[b]] == reqs[owner[b]].prompt.size())
        record(owner[b], (*logits)[b]);
  }

  // Decode: feed each request's last token until it has max_tokens.
  for (;;) {
    std::vector<sequence_chunk> batch;
    std::vector<size_t> owner;
    for (size_t i = 0; i < n; ++i)
      if (out[i].tokens.size() < reqs[i].max_tokens) {
        batch.push_back({&seqs[i], std::span{out[i].tokens}.last(1)});
        owner.push_back(i);
      }
    if (batch.empty())
      break;
    auto logits = engine.forward(batch);
    if (!logits)
      return logits.error();
    for (size_t b = 0; b < owner.size(); ++b)
      record(owner[b], (*logits)[b]);
  }
  for (size_t i = 0; i < n; ++i)
    out[i].logits_sha256 = hashes[i].hex_digest();
  return out;
}

} // namespace lockstep::model
