#include "storage/gguf_file.hpp"

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace lockstep::storage::gguf {

namespace {

constexpr char magic[4] = {'G', 'G', 'U', 'F'};

// The least bytes an element of `t` takes in the file (a count larger
// than what is left divided by it cannot be real).
uint64_t min_bytes(value_type t) {
  switch (t) {
  case value_type::u8:
  case value_type::i8:
  case value_type::boolean:
    return 1;
  case value_type::u16:
  case value_type::i16:
    return 2;
  case value_type::u32:
  case value_type::i32:
  case value_type::f32:
    return 4;
  case value_type::u64:
  case value_type::i64:
  case value_type::f64:
  case value_type::string:
    return 8;
  case value_type::array:
    return 12;
  }
  return 1;
}

bool known(uint32_t t) { return t <= static_cast<uint32_t>(value_type::f64); }

// Reads the header, metadata and tensor infos through a buffer: the file
// is never read whole.
class parser {
public:
  parser(int fd, uint64_t size, const std::filesystem::path& path,
         const read_limits& limits)
      : fd_(fd)
      , size_(size)
      , path_(path.string())
      , limits_(limits) {}

  caf::error bad(const std::string& what) const {
    return caf::make_error(errc::invalid_file, path_ + ": " + what);
  }

  uint64_t pos() const { return pos_; }
  uint64_t left() const { return size_ - pos_; }

  caf::error bytes(void* out, uint64_t n, const std::string& what) {
    if (n > left())
      return bad(what + ": the file ends after " + std::to_string(size_) +
                 " bytes");
    auto* dst = static_cast<char*>(out);
    while (n > 0) {
      if (buf_pos_ == buf_.size()) {
        buf_.resize(std::min<uint64_t>(buffer_bytes, left()));
        size_t got = 0;
        while (got < buf_.size()) {
          auto r = ::pread(fd_, buf_.data() + got, buf_.size() - got,
                           static_cast<off_t>(pos_ + got));
          if (r < 0 && errno == EINTR)
            continue;
          if (r <= 0)
            return caf::make_error(errc::io_error,
                                   path_ + ": reading failed: " +
                                       (r < 0 ? std::strerror(errno)
                                              : "unexpected end of file"));
          got += static_cast<size_t>(r);
        }
        buf_pos_ = 0;
      }
      auto take = std::min<uint64_t>(n, buf_.size() - buf_pos_);
      std::memcpy(dst, buf_.data() + buf_pos_, take);
      dst += take;
      buf_pos_ += take;
      pos_ += take;
      n -= take;
    }
    return {};
  }

  template <class T>
  caf::expected<T> scalar(const std::string& what) {
    T v{};
    if (auto err = bytes(&v, sizeof v, what))
      return err;
    return v; // little-endian file, little-endian host
  }

  caf::expected<std::string> string(const std::string& what,
                                    uint64_t max_bytes) {
    auto n = scalar<uint64_t>(what + " (its length)");
    if (!n)
      return n.error();
    if (*n > max_bytes)
      return bad(what + ": a string of " + std::to_string(*n) +
                 " bytes (at most " + std::to_string(max_bytes) + ")");
    if (*n > left())
      return bad(what + ": a string of " + std::to_string(*n) +
                 " bytes, the file has " + std::to_string(left()) + " left");
    if (auto err = charge(*n, what))
      return err;
    std::string s(*n, '\0');
    if (auto err = bytes(s.data(), *n, what))
      return err;
    return s;
  }

  // Memory the metadata takes, against the limit.
  caf::error charge(uint64_t n, const std::string& what) {
    if (n > limits_.max_metadata_bytes - used_)
      return bad(what + ": the metadata would take more than " +
                 std::to_string(limits_.max_metadata_bytes) +
                 " bytes of memory");
    used_ += n;
    return {};
  }

  caf::expected<value> read_value(value_type t, const std::string& key,
                                  uint32_t depth) {
    value v;
    v.type = t;
    switch (t) {
    case value_type::u8:
      return widen<uint8_t>(v, v.u, key);
    case value_type::u16:
      return widen<uint16_t>(v, v.u, key);
    case value_type::u32:
      return widen<uint32_t>(v, v.u, key);
    case value_type::u64:
      return widen<uint64_t>(v, v.u, key);
    case value_type::i8:
      return widen<int8_t>(v, v.i, key);
    case value_type::i16:
      return widen<int16_t>(v, v.i, key);
    case value_type::i32:
      return widen<int32_t>(v, v.i, key);
    case value_type::i64:
      return widen<int64_t>(v, v.i, key);
    case value_type::f32:
      return widen<float>(v, v.f, key);
    case value_type::f64:
      return widen<double>(v, v.f, key);
    case value_type::boolean: {
      auto b = scalar<uint8_t>(key);
      if (!b)
        return b.error();
      if (*b > 1)
        return bad("key '" + key + "': a bool of " + std::to_string(*b));
      v.u = *b;
      return v;
    }
    case value_type::string: {
      auto s = string("key '" + key + "'", left());
      if (!s)
        return s.error();
      v.s = std::move(*s);
      return v;
    }
    case value_type::array: {
      if (depth >= limits_.max_array_depth)
        return bad("key '" + key + "': arrays nested deeper than " +
                   std::to_string(limits_.max_array_depth));
      auto et = scalar<uint32_t>("key '" + key + "' (its element type)");
      if (!et)
        return et.error();
      if (!known(*et))
        return bad("key '" + key + "': an array of unknown type " +
                   std::to_string(*et));
      v.element = static_cast<value_type>(*et);
      auto n = scalar<uint64_t>("key '" + key + "' (its length)");
      if (!n)
        return n.error();
      if (*n > left() / min_bytes(v.element))
        return bad("key '" + key + "': an array of " + std::to_string(*n) +
                   " elements, the file has " + std::to_string(left()) +
                   " bytes left");
      if (auto err = charge(*n * sizeof(value), "key '" + key + "'"))
        return err;
      v.items.reserve(*n);
      for (uint64_t k = 0; k < *n; ++k) {
        auto item = read_value(v.element, key, depth + 1);
        if (!item)
          return item.error();
        v.items.push_back(std::move(*item));
      }
      return v;
    }
    }
    return bad("key '" + key + "': unknown value type " +
               std::to_string(static_cast<uint32_t>(t)));
  }

private:
  template <class T, class Wide>
  caf::expected<value> widen(value& v, Wide& into, const std::string& key) {
    auto x = scalar<T>("key '" + key + "'");
    if (!x)
      return x.error();
    into = static_cast<Wide>(*x);
    return std::move(v);
  }

  static constexpr uint64_t buffer_bytes = 1 << 16;
  int fd_;
  uint64_t size_;
  std::string path_;
  read_limits limits_;
  uint64_t pos_ = 0;
  std::vector<char> buf_;
  size_t buf_pos_ = 0;
  uint64_t used_ = 0;
};

} // namespace

const char* to_string(value_type t) {
  switch (t) {
  case value_type::u8:
    return "u8";
  case value_type::i8:
    return "i8";
  case value_type::u16:
    return "u16";
  case value_type::i16:
    return "i16";
  case value_type::u32:
    return "u32";
  case value_type::i32:
    return "i32";
  case value_type::f32:
    return "f32";
  case value_type::boolean:
    return "bool";
  case value_type::string:
    return "string";
  case value_type::array:
    return "array";
  case value_type::u64:
    return "u64";
  case value_type::i64:
    return "i64";
  case value_type::f64:
    return "f64";
  }
  return "?";
}

bool value::is_unsigned() const {
  return type == value_type::u8 || type == value_type::u16 ||
         type == value_type::u32 || type == value_type::u64;
}
bool value::is_signed() const {
  return type == value_type::i8 || type == value_type::i16 ||
         type == value_type::i32 || type == value_type::i64;
}
bool value::is_float() const {
  return type == value_type::f32 || type == value_type::f64;
}

uint64_t tensor_info::elements() const {
  uint64_t n = 1;
  for (auto d : ne)
    n *= d;
  return n;
}

gguf_file::gguf_file(gguf_file&& o) noexcept
    : path_(std::move(o.path_))
    , fd_(std::exchange(o.fd_, -1))
    , version_(o.version_)
    , alignment_(o.alignment_)
    , data_offset_(o.data_offset_)
    , file_bytes_(o.file_bytes_)
    , metadata_(std::move(o.metadata_))
    , tensors_(std::move(o.tensors_))
    , by_name_(std::move(o.by_name_)) {}

gguf_file& gguf_file::operator=(gguf_file&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0)
      ::close(fd_);
    path_ = std::move(o.path_);
    fd_ = std::exchange(o.fd_, -1);
    version_ = o.version_;
    alignment_ = o.alignment_;
    data_offset_ = o.data_offset_;
    file_bytes_ = o.file_bytes_;
    metadata_ = std::move(o.metadata_);
    tensors_ = std::move(o.tensors_);
    by_name_ = std::move(o.by_name_);
  }
  return *this;
}

