#include "storage/store.hpp"

#include "storage/detail/meta_keys.hpp"
#include "storage/detail/owner_lock.hpp"
#include "storage/detail/rocks_status.hpp"

#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>

namespace lockstep::storage {

static_assert(std::endian::native == std::endian::little,
              "stored integers are little-endian and copied as is");

namespace {

namespace fs = std::filesystem;

constexpr std::array<column, 4> all_columns = {column::meta, column::weights,
                                               column::plans, column::cluster};

// Column family handles must be released before their DB; the deleter keeps
// the DB pointer so every handle is an ordinary RAII object.
struct cf_deleter {
  rocksdb::DB* db = nullptr;
  void operator()(rocksdb::ColumnFamilyHandle* h) const {
    db->DestroyColumnFamilyHandle(h);
  }
};
using cf_ptr = std::unique_ptr<rocksdb::ColumnFamilyHandle, cf_deleter>;

rocksdb::DBOptions db_options(bool create) {
  rocksdb::DBOptions o;
  o.create_if_missing = create;
  o.create_missing_column_families = create;
  // Weights are bulk-loaded without the WAL (store::write_unlogged); atomic
  // flushes keep what survives a crash a consistent prefix of the writes
  // across column families.
  o.atomic_flush = true;
  o.max_background_jobs = 2;
  o.bytes_per_sync = 1 << 20;
  o.info_log_level = rocksdb::InfoLogLevel::WARN_LEVEL;
  o.keep_log_file_num = 2;
  return o;
}

rocksdb::ColumnFamilyOptions cf_options(column cf) {
  rocksdb::ColumnFamilyOptions o;
  if (cf != column::weights)
    return o; // small, compressible metadata: RocksDB's defaults
  // Weight tiles are random-looking floats: compression costs time and saves
  // nothing. Tiles are ~4-16 KiB, each its own data block (block_size 4 KiB),
  // so a point get reads exactly one tile from disk.
  o.compression = rocksdb::kNoCompression;
  o.bottommost_compression = rocksdb::kNoCompression;
  o.write_buffer_size = 64 << 20;
  o.max_write_buffer_number = 4;
  o.target_file_size_base = 64 << 20;
  // A bulk load writes mostly non-overlapping files; let more of them sit in
  // level 0 before compacting (which would only rewrite the same bytes).
  o.level0_file_num_compaction_trigger = 8;
  o.level0_slowdown_writes_trigger = 48;
  o.level0_stop_writes_trigger = 64;
  rocksdb::BlockBasedTableOptions t;
  t.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  o.table_factory.reset(rocksdb::NewBlockBasedTableFactory(t));
  return o;
}

std::vector<rocksdb::ColumnFamilyDescriptor> descriptors() {
  std::vector<rocksdb::ColumnFamilyDescriptor> out;
  out.emplace_back(rocksdb::kDefaultColumnFamilyName,
                   rocksdb::ColumnFamilyOptions{});
  for (auto cf : all_columns)
    out.emplace_back(to_string(cf), cf_options(cf));
  return out;
}

std::string encode_u32(uint32_t v) {
  std::string out(4, '\0');
  std::memcpy(out.data(), &v, 4);
  return out;
}

caf::error not_a_store(const fs::path& dir, const std::string& why) {
  return caf::make_error(
      errc::not_found, dir.string() + " is not a lockstep store (" + why + ")");
}

} // namespace

const char* to_string(column cf) {
  switch (cf) {
  case column::meta:
    return "meta";
  case column::weights:
    return "weights";
  case column::plans:
    return "plans";
  case column::cluster:
    return "cluster";
  }
  return "unknown";
}

struct store::impl {
  // Destroyed in reverse order: handles, then the DB (which flushes
  // unlogged writes on close), then the owner lock.
  detail::owner_lock lock;
  std::unique_ptr<rocksdb::DB> db;
  cf_ptr default_cf;
  std::array<cf_ptr, all_columns.size()> cfs;

