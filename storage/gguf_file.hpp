#pragma once

// GGUF, llama.cpp's model file format (versions 2 and 3), read without
// trusting it: every length, count, offset and shape is checked against
// the file before anything is allocated or read, so a corrupt or hostile
// file is an error naming the file and the key or tensor at fault — never
// a crash, a hang or an allocation beyond a small multiple of the file's
// size. Tensor data stays in the file until asked for, tensor by tensor
// (files are often larger than memory).
//
// Layout (little-endian; ggml's gguf.cpp writes it so): "GGUF", version
// (u32), tensor count (u64), metadata count (u64); metadata (key string,
// value type u32, value); tensor infos (name string, n_dims u32, ne[n_dims]
// u64 — ne[0] is the contiguous dimension —, ggml type u32, offset u64
// into the data section); padding to `general.alignment` (default 32);
// the data section. A string is a u64 length and its bytes.
//
// Written by hand: no Debian package reads GGUF (ggml is not packaged in
// Debian 12), and the format is small; docs/storage.md.
//
// Thread-safety: a gguf_file is immutable after open(); read() may be
// called from several threads (pread).

#include "storage/errc.hpp"
#include "storage/gguf_types.hpp"

#include <caf/expected.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace lockstep::storage::gguf {

/// GGUF metadata value types (gguf_type in ggml's gguf.h).
enum class value_type : uint32_t {
  u8 = 0,
  i8 = 1,
  u16 = 2,
  i16 = 3,
  u32 = 4,
  i32 = 5,
  f32 = 6,
  boolean = 7,
  string = 8,
  array = 9,
  u64 = 10,
  i64 = 11,
  f64 = 12,
};

const char* to_string(value_type t);

/// One metadata value. Scalars are widened to the member of their kind
/// (`type` says what the file held); an array holds its elements as values
/// of `element` type (nested arrays allowed, as the format allows).
struct value {
  value_type type = value_type::u8;
  uint64_t u = 0;      // u8 u16 u32 u64, bool (0/1)
  int64_t i = 0;       // i8 i16 i32 i64
  double f = 0;        // f32 f64
  std::string s;       // string
  value_type element = value_type::u8; // array: its elements' type
  std::vector<value> items;            // array

  bool is_unsigned() const;
  bool is_signed() const;
  bool is_float() const;
};

/// One tensor as the file describes it.
struct tensor_info {
  std::string name;
  std::vector<uint64_t> ne; // ne[0] contiguous; 1-4 dimensions
  ggml_type type = ggml_type::f32;
  uint64_t offset = 0; // into the data section
  uint64_t bytes = 0;  // of its data (checked against the file)
  uint64_t elements() const;
};

/// Limits a reader enforces beyond the file's own size.
struct read_limits {
  uint64_t max_key_bytes = 65535;       // the format's own bound
  uint32_t max_array_depth = 4;         // nested arrays
  uint64_t max_metadata_bytes = uint64_t{1} << 30; // strings and arrays in memory
};

class gguf_file {
public:
  /// Opens `path` and reads and checks its header, metadata and tensor
  /// infos (not the data). Errors: not_found (no such file), io_error
  /// (reading failed), invalid_file naming the file and the key or tensor:
  /// wrong magic, a version other than 2 or 3, truncation, a length or
  /// count the file cannot hold, an unknown value type, duplicate keys or
  /// tensor names, a tensor with 0 or more than 4 dimensions, an empty
  /// dimension, an unknown tensor type, a first dimension that is not a
  /// multiple of its type's block, a misaligned offset, data running past
  /// the end of the file or overlapping another tensor's.
  static caf::expected<gguf_file> open(const std::filesystem::path& path,
                                       const read_limits& limits = {});

  gguf_file(gguf_file&&) noexcept;
  gguf_file& operator=(gguf_file&&) noexcept;
  ~gguf_file();

  const std::filesystem::path& path() const noexcept { return path_; }
  uint32_t version() const noexcept { return version_; }
  uint64_t alignment() const noexcept { return alignment_; }
  uint64_t data_offset() const noexcept { return data_offset_; }
  uint64_t file_bytes() const noexcept { return file_bytes_; }

  const std::map<std::string, value>& metadata() const noexcept {
    return metadata_;
  }
  /// The value of `key`, or nullptr.
  const value* find(const std::string& key) const;

  /// Tensor infos in file order.
  const std::vector<tensor_info>& tensors() const noexcept { return tensors_; }
  /// The tensor named `name`, or nullptr.
  const tensor_info* tensor(const std::string& name) const;

  /// Reads `t`'s data (t.bytes bytes) into `out`. REQUIRES: t is one of
  /// tensors(), out.size() == t.bytes. Errors: io_error, invalid_file (the
  /// file shrank since open()).
  caf::error read(const tensor_info& t, std::span<std::byte> out) const;

  /// Reads `rows` rows of `t` from row `first` (a row: ne[0] elements, in
  /// whole blocks) into `out`. REQUIRES: first + rows within t's rows
  /// (elements / ne[0]), out.size() == rows * the row's bytes. Errors: as
  /// read().
  caf::error read_rows(const tensor_info& t, uint64_t first, uint64_t rows,
                       std::span<std::byte> out) const;

private:
  gguf_file() = default;

  std::filesystem::path path_;
  int fd_ = -1;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  uint64_t file_bytes_ = 0;
  std::map<std::string, value> metadata_;
  std::vector<tensor_info> tensors_;
  std::map<std::string, size_t> by_name_;
};

} // namespace lockstep::storage::gguf
