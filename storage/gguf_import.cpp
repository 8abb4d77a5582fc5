#include "storage/gguf_import.hpp"

#include "storage/gguf_vocabulary.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace lockstep::storage::gguf {

caf::expected<model::model_spec>
import_spec(const gguf_model& m, std::optional<model::dtype> dtype) {
  auto spec = m.spec;
  if (dtype)
    spec.weight_dtype = *dtype;
  return spec;
}

std::string source_name(const gguf_file& f) {
  return "gguf:" + f.path().filename().string();
}

tensor_source source_of(const gguf_file& f, const gguf_model& m,
                        const model::model_spec& spec) {
  return [&f, &m, spec](model::tensor_id id, const model::shard_range& range)
             -> caf::expected<model::tensor> {
    const tensor_info* t = nullptr;
    for (const auto& e : m.tensors)
      if (e.id == id)
        t = e.tensor;
    if (t == nullptr)
      return caf::make_error(errc::invalid_argument,
                             "the GGUF model has no tensor " +
                                 model::to_string(id));
    auto shape = model::shape_of(spec, id.kind);
    if (auto err = model::check_shard(shape, range))
      return err;
    auto traits = *traits_of(static_cast<uint32_t>(t->type));
    // One GGUF row is ne[0] = shape.cols elements, whole blocks.
    uint64_t row_bytes = shape.cols / traits.block_elems * traits.block_bytes;
    uint32_t rows = range.rows();
    std::vector<std::byte> raw(row_bytes * rows);
    if (auto err = f.read_rows(*t, range.row_begin, rows, raw))
      return err;
    std::vector<float> values(size_t{shape.cols} * rows);
    to_f32(t->type, raw, values);
    auto type = model::dtype_of(spec, id.kind);
    model::tensor out{shape, type, range};
    for (uint32_t r = 0; r < rows; ++r) {
      const float* row = values.data() + size_t{r} * shape.cols;
      const float* src = row + range.col_begin;
      auto dst = out.row(r);
      if (type == model::dtype::int8) {
        // The store's int8: one scale per whole row (so every tile of a row
        // agrees), symmetric, q = round-half-even(x / scale) in [-127, 127].
        float amax = 0;
        for (uint32_t c = 0; c < shape.cols; ++c) {
          if (!std::isfinite(row[c]))
            return caf::make_error(
                errc::invalid_file,
                f.path().string() + ": tensor '" + t->name + "' row " +
                    std::to_string(range.row_begin + r) +
                    " holds a value that is not finite; int8 cannot hold it");
          amax = std::max(amax, std::fabs(row[c]));
        }
        float scale = amax / 127.0f;
        out.scales()[r] = scale;
        auto* q = reinterpret_cast<int8_t*>(dst.data());
        for (uint32_t c = 0; c < range.cols(); ++c)
          q[c] = scale == 0.0f
                     ? 0
                     : static_cast<int8_t>(std::clamp(
                           std::nearbyint(src[c] / scale), -127.0f, 127.0f));
        continue;
      }
      for (uint32_t c = 0; c < range.cols(); ++c) {
        switch (type) {
        case model::dtype::f32:
          std::memcpy(dst.data() + 4 * size_t{c}, src + c, 4);
          break;
        case model::dtype::f16: {
          uint16_t h = model::f32_to_f16_bits(src[c]);
          std::memcpy(dst.data() + 2 * size_t{c}, &h, 2);
          break;
        }
        case model::dtype::bf16: {
          uint16_t h = model::f32_to_bf16_bits(src[c]);
          std::memcpy(dst.data() + 2 * size_t{c}, &h, 2);
          break;
        }
        case model::dtype::int8:
          break; // above
        }
      }
    }
    return out;
  };
}

caf::expected<init_report> import_model(store& s, const gguf_file& f,
                                        const gguf_model& m,
                                        const model::model_spec& spec,
                                        const init_callback& progress) {
  auto source = source_of(f, m, spec);
  auto report = import_weights(s, spec, source_name(f), source, progress);
  if (!report)
    return report;
  // The vocabulary, for serving text later and for export.
  if (auto err = store_vocabulary(s, vocabulary_of(f)))
    return err;
  return report;
}

} // namespace lockstep::storage::gguf