  rocksdb::ColumnFamilyHandle* handle(column cf) const {
    return cfs[static_cast<size_t>(cf)].get();
  }
};

store::store(std::filesystem::path dir, bool read_only, std::unique_ptr<impl> p)
    : dir_(std::move(dir))
    , read_only_(read_only)
    , impl_(std::move(p)) {}

store::~store() = default;

caf::expected<std::unique_ptr<store>>
store::open(const std::filesystem::path& dir, const open_options& options) {
  bool create = options.create_if_missing && !options.read_only;
  std::error_code ec;
  auto st = fs::status(dir, ec);
  if (!fs::exists(st)) {
    if (!create)
      return caf::make_error(errc::not_found, "no store at " + dir.string() +
                                                  ": directory does not exist");
    fs::create_directories(dir, ec);
    if (ec)
      return caf::make_error(errc::io_error,
                             "create " + dir.string() + ": " + ec.message());
  } else if (!fs::is_directory(st)) {
    return caf::make_error(errc::invalid_argument,
                           dir.string() + " is not a directory");
  }
  // The owner lock first: a second process must learn who holds the store,
  // before RocksDB's own lock gives it a less helpful error.
  auto lock = detail::owner_lock::acquire(dir, options.read_only);
  if (!lock)
    return lock.error();
  bool has_db = fs::exists(dir / "CURRENT", ec);
  if (!has_db) {
    if (!create)
      return not_a_store(dir, "no database in it");
    for (const auto& entry : fs::directory_iterator(dir, ec))
      if (entry.path().filename() != detail::owner_lock_file)
        return caf::make_error(errc::invalid_argument,
                               dir.string() +
                                   " is not empty and holds no lockstep store; "
                                   "refusing to create one there");
  } else {
    std::vector<std::string> names;
    auto s = rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions{}, dir.string(),
                                             &names);
    if (auto err = detail::from_status(s, "open store " + dir.string()))
      return err;
    for (auto cf : all_columns)
      if (std::find(names.begin(), names.end(), to_string(cf)) == names.end())
        return not_a_store(dir, std::string{"no column family '"} +
                                    to_string(cf) + "'");
  }

  auto p = std::make_unique<impl>();
  p->lock = std::move(*lock);
  rocksdb::DB* raw = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  auto opts = db_options(create);
  auto descs = descriptors();
  auto s = options.read_only
               ? rocksdb::DB::OpenForReadOnly(opts, dir.string(), descs,
                                              &handles, &raw)
               : rocksdb::DB::Open(opts, dir.string(), descs, &handles, &raw);
  p->db.reset(raw);
  if (!handles.empty()) {
    p->default_cf = cf_ptr{handles[0], cf_deleter{raw}};
    for (size_t i = 0; i < all_columns.size(); ++i)
      p->cfs[i] = cf_ptr{handles[i + 1], cf_deleter{raw}};
  }
  if (auto err = detail::from_status(s, "open store " + dir.string()))
    return err;

  // Private constructor: make_unique cannot reach it; ownership is taken at
  // once.
  std::unique_ptr<store> result{
      new store(dir, options.read_only, std::move(p))};
  auto version = result->get(column::meta, detail::format_version_key);
  if (!version)
    return version.error();
  if (!*version) {
    // A store we just created (or whose creation was interrupted before the
    // version was recorded): stamp it.
    if (!create)
      return not_a_store(dir, "no format version recorded");
    auto value = encode_u32(store_format_version);
    store::batch b;
    b.put(column::meta, detail::format_version_key, value);
    if (auto err = result->write(b, true))
      return err;
    return result;
  }
  uint32_t found = 0;
  if ((*version)->size() != 4)
    return caf::make_error(errc::corrupt, "store " + dir.string() +
                                              ": undecodable format version");
  std::memcpy(&found, (*version)->data(), 4);
  if (found != store_format_version)
    return caf::make_error(errc::version_mismatch,
                           "store " + dir.string() + " has format version " +
                               std::to_string(found) +
                               "; this build reads version " +
                               std::to_string(store_format_version));
  return result;
}

