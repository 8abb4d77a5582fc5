#pragma once

// Errors as values, shared by every layer.
//
// Every module declares one error enum (`model::errc`, `storage::errc`, ...)
// and registers it with CAF via CAF_ERROR_CODE_ENUM, so that functions return
// `caf::expected<T>` and errors travel between actors unchanged. On top of
// CAF's (code, category, context) triple, lockstep adds what the *caller*
// should do about an error — the error_kind — in the spirit of KJ's
// exception types: fix the input, stop, back off and retry, or reconnect.

#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <caf/make_message.hpp>

#include <cstdint>
#include <string>

namespace lockstep {

/// What the caller should do about an error.
enum class error_kind : uint8_t {
  /// The request itself is wrong (bad flag, bad config, unknown model): fix
  /// the input; retrying the same request fails the same way.
  invalid_input,
  /// The operation failed and will keep failing (corrupt store, broken
  /// invariant): stop and report.
  failed,
  /// A resource is busy or full (store locked by another process, queue
  /// full): back off and retry later.
  overloaded,
  /// The peer or endpoint went away: reconnect, then retry.
  disconnected,
};

const char* to_string(error_kind kind);

/// Describes one module's error enum for rendering without an actor system.
struct error_category_info {
  caf::atom_value category;
  const char* (*code_name)(uint8_t code);
  error_kind (*code_kind)(uint8_t code);
};

/// Registers a module's error category. Called once per module from an inline
/// variable in the module's error header; returns true.
/// Thread-safety: only during static initialisation.
bool register_error_category(const error_category_info& info);

/// Registers error enum E of a module: `to_string(E)` and `kind_of(E)` must
/// be declared in E's namespace. Use from the module's errc.hpp as
///   inline const bool errc_registered = register_errc<errc>(atom("name"));
template <class E>
bool register_errc(caf::atom_value category) {
  return register_error_category(
    {category,
     [](uint8_t c) { return to_string(static_cast<E>(c)); },
     [](uint8_t c) { return kind_of(static_cast<E>(c)); }});
}

/// "storage.corrupt_block: tensor l3.wq tile (2,5): checksum mismatch".
std::string render(const caf::error& err);

/// The error's kind; errors of unregistered categories count as `failed`.
error_kind kind_of(const caf::error& err);

/// The first string of the error's context (the human-readable detail).
std::string detail_of(const caf::error& err);

} // namespace lockstep
