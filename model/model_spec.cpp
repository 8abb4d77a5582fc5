#include "model/model_spec.hpp"

#include "model/block_rule.hpp"

#include <array>
#include <charconv>

namespace lockstep::model {

const char* to_string(errc code) {
  switch (code) {
  case errc::unknown_model:
    return "unknown_model";
  case errc::invalid_spec:
    return "invalid_spec";
  case errc::invalid_shard:
    return "invalid_shard";
  case errc::invalid_argument:
    return "invalid_argument";
  case errc::context_full:
    return "context_full";
  case errc::bad_fp_environment:
    return "bad_fp_environment";
  case errc::invalid_split:
    return "invalid_split";
  }
  return "unknown";
}

error_kind kind_of(errc code) {
  switch (code) {
  case errc::bad_fp_environment:
    // The process itself is misconfigured: retrying cannot help.
    return error_kind::failed;
  default:
    return error_kind::invalid_input;
  }
}

const char* to_string(dtype t) {
  switch (t) {
  case dtype::f32:
    return "f32";
  case dtype::f16:
    return "f16";
  case dtype::bf16:
    return "bf16";
  case dtype::int8:
    return "int8";
  }
  return "f32";
}

caf::expected<dtype> parse_dtype(std::string_view name) {
  for (auto t : {dtype::f32, dtype::f16, dtype::bf16, dtype::int8})
    if (name == to_string(t))
      return t;
  return caf::make_error(errc::invalid_argument,
                         "unknown dtype '" + std::string{name} +
                             "' (expected f32, f16, bf16 or int8)");
}

uint32_t element_bytes(dtype t) {
  switch (t) {
  case dtype::f32:
    return 4;
  case dtype::f16:
  case dtype::bf16:
    return 2;
  case dtype::int8:
    return 1;
  }
  return 4;
}

// --- Presets -----------------------------------------------------------------

namespace {

model_spec make(std::string name, uint32_t layers, uint32_t d_model,
                uint32_t heads, uint32_t kv_heads, uint32_t head_dim,
                uint32_t d_ff, uint32_t vocab, double rope_theta,
                uint32_t max_context, dtype type) {
  model_spec s;
  s.name = std::move(name);
  s.n_layers = layers;
  s.d_model = d_model;
  s.n_heads = heads;
  s.n_kv_heads = kv_heads;
  s.head_dim = head_dim;
  s.d_ff = d_ff;
  s.vocab = vocab;
  s.rope_theta = rope_theta;
  s.rms_eps = 1e-5f;
  s.max_context = max_context;
  s.weight_dtype = type;
  return s;
}

// Published shapes (config.json of the released checkpoints). The large
// presets default to int8 weights: SRAM machines serve them at ~8 bits
// (hardware.md), which is what makes 70B fit ~576 chips.
std::vector<model_spec> make_presets() {
  return {
      make("llama-3-8b", 32, 4096, 32, 8, 128, 14336, 128256, 500000.0, 8192,
           dtype::int8),
      make("llama-2-70b", 80, 8192, 64, 8, 128, 28672, 32000, 10000.0, 4096,
           dtype::int8),
      make("llama-3-70b", 80, 8192, 64, 8, 128, 28672, 128256, 500000.0, 8192,
           dtype::int8),
      // Falcon-180B's attention and embedding shape (80 layers, d 14848, 232
      // heads of 64, 8 KV heads, vocab 65024) with a Llama-style SwiGLU MLP
      // whose width (3 * d * d_ff ~= Falcon's 2 * d * 4d) keeps ~179B params.
      make("falcon-180b", 80, 14848, 232, 8, 64, 39424, 65024, 10000.0, 2048,
           dtype::int8),
      // Tiny models that run end to end on this machine (f32, < 200 MB each),
      // deep enough that a plan can spread them over 8 / 64 / 512 / 1500 chips.
      make("tiny-8", 4, 256, 4, 2, 64, 768, 1024, 10000.0, 512, dtype::f32),
      // Shaped so that tensor parallelism x layers ~ N chips: 14 layers x 4,
      // 30 layers x 16 (d_ff has 16 blocks), 46 layers x 32 (d_ff 32 blocks).
      make("tiny-64", 14, 512, 8, 2, 64, 1024, 4096, 10000.0, 1024, dtype::f32),
      make("tiny-512", 30, 256, 4, 2, 64, 1024, 4096, 10000.0, 256, dtype::f32),
      make("tiny-1500", 46, 128, 2, 1, 64, 2048, 4096, 10000.0, 256,
           dtype::f32),
      // ~2.2 GiB of f32 weights: far above any cache, for bandwidth benchmarks.
      make("bench-2g", 10, 2048, 16, 4, 128, 5632, 32000, 10000.0, 1024,
           dtype::f32),
  };
}

const std::vector<model_spec>& presets() {
  static const std::vector<model_spec> instance = make_presets();
  return instance;
}

caf::error spec_error(const model_spec& s, const std::string& what) {
  return caf::make_error(errc::invalid_spec, "model '" + s.name + "': " + what);
}

} // namespace

caf::expected<model_spec> find_preset(std::string_view name) {
  for (const auto& p : presets())
    if (p.name == name)
      return p;
  std::string known;
  for (const auto& p : presets())
    known += (known.empty() ? "" : ", ") + p.name;
  return caf::make_error(errc::unknown_model, "unknown model '" +
                                                  std::string{name} +
                                                  "' (known: " + known + ")");
}

std::vector<std::string> preset_names() {
  std::vector<std::string> out;
  for (const auto& p : presets())
    out.push_back(p.name);
  return out;
}

caf::error validate(const model_spec& s) {
  auto positive = [&](uint32_t v, const char* field) -> caf::error {
    if (v == 0)
      return spec_error(s, std::string{field} + " must be > 0");
    return {};
  };
  for (auto [v, f] : std::array<std::pair<uint32_t, const char*>, 8>{
           {{s.n_layers, "n_layers"},
            {s.d_model, "d_model"},
            {s.n_heads, "n_heads"},
            {s.n_kv_heads, "n_kv_heads"},
            {s.head_dim, "head_dim"},
            {s.d_ff, "d_ff"},
            {s.vocab, "vocab"},
            {s.max_context, "max_context"}}})
    if (auto err = positive(v, f))
      return err;
  if (s.n_layers >= global_layer)
    return spec_error(s, "n_layers must be < 65535");
  if (s.n_heads % s.n_kv_heads != 0)
    return spec_error(s, "n_heads must be a multiple of n_kv_heads");
  // Every reduction dimension is a whole number of determinism blocks.
  for (auto [v, f] : std::array<std::pair<uint32_t, const char*>, 3>{
           {{s.d_model, "d_model"},
            {s.d_ff, "d_ff"},
            {s.head_dim, "head_dim"}}})
    if (v % reduction_block_elems != 0)
      return spec_error(s, std::string{f} + " must be a multiple of " +
                               std::to_string(reduction_block_elems));
  if (s.head_dim % 2 != 0)
    return spec_error(s, "head_dim must be even (RoPE rotates pairs)");
  if (!(s.rope_theta > 1.0))
    return spec_error(s, "rope_theta must be > 1");
  if (!(s.rms_eps > 0.0f))
    return spec_error(s, "rms_eps must be > 0");
  return {};
}

// --- Sizes -------------------------------------------------------------------

uint64_t model_spec::layer_param_count() const {
  uint64_t d = d_model;
  return 2 * d                     // attn_norm, mlp_norm
         + d * q_dim() * 2         // wq, wo
         + d * kv_dim() * 2        // wk, wv
         + 3 * d * uint64_t{d_ff}; // gate, up, down
}

uint64_t model_spec::param_count() const {
  return uint64_t{n_layers} * layer_param_count() +
         2 * uint64_t{vocab} * d_model // embedding and LM head
         + d_model;                    // final norm
}

uint64_t model_spec::layer_weight_bytes() const {
  uint64_t total = 0;
  for (auto k : {tensor_kind::attn_norm, tensor_kind::wq, tensor_kind::wk,
                 tensor_kind::wv, tensor_kind::wo, tensor_kind::mlp_norm,
                 tensor_kind::w_gate, tensor_kind::w_up, tensor_kind::w_down})
    total += tensor_bytes(*this, k);
  return total;
}

uint64_t model_spec::weight_bytes() const {
  return uint64_t{n_layers} * layer_weight_bytes() +
         tensor_bytes(*this, tensor_kind::tok_embedding) +
         tensor_bytes(*this, tensor_kind::lm_head) +
         tensor_bytes(*this, tensor_kind::final_norm);
}

uint64_t model_spec::kv_bytes_per_token_per_layer() const {
  return 2 * uint64_t{kv_dim()} * sizeof(float);
}

// --- Tensors -----------------------------------------------------------------

namespace {

constexpr std::array<const char*, 12> tensor_kind_names = {
    "tok_embedding", "attn_norm", "wq",   "wk",     "wv",         "wo",
    "mlp_norm",      "w_gate",    "w_up", "w_down", "final_norm", "lm_head"};

} // namespace

const char* to_string(tensor_kind kind) {
  auto i = static_cast<size_t>(kind);
  return i < tensor_kind_names.size() ? tensor_kind_names[i] : "unknown";
}

caf::expected<tensor_kind> parse_tensor_kind(std::string_view name) {
  for (size_t i = 0; i < tensor_kind_names.size(); ++i)
    if (name == tensor_kind_names[i])
      return static_cast<tensor_kind>(i);
  return caf::make_error(errc::invalid_argument,
                         "unknown tensor '" + std::string{name} + "'");
}

bool is_norm(tensor_kind kind) {
  return kind == tensor_kind::attn_norm || kind == tensor_kind::mlp_norm ||
         kind == tensor_kind::final_norm;
}

std::string to_string(const tensor_id& id) {
  if (id.layer == global_layer)
    return to_string(id.kind);
  return "l" + std::to_string(id.layer) + "." + to_string(id.kind);
}

caf::expected<tensor_id> parse_tensor_id(std::string_view text) {
  auto bad = [&] {
    return caf::make_error(errc::invalid_argument,
                           "bad tensor id '" + std::string{text} + "'");
  };
  tensor_id id;
  auto name = text;
  if (!text.empty() && text[0] == 'l') {
    auto dot = text.find('.');
    if (dot != std::string_view::npos) {
      uint32_t layer = 0;
      auto [ptr, ec] =
          std::from_chars(text.data() + 1, text.data() + dot, layer);
      if (ec != std::errc{} || ptr != text.data() + dot ||
          layer >= global_layer)
        return bad();
      id.layer = layer;
      name = text.substr(dot + 1);
    }
  }
  auto kind = parse_tensor_kind(name);
  if (!kind)
    return bad();
  bool global = *kind == tensor_kind::tok_embedding ||
                *kind == tensor_kind::final_norm ||
                *kind == tensor_kind::lm_head;
  if (global != (id.layer == global_layer))
    return bad();
  id.kind = *kind;
  return id;
}

tensor_shape shape_of(const model_spec& s, tensor_kind kind) {
  switch (kind) {
  case tensor_kind::tok_embedding:
  case tensor_kind::lm_head:
    return {s.vocab, s.d_model};
  case tensor_kind::attn_norm:
  case tensor_kind::mlp_norm:
  case tensor_kind::final_norm:
    return {1, s.d_model};
  case tensor_kind::wq:
    return {s.q_dim(), s.d_model};
  case tensor_kind::wk:
  case tensor_kind::wv:
    return {s.kv_dim(), s.d_model};
  case tensor_kind::wo:
    return {s.d_model, s.q_dim()};
  case tensor_kind::w_gate:
  case tensor_kind::w_up:
    return {s.d_ff, s.d_model};
  case tensor_kind::w_down:
    return {s.d_model, s.d_ff};
  }
  return {};
}

dtype dtype_of(const model_spec& s, tensor_kind kind) {
  return is_norm(kind) ? dtype::f32 : s.weight_dtype;
}

uint64_t tensor_bytes(const model_spec& s, tensor_kind kind) {
  auto shape = shape_of(s, kind);
  auto t = dtype_of(s, kind);
  uint64_t bytes = shape.elements() * element_bytes(t);
  if (t == dtype::int8)
    bytes += uint64_t{shape.rows} * sizeof(float);
  return bytes;
}

std::vector<tensor_id> all_tensors(const model_spec& s) {
  std::vector<tensor_id> out;
  out.reserve(3 + 9 * size_t{s.n_layers});
  out.push_back({global_layer, tensor_kind::tok_embedding});
  for (uint32_t l = 0; l < s.n_layers; ++l)
    for (auto k : {tensor_kind::attn_norm, tensor_kind::wq, tensor_kind::wk,
                   tensor_kind::wv, tensor_kind::wo, tensor_kind::mlp_norm,
                   tensor_kind::w_gate, tensor_kind::w_up, tensor_kind::w_down})
      out.push_back({l, k});
  out.push_back({global_layer, tensor_kind::final_norm});
  out.push_back({global_layer, tensor_kind::lm_head});
  return out;
}

std::vector<tensor_id> stored_tensors(const model_spec& s) {
  auto out = all_tensors(s);
  if (s.tied_head)
    out.pop_back(); // lm_head, last
  return out;
}

tensor_id stored_as(const model_spec& s, tensor_id id) {
  if (s.tied_head && id.kind == tensor_kind::lm_head)
    return {global_layer, tensor_kind::tok_embedding};
  return id;
}

} // namespace lockstep::model
