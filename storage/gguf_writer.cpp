#include "storage/gguf_writer.hpp"

#include <cassert>
#include <cstring>
#include <fstream>
#include <memory>
#include <system_error>

namespace lockstep::storage::gguf {

namespace {

class out_bytes {
public:
  template <class T>
  void scalar(T v) {
    append(&v, sizeof v);
  }
  void string(const std::string& s) {
    scalar<uint64_t>(s.size());
    append(s.data(), s.size());
  }
  void append(const void* p, size_t n) {
    size_t at = b_.size();
    b_.resize(at + n);
    if (n != 0)
      std::memcpy(b_.data() + at, p, n);
  }
  void pad(uint64_t alignment) {
    b_.resize((b_.size() + alignment - 1) / alignment * alignment,
              std::byte{0});
  }
  void payload(const value& v) {
    switch (v.type) {
    case value_type::u8:
      return scalar<uint8_t>(static_cast<uint8_t>(v.u));
    case value_type::u16:
      return scalar<uint16_t>(static_cast<uint16_t>(v.u));
    case value_type::u32:
      return scalar<uint32_t>(static_cast<uint32_t>(v.u));
    case value_type::u64:
      return scalar<uint64_t>(v.u);
    case value_type::i8:
      return scalar<int8_t>(static_cast<int8_t>(v.i));
    case value_type::i16:
      return scalar<int16_t>(static_cast<int16_t>(v.i));
    case value_type::i32:
      return scalar<int32_t>(static_cast<int32_t>(v.i));
    case value_type::i64:
      return scalar<int64_t>(v.i);
    case value_type::f32:
      return scalar<float>(static_cast<float>(v.f));
    case value_type::f64:
      return scalar<double>(v.f);
    case value_type::boolean:
      return scalar<uint8_t>(v.u != 0 ? 1 : 0);
    case value_type::string:
      return string(v.s);
    case value_type::array:
      scalar<uint32_t>(static_cast<uint32_t>(v.element));
      scalar<uint64_t>(v.items.size());
      for (const auto& item : v.items)
        payload(item);
      return;
    }
  }
  std::vector<std::byte> take() { return std::move(b_); }

private:
  std::vector<std::byte> b_;
};

} // namespace

uint64_t tensor_bytes(const std::vector<uint64_t>& ne, ggml_type type) {
  auto t = traits_of(static_cast<uint32_t>(type));
  assert(t && !ne.empty() && ne[0] % t->block_elems == 0);
  uint64_t n = 1;
  for (auto d : ne)
    n *= d;
  return n / t->block_elems * t->block_bytes;
}

gguf_writer::gguf_writer(uint64_t alignment)
    : alignment_(alignment) {
  assert(alignment != 0 && (alignment & (alignment - 1)) == 0);
  if (alignment != 32) {
    value v;
    v.type = value_type::u32;
    v.u = alignment;
    set("general.alignment", v);
  }
}

void gguf_writer::set(const std::string& key, value v) {
  for (auto& [k, old] : metadata_)
    if (k == key) {
      old = std::move(v);
      return;
    }
  metadata_.emplace_back(key, std::move(v));
}

void gguf_writer::set_u32(const std::string& key, uint32_t v) {
  value x;
  x.type = value_type::u32;
  x.u = v;
  set(key, std::move(x));
}

void gguf_writer::set_f32(const std::string& key, float v) {
  value x;
  x.type = value_type::f32;
  x.f = v;
  set(key, std::move(x));
}

void gguf_writer::set_string(const std::string& key, std::string v) {
  value x;
  x.type = value_type::string;
  x.s = std::move(v);
  set(key, std::move(x));
}

void gguf_writer::set_strings(const std::string& key,
                              std::vector<std::string> v) {
  value x;
  x.type = value_type::array;
  x.element = value_type::string;
  for (auto& s : v) {
    value item;
    item.type = value_type::string;
    item.s = std::move(s);
    x.items.push_back(std::move(item));
  }
  set(key, std::move(x));
}

void gguf_writer::add_tensor(std::string name, std::vector<uint64_t> ne,
                             ggml_type type, std::vector<std::byte> data) {
  assert(data.size() == tensor_bytes(ne, type));
  auto held = std::make_shared<std::vector<std::byte>>(std::move(data));
  add_tensor(std::move(name), std::move(ne), type,
             [held](std::span<std::byte> out) -> caf::error {
               std::memcpy(out.data(), held->data(), held->size());
               return {};
             });
}

void gguf_writer::add_tensor(std::string name, std::vector<uint64_t> ne,
                             ggml_type type, filler fill) {
  auto bytes = tensor_bytes(ne, type);
  tensors_.push_back(
      {std::move(name), std::move(ne), type, bytes, std::move(fill)});
}

std::vector<std::byte> gguf_writer::head() const {
  out_bytes o;
  o.scalar<uint32_t>(0x46554747u); // "GGUF"
  o.scalar<uint32_t>(3);
  o.scalar<uint64_t>(tensors_.size());
  o.scalar<uint64_t>(metadata_.size());
  for (const auto& [k, v] : metadata_) {
    o.string(k);
    o.scalar<uint32_t>(static_cast<uint32_t>(v.type));
    o.payload(v);
  }
  uint64_t offset = 0;
  for (const auto& t : tensors_) {
    o.string(t.name);
    o.scalar<uint32_t>(static_cast<uint32_t>(t.ne.size()));
    for (auto d : t.ne)
      o.scalar<uint64_t>(d);
    o.scalar<uint32_t>(static_cast<uint32_t>(t.type));
    o.scalar<uint64_t>(offset);
    offset += (t.bytes + alignment_ - 1) / alignment_ * alignment_;
  }
  o.pad(alignment_);
  return o.take();
}

std::vector<std::byte> gguf_writer::bytes() const {
  auto out = head();
  for (const auto& t : tensors_) {
    size_t at = out.size();
    out.resize(at + (t.bytes + alignment_ - 1) / alignment_ * alignment_,
               std::byte{0});
    [[maybe_unused]] auto err =
        t.fill(std::span<std::byte>{out.data() + at, t.bytes});
    assert(!err);
  }
  return out;
}

caf::error gguf_writer::write(const std::filesystem::path& path) const {
  auto tmp = path;
  tmp += ".partial";
  {
    std::ofstream out{tmp, std::ios::binary | std::ios::trunc};
    auto put = [&](const std::byte* p, size_t n) {
      out.write(reinterpret_cast<const char*>(p),
                static_cast<std::streamsize>(n));
    };
    auto h = head();
    put(h.data(), h.size());
    std::vector<std::byte> buf;
    for (const auto& t : tensors_) {
      // Data and its padding: one tensor in memory at a time.
      buf.assign((t.bytes + alignment_ - 1) / alignment_ * alignment_,
                 std::byte{0});
      if (auto err = t.fill(std::span<std::byte>{buf.data(), t.bytes})) {
        out.close();
        std::error_code ec;
        std::filesystem::remove(tmp, ec);
        return err;
      }
      put(buf.data(), buf.size());
      if (!out)
        break;
    }
    out.flush();
    if (!out)
      return caf::make_error(errc::io_error,
                             tmp.string() + ": writing failed");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec)
    return caf::make_error(errc::io_error,
                           path.string() + ": " + ec.message());
  return {};
}

} // namespace lockstep::storage::gguf