caf::expected<std::optional<std::string>>
store::get(column cf, std::string_view key) const {
  rocksdb::PinnableSlice value;
  auto s = impl_->db->Get(rocksdb::ReadOptions{}, impl_->handle(cf),
                          rocksdb::Slice{key.data(), key.size()}, &value);
  if (s.IsNotFound())
    return std::optional<std::string>{};
  if (auto err =
          detail::from_status(s, std::string{"get from "} + to_string(cf)))
    return err;
  return std::optional<std::string>{value.ToString()};
}

caf::error store::put(column cf, std::string_view key, std::string_view value) {
  batch b;
  b.put(cf, key, value);
  return write(b);
}

caf::error store::erase(column cf, std::string_view key) {
  batch b;
  b.erase(cf, key);
  return write(b);
}

// --- Batches -----------------------------------------------------------------

// Operations are recorded and replayed into a rocksdb::WriteBatch at write
// time: a batch is built before it knows the store (and so the column family
// handles) it will be written to.
struct store::batch::impl {
  struct op {
    column cf;
    bool erase;
    std::string key;
    std::string value;
  };
  std::vector<op> ops;
  size_t bytes = 0;
};

store::batch::batch()
    : impl_(std::make_unique<impl>()) {}
store::batch::~batch() = default;
store::batch::batch(batch&&) noexcept = default;
store::batch& store::batch::operator=(batch&&) noexcept = default;

void store::batch::put(column cf, std::string_view key,
                       std::string_view value) {
  impl_->ops.push_back({cf, false, std::string{key}, std::string{value}});
  impl_->bytes += key.size() + value.size();
}

void store::batch::erase(column cf, std::string_view key) {
  impl_->ops.push_back({cf, true, std::string{key}, {}});
  impl_->bytes += key.size();
}

size_t store::batch::size_bytes() const {
  return impl_->bytes;
}

caf::error store::write_impl(batch& b, bool sync, bool unlogged) {
  if (read_only_)
    return caf::make_error(errc::invalid_argument, "write to store " +
                                                       dir_.string() +
                                                       " opened read-only");
  const auto& ops = b.impl_->ops;
  rocksdb::WriteBatch wb{b.impl_->bytes + 32 * ops.size()};
  for (const auto& op : ops) {
    rocksdb::Slice key{op.key};
    auto* cf = impl_->handle(op.cf);
    auto s = op.erase ? wb.Delete(cf, key) : wb.Put(cf, key, op.value);
    if (auto err = detail::from_status(s, "build write batch"))
      return err;
  }
  rocksdb::WriteOptions wo;
  wo.sync = sync;
  wo.disableWAL = unlogged;
  return detail::from_status(impl_->db->Write(wo, &wb),
                             "write to store " + dir_.string());
}

caf::error store::write(batch& b, bool sync) {
  return write_impl(b, sync, false);
}

caf::error store::write_unlogged(batch& b) {
  return write_impl(b, false, true);
}

caf::error store::flush() {
  if (read_only_)
    return caf::make_error(errc::invalid_argument,
                           "flush of a store opened read-only");
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  for (auto& h : impl_->cfs)
    handles.push_back(h.get());
  rocksdb::FlushOptions fo;
  fo.wait = true;
  if (auto err = detail::from_status(impl_->db->Flush(fo, handles),
                                     "flush " + dir_.string()))
    return err;
  return detail::from_status(impl_->db->FlushWAL(true),
                             "sync WAL of " + dir_.string());
}

caf::error store::scan_impl(
    column cf, std::string_view prefix,
    const std::function<bool(std::string_view, std::string_view)>& fn) const {
  rocksdb::ReadOptions ro;
  ro.fill_cache = false; // scans are bulk reads; keep the cache for gets
  std::unique_ptr<rocksdb::Iterator> it{
      impl_->db->NewIterator(ro, impl_->handle(cf))};
  for (it->Seek(rocksdb::Slice{prefix.data(), prefix.size()}); it->Valid();
       it->Next()) {
    auto key = it->key();
    if (!key.starts_with(rocksdb::Slice{prefix.data(), prefix.size()}))
      break;
    auto value = it->value();
    if (!fn(std::string_view{key.data(), key.size()},
            std::string_view{value.data(), value.size()}))
      break;
  }
  return detail::from_status(it->status(),
                             std::string{"scan "} + to_string(cf));
}

} // namespace lockstep::storage
