#include "storage/gguf_vocabulary.hpp"

#include "storage/detail/meta_keys.hpp"

#include <nlohmann/json.hpp>

#include <optional>

namespace lockstep::storage::gguf {

namespace {

using nlohmann::json;

std::optional<value_type> type_named(const std::string& name) {
  for (uint32_t t = 0; t <= static_cast<uint32_t>(value_type::f64); ++t)
    if (name == to_string(static_cast<value_type>(t)))
      return static_cast<value_type>(t);
  return std::nullopt;
}

// A value's payload as JSON (its type is said by the caller).
json payload(const value& v) {
  if (v.is_unsigned() || v.type == value_type::boolean)
    return v.u;
  if (v.is_signed())
    return v.i;
  if (v.is_float())
    return v.f;
  if (v.type == value_type::string)
    return v.s;
  // array: scalar items bare (the element type says what they are),
  // nested arrays as typed objects.
  json items = json::array();
  for (const auto& item : v.items)
    items.push_back(item.type == value_type::array
                        ? json{{"type", "array"},
                               {"element", to_string(item.element)},
                               {"value", payload(item)}}
                        : payload(item));
  return items;
}

value from_payload(value_type type, value_type element, const json& j) {
  value v;
  v.type = type;
  v.element = element;
  switch (type) {
  case value_type::u8:
  case value_type::u16:
  case value_type::u32:
  case value_type::u64:
  case value_type::boolean:
    v.u = j.get<uint64_t>();
    break;
  case value_type::i8:
  case value_type::i16:
  case value_type::i32:
  case value_type::i64:
    v.i = j.get<int64_t>();
    break;
  case value_type::f32:
  case value_type::f64:
    v.f = j.get<double>();
    break;
  case value_type::string:
    v.s = j.get<std::string>();
    break;
  case value_type::array:
    for (const auto& item : j) {
      if (element != value_type::array) {
        v.items.push_back(from_payload(element, value_type::u8, item));
        continue;
      }
      auto e = type_named(item.at("element").get<std::string>());
      if (!e)
        throw std::runtime_error("unknown element type");
      v.items.push_back(from_payload(value_type::array, *e, item.at("value")));
    }
    break;
  }
  return v;
}

} // namespace

vocabulary vocabulary_of(const gguf_file& f) {
  vocabulary out;
  for (const auto& [key, v] : f.metadata())
    if (key.rfind("tokenizer.", 0) == 0)
      out.emplace_back(key, v);
  return out;
}

caf::error store_vocabulary(store& s, const vocabulary& v) {
  store::batch b;
  if (v.empty()) {
    b.erase(column::meta, detail::vocabulary_key);
    return s.write(b, true);
  }
  json keys = json::array();
  for (const auto& [key, val] : v)
    keys.push_back({{"key", key},
                    {"type", to_string(val.type)},
                    {"element", to_string(val.element)},
                    {"value", payload(val)}});
  b.put(column::meta, detail::vocabulary_key,
        json{{"vocabulary_format", 1}, {"keys", keys}}.dump());
  return s.write(b, true);
}

caf::expected<std::optional<vocabulary>> stored_vocabulary(const store& s) {
  auto text = s.get(column::meta, detail::vocabulary_key);
  if (!text)
    return text.error();
  if (!*text)
    return std::optional<vocabulary>{};
  try {
    auto j = json::parse(**text);
    if (j.at("vocabulary_format").get<int>() != 1)
      throw std::runtime_error("unknown vocabulary_format");
    vocabulary out;
    for (const auto& k : j.at("keys")) {
      auto type = type_named(k.at("type").get<std::string>());
      auto element = type_named(k.at("element").get<std::string>());
      if (!type || !element)
        throw std::runtime_error("unknown value type");
      out.emplace_back(k.at("key").get<std::string>(),
                       from_payload(*type, *element, k.at("value")));
    }
    return std::optional<vocabulary>{std::move(out)};
  } catch (const std::exception& e) {
    return caf::make_error(errc::corrupt,
                           "store " + s.dir().string() +
                               ": undecodable vocabulary: " + e.what());
  }
}

} // namespace lockstep::storage::gguf
