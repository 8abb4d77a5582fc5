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
// A *partial* store (`init_weight_shards`) holds only the tiles covering a
// list of shards — one host's chips' part of a plan — bit-identical to the
// same tiles of a full store; its manifest lists the shards. Reads inside
// what it holds work as on a full store; reads outside are `not_held`.
// A store only grows: asking an existing store for more shards (or for the
// whole model) adds what is missing.
//
// Thread-safety: a weight_store is immutable after open; read/list/verify
// may run concurrently (RocksDB reads are thread-safe). init_weights and
// init_weight_shards must not run concurrently with anything else on the
// same store.

#include "model/block_rule.hpp"
#include "model/tensor.hpp"
#include "storage/store.hpp"

#include <caf/expected.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace lockstep::storage {

namespace detail {
class held_tiles;
} // namespace detail

/// Elements per tile: rows x cols. cols is a whole number of reduction blocks,
/// so a split along the reduction dimension never cuts a tile in two.
struct tile_shape {
  uint32_t rows = 64;
  uint32_t cols = model::reduction_block_elems;
  friend bool operator==(const tile_shape&, const tile_shape&) = default;
};

enum class init_state : uint8_t { in_progress, complete };
const char* to_string(init_state s);

/// A rectangle of one tensor: what a chip holds (planner::shard's tensor and
/// range), and what a partial store is asked for.
using tensor_shard = std::pair<model::tensor_id, model::shard_range>;
using shard_list = std::vector<tensor_shard>;

/// What the store holds (meta key "weights.manifest", JSON).
struct weights_manifest {
  model::model_spec spec; // weight_dtype is the stored dtype (after --dtype)
  uint64_t seed = 0;      // the generator's seed (imported: 0)
  /// Where the weights came from: empty for the generator (from `seed`),
  /// else the import's source, e.g. "gguf:tinyllama.gguf".
  std::string source;
  tile_shape tile;
  init_state state = init_state::in_progress;
  /// A partial store holds exactly the tiles covering `shards` (in the
  /// model's canonical tensor order, then by range, without duplicates); a
  /// full store holds every tile and `shards` is empty.
  bool partial = false;
  shard_list shards;
};

/// The manifest, or nullopt when the store holds no weights.
/// Errors: corrupt (undecodable manifest), io_error.
caf::expected<std::optional<weights_manifest>> read_manifest(const store& s);

// --- init --------------------------------------------------------------------

struct init_progress {
  model::tensor_id tensor;  // the tensor (or shard of it) just finished
  model::shard_range range; // the shard; the whole tensor in a full init
  /// Tensors finished, including this one. In a partial init: tensors the
  /// store holds shards of, each counted after its last shard.
  size_t tensors_done = 0;
  size_t tensors_total = 0;
  /// Shards finished, including this one; a full init counts each tensor as
  /// one whole shard (so these equal tensors_done / tensors_total).
  size_t shards_done = 0;
  size_t shards_total = 0;
  /// Payload bytes (model::tensor_bytes; in a partial init, of the held
  /// tiles, each counted with the first shard that covers it).
  uint64_t bytes_done = 0;
  uint64_t bytes_total = 0;
  bool skipped = false; // done by an earlier, interrupted run
};

/// Called after each tensor (in a partial init: each shard); returning false
/// stops init cleanly (the store is left resumable and init returns
/// `incomplete`).
using init_callback = std::function<bool(const init_progress&)>;

struct init_options {
  tile_shape tile;
  /// Bytes of tiles per RocksDB write batch (the last batch of a tensor also
  /// carries its done marker).
  size_t batch_bytes = 32 << 20;
};

struct init_report {
  /// In a partial init: tensors with a shard written by this run, and
  /// tensors all of whose shards were already there.
  size_t tensors_written = 0;
  size_t tensors_skipped = 0;
  size_t shards_written = 0; // a full init: = tensors_written
  size_t shards_skipped = 0;
  uint64_t bytes_written = 0; // payload bytes of the tiles this run wrote
  double seconds = 0;
};

/// Writes every tensor of `spec` generated from `seed` into `s`, or resumes
/// an interrupted run with the same spec, seed and tile shape. A complete
/// store with the same parameters is left as is (everything skipped).
/// A partial store given to init_weights becomes a full one (its missing
/// tiles are added).
/// Errors: mismatch (the store holds another model/seed/dtype/tile shape),
/// incomplete (stopped by the callback; run again to resume),
/// invalid_argument (read-only store, bad tile shape), model::invalid_spec,
/// io_error.
caf::expected<init_report> init_weights(store& s, const model::model_spec& spec,
                                        uint64_t seed,
                                        const init_callback& progress = {},
                                        const init_options& options = {});

/// Writes only the tiles covering `shards` — every tile a shard touches,
/// whole — each bit-identical to the same tile written by init_weights with
/// the same spec, seed and tile shape. The store becomes (or stays) partial
/// and its manifest lists the shards. Resumable per shard; idempotent.
///
/// On an existing store with the same spec, seed and tile shape the store
/// grows to hold the union of what it held and `shards`: shards already
/// there are skipped, new ones added (a re-plan that moves a chip here). A
/// full store already holds every shard: a complete one is left as is, an
/// interrupted full init is resumed (a store never shrinks). `shards` may be
/// empty (a host without chips: a complete store holding no tiles).
/// Errors: as init_weights, and invalid_argument naming a shard that is not
/// a valid range (model::check_shard) of a tensor of `spec`.
caf::expected<init_report>
init_weight_shards(store& s, const model::model_spec& spec, uint64_t seed,
                   const shard_list& shards, const init_callback& progress = {},
                   const init_options& options = {});

