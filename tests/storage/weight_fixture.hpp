#pragma once

// Helpers shared by the weight store tests: a small model with edge tiles
// everywhere, opening a store, and a store's whole content for comparing
// stores key for key.

#include "storage/detail/tile_codec.hpp"
#include "storage/store.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>

namespace lockstep::test {

// Small, with edge tiles everywhere: 1000 vocabulary rows (15 full row
// tiles + 40 rows), d_model 192 (3 column tiles), d_ff 320 (5).
inline model::model_spec odd_spec(model::dtype type = model::dtype::f32) {
  model::model_spec s;
  s.name = "test-odd";
  s.n_layers = 2;
  s.d_model = 192;
  s.n_heads = 3;
  s.n_kv_heads = 1;
  s.head_dim = 64;
  s.d_ff = 320;
  s.vocab = 1000;
  s.rope_theta = 10000.0;
  s.rms_eps = 1e-5f;
  s.max_context = 64;
  s.weight_dtype = type;
  return s;
}

inline std::unique_ptr<storage::store>
open_store(const std::filesystem::path& dir, bool read_only = false) {
  storage::open_options o;
  o.create_if_missing = !read_only;
  o.read_only = read_only;
  auto s = storage::store::open(dir, o);
  EXPECT_TRUE(s) << render(s.error());
  return s ? std::move(*s) : nullptr;
}

using store_content = std::map<std::pair<int, std::string>, std::string>;

// Every key and value of the column families `cfs`.
inline store_content content(const storage::store& s,
                             std::initializer_list<storage::column> cfs = {
                                 storage::column::meta,
                                 storage::column::weights}) {
  store_content out;
  for (auto cf : cfs)
    EXPECT_FALSE(s.scan(cf, "", [&](std::string_view k, std::string_view v) {
      out[{static_cast<int>(cf), std::string{k}}] = std::string{v};
      return true;
    }));
  return out;
}

inline std::string tile_key(model::tensor_id id, uint32_t rt, uint32_t ct) {
  return storage::detail::encode_key({id, rt, ct});
}

} // namespace lockstep::test