gguf_file::~gguf_file() {
  if (fd_ >= 0)
    ::close(fd_);
}

caf::expected<gguf_file> gguf_file::open(const std::filesystem::path& path,
                                         const read_limits& limits) {
  gguf_file f;
  f.path_ = path;
  f.fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f.fd_ < 0)
    return caf::make_error(errno == ENOENT ? errc::not_found : errc::io_error,
                           path.string() + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(f.fd_, &st) != 0)
    return caf::make_error(errc::io_error,
                           path.string() + ": " + std::strerror(errno));
  if (!S_ISREG(st.st_mode))
    return caf::make_error(errc::invalid_file,
                           path.string() + ": not a regular file");
  f.file_bytes_ = static_cast<uint64_t>(st.st_size);
  parser in{f.fd_, f.file_bytes_, path, limits};

  char m[4];
  if (auto err = in.bytes(m, 4, "the magic"))
    return err;
  if (std::memcmp(m, magic, 4) != 0)
    return in.bad("not a GGUF file (its first bytes are not \"GGUF\")");
  auto version = in.scalar<uint32_t>("the version");
  if (!version)
    return version.error();
  if (*version != 2 && *version != 3)
    return in.bad("GGUF version " + std::to_string(*version) +
                  " (this reader takes versions 2 and 3)");
  f.version_ = *version;
  auto n_tensors = in.scalar<uint64_t>("the tensor count");
  if (!n_tensors)
    return n_tensors.error();
  auto n_kv = in.scalar<uint64_t>("the metadata count");
  if (!n_kv)
    return n_kv.error();
  // A key/value takes at least 13 bytes, a tensor info 32.
  if (*n_kv > in.left() / 13)
    return in.bad(std::to_string(*n_kv) + " metadata entries, the file has " +
                  std::to_string(in.left()) + " bytes left");
  if (*n_tensors > in.left() / 32)
    return in.bad(std::to_string(*n_tensors) + " tensors, the file has " +
                  std::to_string(in.left()) + " bytes left");

  for (uint64_t k = 0; k < *n_kv; ++k) {
    auto key = in.string("metadata key " + std::to_string(k),
                         limits.max_key_bytes);
    if (!key)
      return key.error();
    if (f.metadata_.contains(*key))
      return in.bad("key '" + *key + "' appears twice");
    auto type = in.scalar<uint32_t>("key '" + *key + "' (its type)");
    if (!type)
      return type.error();
    if (!known(*type))
      return in.bad("key '" + *key + "': unknown value type " +
                    std::to_string(*type));
    auto v = in.read_value(static_cast<value_type>(*type), *key, 0);
    if (!v)
      return v.error();
    f.metadata_.emplace(std::move(*key), std::move(*v));
  }
  if (const auto* a = f.find("general.alignment")) {
    if (a->type != value_type::u32 || a->u == 0 || (a->u & (a->u - 1)) != 0)
      return in.bad("general.alignment must be a u32 power of two");
    f.alignment_ = a->u;
  }

  f.tensors_.reserve(*n_tensors);
  for (uint64_t k = 0; k < *n_tensors; ++k) {
    tensor_info t;
    auto name = in.string("tensor " + std::to_string(k) + "'s name",
                          limits.max_key_bytes);
    if (!name)
      return name.error();
    t.name = std::move(*name);
    auto where = "tensor '" + t.name + "'";
    if (f.by_name_.contains(t.name))
      return in.bad(where + " appears twice");
    auto dims = in.scalar<uint32_t>(where + " (its dimensions)");
    if (!dims)
      return dims.error();
    if (*dims == 0 || *dims > 4)
      return in.bad(where + ": " + std::to_string(*dims) +
                    " dimensions (1 to 4)");
    uint64_t elements = 1;
    for (uint32_t d = 0; d < *dims; ++d) {
      auto ne = in.scalar<uint64_t>(where + " (its shape)");
      if (!ne)
        return ne.error();
      if (*ne == 0 || *ne > (uint64_t{1} << 62) / elements)
        return in.bad(where + ": dimension " + std::to_string(d) + " is " +
                      std::to_string(*ne));
      elements *= *ne;
      t.ne.push_back(*ne);
    }
    auto type = in.scalar<uint32_t>(where + " (its type)");
    if (!type)
      return type.error();
    auto traits = traits_of(*type);
    if (!traits)
      return in.bad(where + ": unknown tensor type " + std::to_string(*type));
    t.type = static_cast<ggml_type>(*type);
    if (t.ne[0] % traits->block_elems != 0)
      return in.bad(where + ": its first dimension " + std::to_string(t.ne[0]) +
                    " is not a multiple of " + std::string{traits->name} +
                    "'s block of " + std::to_string(traits->block_elems));
    // The product cannot wrap: no tensor is larger than the file.
    uint64_t blocks = elements / traits->block_elems;
    if (blocks > f.file_bytes_ / traits->block_bytes)
      return in.bad(where + ": its " + std::to_string(elements) + " " +
                    std::string{traits->name} +
                    " elements take more bytes than the file has (" +
                    std::to_string(f.file_bytes_) + ")");
    t.bytes = blocks * traits->block_bytes;
    auto offset = in.scalar<uint64_t>(where + " (its offset)");
    if (!offset)
      return offset.error();
    if (*offset % f.alignment_ != 0)
      return in.bad(where + ": offset " + std::to_string(*offset) +
                    " is not a multiple of the alignment " +
                    std::to_string(f.alignment_));
    t.offset = *offset;
    f.by_name_.emplace(t.name, f.tensors_.size());
    f.tensors_.push_back(std::move(t));
  }

  uint64_t end = in.pos();
  f.data_offset_ = (end + f.alignment_ - 1) / f.alignment_ * f.alignment_;
  uint64_t data = f.file_bytes_ >= f.data_offset_
                      ? f.file_bytes_ - f.data_offset_
                      : 0;
  if (f.data_offset_ > f.file_bytes_ && !f.tensors_.empty())
    return in.bad("the data section starts past the end of the file");
  std::vector<const tensor_info*> order;
  for (const auto& t : f.tensors_) {
    if (t.offset > data || t.bytes > data - t.offset)
      return in.bad("tensor '" + t.name + "': its " + std::to_string(t.bytes) +
                    " bytes at offset " + std::to_string(t.offset) +
                    " run past the end of the file (" + std::to_string(data) +
                    " data bytes)");
    order.push_back(&t);
  }
  std::sort(order.begin(), order.end(),
            [](auto* a, auto* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < order.size(); ++i)
    if (order[i - 1]->offset + order[i - 1]->bytes > order[i]->offset)
      return in.bad("tensors '" + order[i - 1]->name + "' and '" +
                    order[i]->name + "' overlap");
  return f;
}