/// Shard `range` of tensor `id`, in the store's dtype for it: what an
/// import writes (weight_init.cpp also serves the generator this way).
using tensor_source = std::function<caf::expected<model::tensor>(
    model::tensor_id id, const model::shard_range& range)>;

/// Writes every tensor of `spec` from `source` into `s` — a fresh store,
/// or one an interrupted import of the same spec, `source_name` and tile
/// shape left (resumed: tensors done are skipped). The manifest records
/// `source_name` and no seed. Errors: as init_weights; mismatch when the
/// store holds other weights (generated, or another import).
caf::expected<init_report>
import_weights(store& s, const model::model_spec& spec,
               const std::string& source_name, const tensor_source& source,
               const init_callback& progress = {},
               const init_options& options = {});

/// import_weights for the tiles covering `shards` only (a host of a
/// cluster running an imported model): the store becomes partial, as with
/// init_weight_shards, and records `source_name`.
caf::expected<init_report>
import_weight_shards(store& s, const model::model_spec& spec,
                     const std::string& source_name,
                     const tensor_source& source, const shard_list& shards,
                     const init_callback& progress = {},
                     const init_options& options = {});

/// The model of the imported store at `dir` (opened read-only, closed
/// again). Errors: not_found, in_use, corrupt, invalid_argument (the store
/// holds generated weights — name the preset instead — or is partial or
/// incomplete).
caf::expected<model::model_spec>
imported_spec(const std::filesystem::path& dir);

// --- reading -----------------------------------------------------------------

struct tensor_info {
  model::tensor_id id;
  model::tensor_shape shape;
  model::dtype type = model::dtype::f32;
  uint64_t bytes = 0; // payload (int8 scales included), not tile overhead
  uint32_t row_tiles = 0;
  uint32_t col_tiles = 0;
  uint64_t tiles() const { return uint64_t{row_tiles} * col_tiles; }
  /// What the store holds of this tensor: every tile and {whole} in a full
  /// store; in a partial store the tiles covering the manifest's shards of
  /// it (possibly none) and those shards.
  uint64_t held_tiles = 0;
  uint64_t held_bytes = 0; // payload of the held tiles
  std::vector<model::shard_range> shards;
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
  bool partial = false;       // the store is partial (weights_manifest)
  size_t tensors_checked = 0; // tensors of the model verified tile by tile
  size_t shards_checked = 0;  // partial stores: shards verified tile by tile
  uint64_t tiles_checked = 0; // values read and decoded
  uint64_t bytes_checked = 0; // value bytes read
  std::vector<tile_problem> problems;
  bool ok() const { return problems.empty(); }
};

struct verify_options {
  /// Also regenerate every tile from the manifest's model and seed and
  /// compare: catches tiles replaced by other, validly checksummed values.
  bool deep = false;
  /// deep on an imported store: compare with this source (the file it was
  /// imported from) instead; without it, deep verification of an imported
  /// store is refused (invalid_argument), as the generator did not make it.
  const tensor_source* source = nullptr;
};

/// Reads every tile of the store and reports every problem: checksum
/// mismatches, undecodable keys or values, tiles of the wrong size, dtype or
/// position, int8 row scales that disagree between tiles of a row, missing
/// tiles of done tensors (partial stores: of done shards), tiles of tensors
/// the model does not have, tiles a partial store does not hold, stray or
/// wrong done markers, and an incomplete init. Writes nothing (open the
/// store read-only).
/// Errors: not_found (no weights in the store), corrupt (undecodable
/// manifest), io_error.
caf::expected<verify_report> verify_weights(const store& s,
                                            const verify_options& options = {});

/// Tiles of a tensor of `shape` in tiles of `tile`.
uint32_t row_tiles(model::tensor_shape shape, tile_shape tile);
uint32_t col_tiles(model::tensor_shape shape, tile_shape tile);

/// A complete weight store, full or partial, ready to read.
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
  bool partial() const noexcept { return manifest_.partial; }
  /// A partial store's shards (manifest order); empty for a full store.
  const shard_list& shards() const noexcept { return manifest_.shards; }

  /// Whether read(id, range) finds its tiles here: `range` is a valid shard
  /// of a tensor of the model and, in a partial store, every tile it touches
  /// is covered by the manifest's shards. Tiles are whole, so a range
  /// reaching past a shard into that shard's edge tiles is held too.
  bool holds(model::tensor_id id, const model::shard_range& range) const;

  /// Checks that `requested` (e.g. the preset named by --model) is the model
  /// this store holds: same name and shape. The dtype may differ (`weights
  /// init --dtype`); the store's spec() is what to run.
  /// Errors: mismatch, naming the store's model and the differing field.
  caf::error check_model(const model::model_spec& requested) const;

  /// Shard `range` of tensor `id`, checksum-verified.
  /// Errors: invalid_argument (tensor not in the model), model::invalid_shard,
  /// not_held (a partial store without some tile of `range`; names the
  /// tensor, the range and the shards of it the store holds), corrupt (names
  /// the tensor and tile: checksum mismatch, missing tile, wrong size),
  /// io_error.
  caf::expected<model::tensor> read(model::tensor_id id,
                                    const model::shard_range& range) const;
  /// The whole tensor.
  caf::expected<model::tensor> read(model::tensor_id id) const;

  /// Every tensor of the model, in canonical order (a partial store's
  /// tensors it holds nothing of included, with held_tiles 0).
  std::vector<tensor_info> list() const;

  /// verify_weights on this store.
  caf::expected<verify_report> verify(const verify_options& options = {}) const;

private:
  weight_store(const store* s, weights_manifest m);

  const store* store_;
  weights_manifest manifest_;
  // Partial stores: the tiles the manifest's shards cover (immutable, so
  // copies of this weight_store share it).
  std::shared_ptr<const detail::held_tiles> held_;
};

} // namespace lockstep::storage
