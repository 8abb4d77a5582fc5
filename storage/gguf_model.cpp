#include "storage/gguf_model.hpp"

#include "model/block_rule.hpp"

#include <optional>
#include <set>

namespace lockstep::storage::gguf {

namespace {

using model::tensor_kind;

class describer {
public:
  explicit describer(const gguf_file& f)
      : f_(f) {}

  caf::error bad(const std::string& what) const {
    return caf::make_error(errc::invalid_file,
                           f_.path().string() + ": " + what);
  }

  // A non-negative integer key (any integer type), or `fallback`.
  caf::expected<uint64_t> count(const std::string& key,
                                std::optional<uint64_t> fallback = {}) const {
    const auto* v = f_.find(key);
    if (v == nullptr) {
      if (fallback)
        return *fallback;
      return bad("key '" + key + "' is missing");
    }
    if (v->is_unsigned())
      return v->u;
    if (v->is_signed() && v->i >= 0)
      return static_cast<uint64_t>(v->i);
    return bad("key '" + key + "' is a " + to_string(v->type) +
               ", not a non-negative integer");
  }

  caf::expected<double> real(const std::string& key,
                             std::optional<double> fallback = {}) const {
    const auto* v = f_.find(key);
    if (v == nullptr) {
      if (fallback)
        return *fallback;
      return bad("key '" + key + "' is missing");
    }
    if (v->is_float())
      return v->f;
    return bad("key '" + key + "' is a " + to_string(v->type) +
               ", not a float");
  }

