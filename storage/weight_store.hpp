#pragma once

// Model weights in a store's `weights` column family, as 2-D tiles aligned to
// the reduction block (docs/storage.md). A chip's shard — a row range, a
// column range on block boundaries, or both — is read tile by tile with
// point gets, touching nothing else; every tile's checksum is verified on
// every read.
//
// `init_weights` fills a store from the deterministic generator
// (model/weight_gen.hpp). It is resumable: the manifest says "in_progress"
// until every tensor is written, each tensor is marked done in the same
// write as its last tiles, and a second run with the same model and seed
// skips the done tensors. `weight_store::open` refuses an incomplete store.
//
// Thread-safety: a weight_store is immutable after open; read/list/verify
// may run concurrently (RocksDB reads are thread-safe). init_weights must not
// run concurrently with anything else on the same store.

#include "model/block_rule.hpp"
#include "model/tensor.hpp"
#include "storage/store.hpp"

#include <caf/expected.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace lockstep::storage {

/// Elements per tile: rows x cols. cols is a whole number of reduction blocks,
/// so a split along the reduction dimension never cuts a tile in two.
struct tile_shape {
  uint32_t rows = 64;
  uint32_t cols = model::reduction_block_elems;
  friend bool operator==(const tile_shape&, const tile_shape&) = default;
};

enum class init_state : uint8_t { in_progress, complete };
const char* to_string(init_state s);

/// What the store holds (meta key "weights.manifest", JSON).
struct weights_manifest {
  model::model_spec spec; // weight_dtype is the stored dtype (after --dtype)
  uint64_t seed = 0;      // the generator's seed
  tile_shape tile;
  init_state state = init_state::in_progress;
};

/// The manifest, or nullopt when the store holds no weights.
/// Errors: corrupt (undecodable manifest), io_error.
caf::expected<std::optional<weights_manifest>> read_manifest(const store& s);

// --- init --------------------------------------------------------------------

struct init_progress {
  model::tensor_id tensor; // the tensor just finished (or skipped)
  size_t tensors_done = 0; // including this one
  size_t tensors_total = 0;
  uint64_t bytes_done = 0; // tensor payload bytes (model::tensor_bytes)
  uint64_t bytes_total = 0;
  bool skipped = false; // done by an earlier, interrupted run
};

/// Called after each tensor; returning false stops init cleanly (the store is
/// left resumable and init returns `incomplete`).
using init_callback = std::function<bool(const init_progress&)>;

struct init_options {
  tile_shape tile;
  /// Bytes of tiles per RocksDB write batch (the last batch of a tensor also
  /// carries its done marker).
  size_t batch_bytes = 32 << 20;
};

struct init_report {
  size_t tensors_written = 0;
  size_t tensors_skipped = 0;
  uint64_t bytes_written = 0; // tensor payload bytes written by this run
  double seconds = 0;
};

/// Writes every tensor of `spec` generated from `seed` into `s`, or resumes
/// an interrupted run with the same spec, seed and tile shape. A complete
/// store with the same parameters is left as is (everything skipped).
/// Errors: mismatch (the store holds another model/seed/dtype/tile shape),
/// incomplete (stopped by the callback; run again to resume),
/// invalid_argument (read-only store, bad tile shape), model::invalid_spec,
/// io_error.
caf::expected<init_report> init_weights(store& s, const model::model_spec& spec,
                                        uint64_t seed,
                                        const init_callback& progress = {},
                                        const init_options& options = {});

// --- reading -----------------------------------------------------------------

struct tensor_info {
  model::tensor_id id;
  model::tensor_shape shape;
  model::dtype type = model::dtype::f32;
  uint64_t bytes = 0; // payload (int8 scales included), not tile overhead
  uint32_t row_tiles = 0;
  uint32_t col_tiles = 0;
  uint64_t tiles() const { return uint64_t{row_tiles} * col_tiles; }
};

/// One problem found by verify: a tile, or a whole tensor when `has_tile` is
/// false.
struct tile_problem {
  std::string tensor; // "l3.wq"; the key in hex when it is undecodable
  bool has_tile = false;
  uint32_t row_tile = 0;
  uint32_t col_tile = 0;
  std::string what; // "checksum mismatch", "missing", ...
  /// "l3.wq tile (2,5): checksum mismatch"
  std::string to_string() const;
};

struct verify_report {
  size_t tensors_checked = 0; // tensors of the model verified tile by tile
  uint64_t tiles_checked = 0; // values read and decoded
  uint64_t bytes_checked = 0; // value bytes read
  std::vector<tile_problem> problems;
  bool ok() const { return problems.empty(); }
};

struct verify_options {
  /// Also regenerate every tile from the manifest's model and seed and
  /// compare: catches tiles replaced by other, validly checksummed values.
  bool deep = false;
};

/// Reads every tile of the store and reports every problem: checksum
/// mismatches, undecodable keys or values, tiles of the wrong size, dtype or
/// position, int8 row scales that disagree between tiles of a row, missing
/// tiles of done tensors, tiles of tensors the model does not have, and an
/// incomplete init. Writes nothing (open the store read-only).
/// Errors: not_found (no weights in the store), corrupt (undecodable
/// manifest), io_error.
caf::expected<verify_report> verify_weights(const store& s,
                                            const verify_options& options = {});

/// Tiles of a tensor of `shape` in tiles of `tile`.
uint32_t row_tiles(model::tensor_shape shape, tile_shape tile);
uint32_t col_tiles(model::tensor_shape shape, tile_shape tile);

/// A complete weight store, ready to read.
class weight_store {
public:
  /// Errors: not_found (no weights: run `weights init`), incomplete (an
  /// interrupted init: run it again to resume), corrupt, io_error.
  /// REQUIRES: `s` outlives the weight_store.
  static caf::expected<weight_store> open(const store& s);

  const model::model_spec& spec() const noexcept { return manifest_.spec; }
  uint64_t seed() const noexcept { return manifest_.seed; }
  tile_shape tile() const noexcept { return manifest_.tile; }
  const weights_manifest& manifest() const noexcept { return manifest_; }

  /// Checks that `requested` (e.g. the preset named by --model) is the model
  /// this store holds: same name and shape. The dtype may differ (`weights
  /// init --dtype`); the store's spec() is what to run.
  /// Errors: mismatch, naming the store's model and the differing field.
  caf::error check_model(const model::model_spec& requested) const;

  /// Shard `range` of tensor `id`, checksum-verified.
  /// Errors: invalid_argument (tensor not in the model), model::invalid_shard,
  /// corrupt (names the tensor and tile: checksum mismatch, missing tile,
  /// wrong size), io_error.
  caf::expected<model::tensor> read(model::tensor_id id,
                                    const model::shard_range& range) const;
  /// The whole tensor.
  caf::expected<model::tensor> read(model::tensor_id id) const;

  /// Every tensor of the model, in canonical order.
  std::vector<tensor_info> list() const;

  /// verify_weights on this store.
  caf::expected<verify_report> verify(const verify_options& options = {}) const;

private:
  weight_store(const store* s, weights_manifest m)
      : store_(s)
      , manifest_(std::move(m)) {}

  const store* store_;
  weights_manifest manifest_;
};

} // namespace lockstep::storage