const value* gguf_file::find(const std::string& key) const {
  auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

const tensor_info* gguf_file::tensor(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

caf::error gguf_file::read(const tensor_info& t,
                           std::span<std::byte> out) const {
  return read_rows(t, 0, t.elements() / t.ne[0], out);
}

caf::error gguf_file::read_rows(const tensor_info& t, uint64_t first,
                                [[maybe_unused]] uint64_t rows,
                                std::span<std::byte> out) const {
  uint64_t row_bytes = t.bytes / (t.elements() / t.ne[0]);
  assert(first + rows <= t.elements() / t.ne[0] &&
         out.size() == rows * row_bytes);
  uint64_t at = data_offset_ + t.offset + first * row_bytes;
  size_t got = 0;
  while (got < out.size()) {
    auto r = ::pread(fd_, out.data() + got, out.size() - got,
                     static_cast<off_t>(at + got));
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0)
      return caf::make_error(errc::io_error, path_.string() + ": tensor '" +
                                                 t.name + "': " +
                                                 std::strerror(errno));
    if (r == 0)
      return caf::make_error(errc::invalid_file,
                             path_.string() + ": tensor '" + t.name +
                                 "': the file ends before its data does (it "
                                 "shrank since it was opened)");
    got += static_cast<size_t>(r);
  }
  return {};
}

} // namespace lockstep::storage::gguf
