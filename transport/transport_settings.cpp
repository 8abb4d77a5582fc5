#include "transport/transport_settings.hpp"

#include <yaml-cpp/yaml.h>

#include <set>

namespace lockstep::transport {

const char* to_string(errc code) {
  switch (code) {
  case errc::invalid_config:
    return "invalid_config";
  case errc::invalid_table:
    return "invalid_table";
  case errc::unscheduled_send:
    return "unscheduled_send";
  case errc::wrong_size:
    return "wrong_size";
  case errc::fabric_failure:
    return "fabric_failure";
  case errc::peer_unreachable:
    return "peer_unreachable";
  case errc::slot_timeout:
    return "slot_timeout";
  case errc::bad_control_message:
    return "bad_control_message";
  case errc::back_pressure:
    return "back_pressure";
  case errc::bad_payload:
    return "bad_payload";
  case errc::refused_arrival:
    return "refused_arrival";
  }
  return "unknown";
}

error_kind kind_of(errc code) {
  switch (code) {
  case errc::invalid_config:
  case errc::invalid_table:
  case errc::unscheduled_send:
  case errc::wrong_size:
  case errc::bad_control_message:
    return error_kind::invalid_input;
  case errc::back_pressure:
    return error_kind::overloaded;
  case errc::peer_unreachable:
    return error_kind::disconnected;
  case errc::fabric_failure:
  case errc::slot_timeout:
  case errc::bad_payload:
  case errc::refused_arrival:
    return error_kind::failed;
  }
  return error_kind::failed;
}

const char* to_string(slot_mode mode) {
  return mode == slot_mode::paced ? "paced" : "logical";
}

namespace {

caf::error config_error(std::string_view file, const std::string& key,
                        const std::string& what) {
  return caf::make_error(errc::invalid_config, std::string{file} +
                                                   ": transport." + key + ": " +
                                                   what);
}

// Reads a positive integer; YAML scalars are text, so parse strictly.
caf::expected<uint64_t> positive(const YAML::Node& n, std::string_view file,
                                 const std::string& key) {
  try {
    auto v = n.as<long long>();
    if (v <= 0)
      return config_error(file, key, "must be > 0");
    return static_cast<uint64_t>(v);
  } catch (const YAML::Exception&) {
    return config_error(file, key, "expected a positive integer");
  }
}

} // namespace

caf::expected<transport_settings>
parse_transport_settings(const YAML::Node& node, std::string_view file) {
  transport_settings out;
  if (!node || node.IsNull())
    return out;
  if (!node.IsMap())
    return caf::make_error(errc::invalid_config,
                           std::string{file} +
                               ": transport: expected a mapping");
  static const std::set<std::string> known{"provider", "slot_mode", "slot_us",
                                           "slot_ns", "hard_timeout_ms"};
  for (const auto& kv : node) {
    auto key = kv.first.as<std::string>();
    if (!known.contains(key))
      return config_error(file, key,
                          "unknown key (expected provider, slot_mode, "
                          "slot_us, slot_ns or hard_timeout_ms)");
  }
  if (auto p = node["provider"]) {
    auto v = p.IsScalar() ? p.as<std::string>() : std::string{};
    static const std::set<std::string> providers{"shm", "tcp;ofi_rxm", "verbs",
                                                 "efa"};
    if (!providers.contains(v))
      return config_error(file, "provider",
                          "unknown provider '" + v +
                              "' (expected shm, tcp;ofi_rxm, verbs or efa)");
    out.provider = v;
  }
  if (auto m = node["slot_mode"]) {
    auto v = m.IsScalar() ? m.as<std::string>() : std::string{};
    if (v == "logical")
      out.mode = slot_mode::logical;
    else if (v == "paced")
      out.mode = slot_mode::paced;
    else
      return config_error(file, "slot_mode",
                          "'" + v + "' is not logical or paced");
  }
  if (auto s = node["slot_us"]) {
    auto v = positive(s, file, "slot_us");
    if (!v)
      return v.error();
    out.slot_ns = *v * 1000;
  }
  // Sub-microsecond slots, for modelling hardware whose links and ops take
  // nanoseconds (the planner's unit); one of slot_us / slot_ns.
  if (auto s = node["slot_ns"]) {
    if (node["slot_us"])
      return config_error(file, "slot_ns", "give slot_us or slot_ns, not both");
    auto v = positive(s, file, "slot_ns");
    if (!v)
      return v.error();
    out.slot_ns = *v;
  }
  if (auto t = node["hard_timeout_ms"]) {
    auto v = positive(t, file, "hard_timeout_ms");
    if (!v)
      return v.error();
    out.hard_timeout_ns = *v * 1'000'000;
  }
  return out;
}

} // namespace lockstep::transport
