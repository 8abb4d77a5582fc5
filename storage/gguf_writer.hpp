#pragma once

// Writes GGUF version 3 files as ggml's gguf.cpp does: header, metadata in
// the order set, tensor infos in the order added, padding to the
// alignment, then every tensor's data at an aligned offset. For lockstep's
// export and for tests that need files (the reader's tests write theirs
// with it; their meaning is checked against llama.cpp separately).
//
// Thread-safety: none.

#include "storage/gguf_file.hpp"

#include <caf/error.hpp>

#include <cstddef>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <vector>

namespace lockstep::storage::gguf {

class gguf_writer {
public:
  /// `alignment`: of every tensor's data (also written as
  /// general.alignment when it is not the default 32). REQUIRES: a power
  /// of two.
  explicit gguf_writer(uint64_t alignment = 32);

  /// Sets metadata `key` (replacing an earlier value of the same key).
  void set(const std::string& key, value v);
  void set_u32(const std::string& key, uint32_t v);
  void set_f32(const std::string& key, float v);
  void set_string(const std::string& key, std::string v);
  void set_strings(const std::string& key, std::vector<std::string> v);

  /// Adds a tensor whose `data` (exactly its size in `type`) is written
  /// as is. REQUIRES: ne[0] a multiple of the type's block.
  void add_tensor(std::string name, std::vector<uint64_t> ne, ggml_type type,
                  std::vector<std::byte> data);

  /// Fills a tensor's data (exactly its size) when the file is written:
  /// one tensor in memory at a time, whatever the model's size.
  using filler = std::function<caf::error(std::span<std::byte> out)>;
  /// Adds a tensor whose data `fill` produces at write time.
  /// REQUIRES: as add_tensor.
  void add_tensor(std::string name, std::vector<uint64_t> ne, ggml_type type,
                  filler fill);

  /// Writes the file (to a temporary name, renamed when complete: a
  /// reader never sees half a file), tensor by tensor. Errors: io_error
  /// naming the path; a filler's error.
  caf::error write(const std::filesystem::path& path) const;

  /// The file's bytes (tests mutate them). REQUIRES: fillers succeed.
  std::vector<std::byte> bytes() const;

private:
  uint64_t alignment_;
  std::vector<std::pair<std::string, value>> metadata_;
  struct pending {
    std::string name;
    std::vector<uint64_t> ne;
    ggml_type type;
    uint64_t bytes;
    filler fill;
  };
  // Header, metadata and tensor infos, padded to the alignment.
  std::vector<std::byte> head() const;
  std::vector<pending> tensors_;
};

/// Bytes of a tensor of `ne` in `type` (whole blocks per row).
uint64_t tensor_bytes(const std::vector<uint64_t>& ne, ggml_type type);

} // namespace lockstep::storage::gguf