  // The tensor `name` with ne == `ne` (checked), or an error.
  caf::expected<const tensor_info*>
  tensor(const std::string& name, std::vector<uint64_t> ne) const {
    const auto* t = f_.tensor(name);
    if (t == nullptr)
      return bad("tensor '" + name + "' is missing");
    if (t->ne != ne) {
      auto shape = [](const std::vector<uint64_t>& v) {
        std::string s = "[";
        for (size_t i = 0; i < v.size(); ++i)
          s += (i ? ", " : "") + std::to_string(v[i]);
        return s + "]";
      };
      return bad("tensor '" + name + "' has ne " + shape(t->ne) +
                 ", the metadata says " + shape(ne));
    }
    auto traits = traits_of(static_cast<uint32_t>(t->type));
    if (!traits || !traits->supported)
      return bad("tensor '" + name + "' is of type " +
                 std::string{traits ? traits->name : "?"} +
                 ", which lockstep does not convert (F32, F16, BF16, Q8_0, "
                 "Q4_0, Q4_K, Q6_K)");
    return t;
  }

private:
  const gguf_file& f_;
};

uint32_t narrow(uint64_t v) {
  return v > UINT32_MAX ? UINT32_MAX : static_cast<uint32_t>(v);
}

} // namespace

std::string gguf_tensor_name(const model::tensor_id& id) {
  auto blk = [&](const char* what) {
    return "blk." + std::to_string(id.layer) + "." + what + ".weight";
  };
  switch (id.kind) {
  case tensor_kind::tok_embedding:
    return "token_embd.weight";
  case tensor_kind::attn_norm:
    return blk("attn_norm");
  case tensor_kind::wq:
    return blk("attn_q");
  case tensor_kind::wk:
    return blk("attn_k");
  case tensor_kind::wv:
    return blk("attn_v");
  case tensor_kind::wo:
    return blk("attn_output");
  case tensor_kind::mlp_norm:
    return blk("ffn_norm");
  case tensor_kind::w_gate:
    return blk("ffn_gate");
  case tensor_kind::w_up:
    return blk("ffn_up");
  case tensor_kind::w_down:
    return blk("ffn_down");
  case tensor_kind::final_norm:
    return "output_norm.weight";
  case tensor_kind::lm_head:
    return "output.weight";
  }
  return "?";
}

caf::expected<gguf_model> describe_model(const gguf_file& f) {
  describer d{f};
  const auto* arch = f.find("general.architecture");
  if (arch == nullptr || arch->type != value_type::string)
    return d.bad("key 'general.architecture' is missing or not a string");
  if (arch->s != "llama")
    return d.bad("architecture '" + arch->s +
                 "' (lockstep imports the llama architecture)");
  if (f.tensor("rope_freqs.weight") != nullptr)
    return d.bad("tensor 'rope_freqs.weight': RoPE frequency scaling (Llama "
                 "3.1 style), which lockstep's RoPE does not implement");
  if (const auto* s = f.find("llama.rope.scaling.type");
      s != nullptr && !(s->type == value_type::string && s->s == "none"))
    return d.bad("key 'llama.rope.scaling.type': RoPE scaling, which "
                 "lockstep's RoPE does not implement");

  gguf_model m;
  auto& spec = m.spec;
  const auto* name = f.find("general.name");
  spec.name = name != nullptr && name->type == value_type::string &&
                      !name->s.empty()
                  ? name->s
                  : f.path().stem().string();
  auto layers = d.count("llama.block_count");
  auto width = d.count("llama.embedding_length");
  auto ff = d.count("llama.feed_forward_length");
  auto heads = d.count("llama.attention.head_count");
  auto context = d.count("llama.context_length");
  for (auto* v : {&layers, &width, &ff, &heads, &context})
    if (!*v)
      return v->error();
  auto kv_heads = d.count("llama.attention.head_count_kv", *heads);
  if (!kv_heads)
    return kv_heads.error();
  if (*heads == 0 || *width % *heads != 0)
    if (!f.find("llama.attention.key_length"))
      return d.bad("llama.attention.head_count " + std::to_string(*heads) +
                   " does not divide llama.embedding_length " +
                   std::to_string(*width) + " (and no key_length)");
  auto head_dim = d.count("llama.attention.key_length",
                          *heads == 0 ? 0 : *width / *heads);
  if (!head_dim)
    return head_dim.error();
  if (auto value_dim = d.count("llama.attention.value_length", *head_dim);
      !value_dim || *value_dim != *head_dim)
    return value_dim ? d.bad("llama.attention.value_length " +
                             std::to_string(*value_dim) + " differs from "
                             "key_length " + std::to_string(*head_dim))
                     : value_dim.error();
  auto theta = d.real("llama.rope.freq_base", 10000.0);
  auto eps = d.real("llama.attention.layer_norm_rms_epsilon");
  if (!theta)
    return theta.error();
  if (!eps)
    return eps.error();
  const auto* embd = f.tensor("token_embd.weight");
  if (embd == nullptr)
    return d.bad("tensor 'token_embd.weight' is missing");
  if (embd->ne.size() != 2)
    return d.bad("tensor 'token_embd.weight' has " +
                 std::to_string(embd->ne.size()) + " dimensions, not 2");
  uint64_t vocab = embd->ne[1];
  if (auto n = d.count("llama.vocab_size", vocab); !n || *n != vocab)
    return n ? d.bad("llama.vocab_size " + std::to_string(*n) +
                     " differs from token_embd's " + std::to_string(vocab) +
                     " rows")
             : n.error();
  if (const auto* tokens = f.find("tokenizer.ggml.tokens")) {
    if (tokens->type != value_type::array ||
        tokens->element != value_type::string)
      return d.bad("key 'tokenizer.ggml.tokens' is not an array of strings");
    m.vocabulary_tokens = tokens->items.size();
    if (m.vocabulary_tokens != vocab)
      return d.bad("tokenizer.ggml.tokens has " +
                   std::to_string(m.vocabulary_tokens) +
                   " tokens, token_embd " + std::to_string(vocab) + " rows");
  }
  spec.n_layers = narrow(*layers);
  spec.d_model = narrow(*width);
  spec.n_heads = narrow(*heads);
  spec.n_kv_heads = narrow(*kv_heads);
  spec.head_dim = narrow(*head_dim);
  spec.d_ff = narrow(*ff);
  spec.vocab = narrow(vocab);
  spec.rope_theta = *theta;
  spec.rms_eps = static_cast<float>(*eps);
  spec.max_context = narrow(*context);
  // Every reduction runs over whole 64-element blocks (docs/determinism.md).
  for (auto [what, dim] : {std::pair{"llama.embedding_length", spec.d_model},
                           {"llama.feed_forward_length", spec.d_ff},
                           {"head_count x key_length", spec.q_dim()}})
    if (dim % model::reduction_block_elems != 0)
      return d.bad(std::string{what} + " = " + std::to_string(dim) +
                   " is not a multiple of the " +
                   std::to_string(model::reduction_block_elems) +
                   "-element reduction block");

  if (auto err = model::validate(spec))
    return d.bad("the model it describes is invalid: " + render(err));
  m.tied_head = f.tensor("output.weight") == nullptr;
  spec.tied_head = m.tied_head;
  std::set<std::string> used;
  std::set<ggml_type> matrix_types;
  for (auto id : model::all_tensors(spec)) {
    auto shape = model::shape_of(spec, id.kind);
    std::string n = gguf_tensor_name(id);
    if (id.kind == tensor_kind::lm_head && m.tied_head)
      n = "token_embd.weight";
    std::vector<uint64_t> ne = model::is_norm(id.kind)
                                   ? std::vector<uint64_t>{shape.cols}
                                   : std::vector<uint64_t>{shape.cols,
                                                           shape.rows};
    auto t = d.tensor(n, ne);
    if (!t)
      return t.error();
    m.tensors.push_back({id, *t});
    if (!model::is_norm(id.kind))
      matrix_types.insert((*t)->type);
    used.insert(n);
  }
  auto common = matrix_types.size() == 1 ? *matrix_types.begin()
                                         : ggml_type::q4_0;
  spec.weight_dtype = common == ggml_type::f16    ? model::dtype::f16
                      : common == ggml_type::bf16 ? model::dtype::bf16
                                                  : model::dtype::f32;
  for (const auto& t : f.tensors()) {
    ++m.types[std::string{traits_of(static_cast<uint32_t>(t.type))->name}];
    if (!used.contains(t.name))
      m.unused.push_back(t.name);
  }
  return m;
}

} // namespace lockstep::storage::gguf
