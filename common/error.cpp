#include "common/error.hpp"

#include <caf/atom.hpp>
#include <caf/message.hpp>

#include <array>
#include <cstddef>

namespace lockstep {

namespace {

// A fixed table instead of a map: registration happens during static
// initialisation, where a function-local static array is safe to touch.
constexpr size_t max_categories = 16;

struct category_table {
  std::array<error_category_info, max_categories> entries{};
  size_t size = 0;
};

category_table& table() {
  static category_table instance;
  return instance;
}

const error_category_info* find(caf::atom_value category) {
  auto& t = table();
  for (size_t i = 0; i < t.size; ++i)
    if (t.entries[i].category == category)
      return &t.entries[i];
  return nullptr;
}

} // namespace

const char* to_string(error_kind kind) {
  switch (kind) {
  case error_kind::invalid_input:
    return "invalid_input";
  case error_kind::failed:
    return "failed";
  case error_kind::overloaded:
    return "overloaded";
  case error_kind::disconnected:
    return "disconnected";
  }
  return "failed";
}

bool register_error_category(const error_category_info& info) {
  auto& t = table();
  if (find(info.category) != nullptr || t.size == max_categories)
    return true;
  t.entries[t.size++] = info;
  return true;
}

std::string detail_of(const caf::error& err) {
  const auto& ctx = err.context();
  std::string result;
  for (size_t i = 0; i < ctx.size(); ++i) {
    if (!ctx.match_element<std::string>(i))
      continue;
    if (!result.empty())
      result += ": ";
    result += ctx.get_as<std::string>(i);
  }
  return result;
}

std::string render(const caf::error& err) {
  if (!err)
    return "ok";
  std::string result;
  if (auto* info = find(err.category())) {
    result = caf::to_string(err.category());
    result += '.';
    result += info->code_name(err.code());
  } else {
    result = caf::to_string(err);
    return result;
  }
  auto detail = detail_of(err);
  if (!detail.empty()) {
    result += ": ";
    result += detail;
  }
  return result;
}

error_kind kind_of(const caf::error& err) {
  if (auto* info = find(err.category()))
    return info->code_kind(err.code());
  return error_kind::failed;
}

} // namespace lockstep
