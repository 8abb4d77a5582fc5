// GGUF against its headers: a writer/reader round trip of every metadata
// kind and every supported tensor type; to_f32 against values worked out by
// hand from ggml's definitions; malformed files (each defect alone, every
// truncation, and thousands of mutants of a valid file) are invalid_file
// errors naming the fault, never crashes.

#include "storage/gguf_file.hpp"
#include "storage/gguf_types.hpp"
#include "storage/gguf_writer.hpp"

#include "model/tensor.hpp"
#include "tests/storage/temp_dir.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cctype>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <limits>
#include <random>
#include <string_view>

namespace lockstep::storage::gguf {
namespace {

using test::temp_dir;

// -- Building inputs ----------------------------------------------------------

/// Appends little-endian fields, for files the writer refuses to make (it
/// REQUIRES valid shapes and keeps keys unique).
class byte_appender {
public:
  byte_appender& u8(uint8_t v) {
    bytes_.push_back(static_cast<std::byte>(v));
    return *this;
  }
  byte_appender& u16(uint16_t v) { return le(v, 2); }
  byte_appender& u32(uint32_t v) { return le(v, 4); }
  byte_appender& u64(uint64_t v) { return le(v, 8); }
  byte_appender& raw(std::string_view s) {
    for (char c : s)
      u8(static_cast<uint8_t>(c));
    return *this;
  }
  byte_appender& raw(std::span<const std::byte> b) {
    bytes_.insert(bytes_.end(), b.begin(), b.end());
    return *this;
  }
  byte_appender& str(std::string_view s) {
    u64(s.size());
    return raw(s);
  }
  byte_appender& pad_to(uint64_t alignment) {
    while (bytes_.size() % alignment != 0)
      u8(0);
    return *this;
  }
  std::vector<std::byte> take() { return std::move(bytes_); }

private:
  byte_appender& le(uint64_t v, int n) {
    for (int i = 0; i < n; ++i)
      u8(static_cast<uint8_t>(v >> (8 * i)));
    return *this;
  }
  std::vector<std::byte> bytes_;
};

constexpr uint32_t type_u32 = 4;
constexpr uint32_t type_string = 8;
constexpr uint32_t type_array = 9;
constexpr uint32_t type_f32_tensor = 0;
constexpr uint32_t type_q8_0_tensor = 8;

std::vector<std::byte> kv_u32(std::string_view key, uint32_t v) {
  return byte_appender{}.str(key).u32(type_u32).u32(v).take();
}

struct raw_tensor {
  std::string name;
  std::vector<uint64_t> ne;
  uint32_t type = type_f32_tensor;
  uint64_t offset = 0;
};

/// A GGUF v3 file written field by field: `kvs` are whole metadata entries;
/// after padding to 32 comes a data section of `data_bytes` bytes.
std::vector<std::byte> hand_file(const std::vector<std::vector<std::byte>>& kvs,
                                 const std::vector<raw_tensor>& tensors,
                                 uint64_t data_bytes) {
  byte_appender b;
  b.raw("GGUF").u32(3).u64(tensors.size()).u64(kvs.size());
  for (const auto& kv : kvs)
    b.raw(kv);
  for (const auto& t : tensors) {
    b.str(t.name).u32(static_cast<uint32_t>(t.ne.size()));
    for (auto n : t.ne)
      b.u64(n);
    b.u32(t.type).u64(t.offset);
  }
  b.pad_to(32);
  for (uint64_t i = 0; i < data_bytes; ++i)
    b.u8(static_cast<uint8_t>(i * 37 + 11));
  return b.take();
}

/// Reproducible bytes that differ per seed, so a tensor read from the wrong
/// place cannot pass for the right one.
std::vector<std::byte> pattern(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::byte> out(n);
  for (auto& b : out)
    b = static_cast<std::byte>(rng() & 0xFF);
  return out;
}

void write_bytes(const std::filesystem::path& path,
                 std::span<const std::byte> bytes) {
  // A new file, not a truncated one: ext4 flushes a file truncated and
  // rewritten when it is closed, which made the loops below I/O bound.
  std::filesystem::remove(path);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  out.close();
  ASSERT_TRUE(out.good()) << path;
}

std::vector<std::byte> read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> chars{std::istreambuf_iterator<char>(in),
                          std::istreambuf_iterator<char>()};
  std::vector<std::byte> out(chars.size());
  std::memcpy(out.data(), chars.data(), chars.size());
  return out;
}

void put_u32(std::vector<std::byte>& b, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i)
    b.at(at + i) = static_cast<std::byte>(v >> (8 * i));
}

void put_u64(std::vector<std::byte>& b, size_t at, uint64_t v) {
  for (int i = 0; i < 8; ++i)
    b.at(at + i) = static_cast<std::byte>(v >> (8 * i));
}

caf::error open_error(const std::filesystem::path& path,
                      const read_limits& limits = {}) {
  auto f = gguf_file::open(path, limits);
  return f ? caf::error{} : f.error();
}

std::string lowercase(std::string s) {
  for (auto& c : s)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

void erase_all(std::string& s, const std::string& what) {
  for (auto at = s.find(what); at != std::string::npos; at = s.find(what))
    s.erase(at, what.size());
}

/// Writes `bytes` to a file, opens it and expects invalid_file whose
/// message names the file and every one of `names` (keys, tensors) and,
/// unless `hints` is empty, at least one of `hints` (case-insensitive;
/// matched after taking the path out, so the path cannot supply a hint).
void expect_invalid(std::span<const std::byte> bytes,
                    const std::vector<std::string>& names,
                    const std::vector<std::string>& hints = {},
                    const read_limits& limits = {}) {
  temp_dir tmp;
  auto path = tmp / "input.model";
  write_bytes(path, bytes);
  auto err = open_error(path, limits);
  ASSERT_TRUE(err) << "opened a file that should be invalid";
  auto msg = render(err);
  EXPECT_EQ(err.category(), caf::atom("storage")) << msg;
  EXPECT_EQ(err.code(), static_cast<uint8_t>(errc::invalid_file)) << msg;
  EXPECT_NE(msg.find("input.model"), std::string::npos)
    << "does not name the file: " << msg;
  for (const auto& name : names)
    EXPECT_NE(msg.find(name), std::string::npos)
      << "does not name " << name << ": " << msg;
  if (hints.empty())
    return;
  auto rest = msg;
  erase_all(rest, path.string());
  erase_all(rest, "input.model");
  rest = lowercase(rest);
  bool hinted = std::any_of(hints.begin(), hints.end(), [&](const auto& h) {
    return rest.find(lowercase(h)) != std::string::npos;
  });
  EXPECT_TRUE(hinted) << "does not say what is wrong: " << msg;
}

const std::vector<std::string> duplicate_hints = {
  "duplicate", "twice", "repeat", "again", "more than once", "already"};

// -- Metadata values ----------------------------------------------------------

value scalar_u(value_type t, uint64_t u) {
  value v;
  v.type = t;
  v.u = u;
  return v;
}

value scalar_i(value_type t, int64_t i) {
  value v;
  v.type = t;
  v.i = i;
  return v;
}

value scalar_f(value_type t, double f) {
  value v;
  v.type = t;
  v.f = f;
  return v;
}

value string_value(std::string s) {
  value v;
  v.type = value_type::string;
  v.s = std::move(s);
  return v;
}

value array_of(value_type element, std::vector<value> items) {
  value v;
  v.type = value_type::array;
  v.element = element;
  v.items = std::move(items);
  return v;
}

/// Compares what the file held: the type, and the member of its kind (the
/// others carry nothing).
void expect_same(const value& got, const value& want, const std::string& at) {
  ASSERT_EQ(static_cast<uint32_t>(got.type), static_cast<uint32_t>(want.type))
    << at;
  switch (want.type) {
    case value_type::u8:
    case value_type::u16:
    case value_type::u32:
    case value_type::u64:
    case value_type::boolean:
      EXPECT_EQ(got.u, want.u) << at;
      break;
    case value_type::i8:
    case value_type::i16:
    case value_type::i32:
    case value_type::i64:
      EXPECT_EQ(got.i, want.i) << at;
      break;
    case value_type::f32:
    case value_type::f64:
      EXPECT_EQ(got.f, want.f) << at;
      break;
    case value_type::string:
      EXPECT_EQ(got.s, want.s) << at;
      break;
    case value_type::array:
      EXPECT_EQ(static_cast<uint32_t>(got.element),
                static_cast<uint32_t>(want.element))
        << at;
      ASSERT_EQ(got.items.size(), want.items.size()) << at;
      for (size_t i = 0; i < want.items.size(); ++i)
        expect_same(got.items[i], want.items[i],
                    at + "[" + std::to_string(i) + "]");
      break;
  }
}

// -- Round trip -----------------------------------------------------------------

struct tensor_case {
  std::string name;
  std::vector<uint64_t> ne;
  ggml_type type;
  uint64_t bytes; // worked out by hand from the block sizes
};

// Sizes that are not multiples of 32 (136, 72, 96) make the writer pad
// between tensors; 1 to 4 dimensions.
const std::vector<tensor_case>& round_trip_tensors() {
  static const std::vector<tensor_case> cases = {
    {"token_embd.weight", {64, 3}, ggml_type::f32, 64 * 3 * 4},
    {"blk.0.attn_q.weight", {8, 2, 2, 2}, ggml_type::f16, 64 * 2},
    {"blk.0.attn_k.weight", {16, 3}, ggml_type::bf16, 48 * 2},
    {"blk.0.ffn_up.weight", {64, 2}, ggml_type::q8_0, 2 * 2 * 34},
    {"blk.0.ffn_down.weight", {32, 2, 2}, ggml_type::q4_0, 4 * 18},
    {"blk.0.ffn_gate.weight", {256, 2}, ggml_type::q4_k, 2 * 144},
    {"output.weight", {256, 1, 2}, ggml_type::q6_k, 2 * 210},
    {"output_norm.weight", {7}, ggml_type::f32, 7 * 4},
  };
  return cases;
}

TEST(gguf_writer, tensor_bytes_counts_whole_blocks) {
  for (const auto& c : round_trip_tensors())
    EXPECT_EQ(tensor_bytes(c.ne, c.type), c.bytes) << c.name;
  // Known but unsupported types have sizes too (Q5_K: 176 bytes a block).
  EXPECT_EQ(tensor_bytes({512, 3}, ggml_type::q5_k), 2u * 176 * 3);
}

TEST(gguf_file, round_trip_of_metadata_and_tensors) {
  temp_dir tmp;
  gguf_writer w;
  // Keys set through set(), with what the reader must give back.
  std::vector<std::pair<std::string, value>> expected = {
    {"t.u8", scalar_u(value_type::u8, 255)},
    {"t.i8", scalar_i(value_type::i8, -128)},
    {"t.u16", scalar_u(value_type::u16, 65535)},
    {"t.i16", scalar_i(value_type::i16, -32768)},
    {"t.i32", scalar_i(value_type::i32, std::numeric_limits<int32_t>::min())},
    {"t.u64", scalar_u(value_type::u64, std::numeric_limits<uint64_t>::max())},
    {"t.i64", scalar_i(value_type::i64, std::numeric_limits<int64_t>::min())},
    {"t.f64", scalar_f(value_type::f64, 0.1)},
    {"t.true", scalar_u(value_type::boolean, 1)},
    {"t.false", scalar_u(value_type::boolean, 0)},
    {"t.i32s", array_of(value_type::i32,
                        {scalar_i(value_type::i32, -1),
                         scalar_i(value_type::i32, 0),
                         scalar_i(value_type::i32,
                                  std::numeric_limits<int32_t>::max())})},
    // Inner arrays carry their own element type in the file.
    {"t.nested",
     array_of(value_type::array,
              {array_of(value_type::u16, {scalar_u(value_type::u16, 1),
                                          scalar_u(value_type::u16, 65535)}),
               array_of(value_type::string, {string_value("x")}),
               array_of(value_type::i32, {})})},
  };
  for (const auto& [key, v] : expected)
    w.set(key, v);
  // Replaced before writing: only the later value is in the file.
  w.set_u32("t.replaced", 1);
  w.set_string("t.replaced", "second");
  expected.emplace_back("t.replaced", string_value("second"));
  w.set_u32("general.quantization_version", 2);
  expected.emplace_back("general.quantization_version",
                        scalar_u(value_type::u32, 2));
  // 0.1f is not 0.1: the reader widens the float, it does not round again.
  w.set_f32("llama.rope.freq_base", 0.1f);
  expected.emplace_back("llama.rope.freq_base",
                        scalar_f(value_type::f32, static_cast<double>(0.1f)));
  w.set_string("general.name", "tiny \xc3\xbcnicode");
  expected.emplace_back("general.name", string_value("tiny \xc3\xbcnicode"));
  w.set_string("general.description", "");
  expected.emplace_back("general.description", string_value(""));
  // Strings are counted, not terminated: an embedded NUL survives.
  std::vector<std::string> tokens = {"<s>", "", std::string("a\0b", 3),
                                     "\xe2\x96\x81the"};
  w.set_strings("tokenizer.ggml.tokens", tokens);
  std::vector<value> token_values;
  for (const auto& s : tokens)
    token_values.push_back(string_value(s));
  expected.emplace_back("tokenizer.ggml.tokens",
                        array_of(value_type::string, token_values));
  w.set_strings("tokenizer.empty", {});
  expected.emplace_back("tokenizer.empty", array_of(value_type::string, {}));

  const auto& cases = round_trip_tensors();
  std::vector<std::vector<std::byte>> data;
  for (size_t i = 0; i < cases.size(); ++i) {
    data.push_back(pattern(cases[i].bytes, static_cast<uint32_t>(i + 1)));
    w.add_tensor(cases[i].name, cases[i].ne, cases[i].type, data.back());
  }
  auto path = tmp / "model.gguf";
  auto err = w.write(path);
  ASSERT_FALSE(err) << render(err);
  EXPECT_EQ(read_bytes(path), w.bytes());

  auto f = gguf_file::open(path);
  ASSERT_TRUE(f) << render(f.error());
  EXPECT_EQ(f->path(), path);
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->alignment(), 32u);
  EXPECT_EQ(f->file_bytes(), std::filesystem::file_size(path));
  EXPECT_EQ(f->data_offset() % 32, 0u);
  EXPECT_LE(f->data_offset(), f->file_bytes());

  // The default alignment is not written, so these are all the keys.
  EXPECT_EQ(f->metadata().size(), expected.size());
  for (const auto& [key, want] : expected) {
    const value* got = f->find(key);
    ASSERT_NE(got, nullptr) << key;
    expect_same(*got, want, key);
    auto it = f->metadata().find(key);
    ASSERT_NE(it, f->metadata().end()) << key;
    EXPECT_EQ(&it->second, got) << key;
  }
  EXPECT_EQ(f->find("general.alignment"), nullptr);
  EXPECT_EQ(f->find("absent"), nullptr);

  ASSERT_EQ(f->tensors().size(), cases.size());
  uint64_t previous_end = 0;
  const uint64_t data_bytes = f->file_bytes() - f->data_offset();
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& t = f->tensors()[i];
    const auto& c = cases[i];
    SCOPED_TRACE(c.name);
    EXPECT_EQ(t.name, c.name);
    EXPECT_EQ(t.ne, c.ne);
    EXPECT_EQ(static_cast<uint32_t>(t.type), static_cast<uint32_t>(c.type));
    EXPECT_EQ(t.bytes, c.bytes);
    EXPECT_EQ(t.bytes, tensor_bytes(c.ne, c.type));
    uint64_t elements = 1;
    for (auto n : c.ne)
      elements *= n;
    EXPECT_EQ(t.elements(), elements);
    EXPECT_EQ(t.offset % f->alignment(), 0u);
    // In the order added, none overlapping, all inside the file.
    EXPECT_GE(t.offset, previous_end);
    previous_end = t.offset + t.bytes;
    EXPECT_LE(previous_end, data_bytes);
    EXPECT_EQ(f->tensor(c.name), &t);
    std::vector<std::byte> got(t.bytes);
    auto read_err = f->read(t, got);
    ASSERT_FALSE(read_err) << render(read_err);
    EXPECT_EQ(got, data[i]);
  }
  EXPECT_EQ(f->tensor("absent"), nullptr);
}

TEST(gguf_file, other_alignments_are_written_and_honoured) {
  for (uint64_t alignment : {8u, 64u, 256u}) {
    SCOPED_TRACE("alignment " + std::to_string(alignment));
    temp_dir tmp;
    gguf_writer w(alignment);
    w.set_string("general.name", "aligned");
    // 12, 34 and 10 bytes: each next tensor needs padding.
    std::vector<tensor_case> cases = {
      {"a", {3}, ggml_type::f32, 12},
      {"b", {32}, ggml_type::q8_0, 34},
      {"c", {5}, ggml_type::f16, 10},
    };
    std::vector<std::vector<std::byte>> data;
    for (size_t i = 0; i < cases.size(); ++i) {
      data.push_back(pattern(cases[i].bytes, static_cast<uint32_t>(i + 10)));
      w.add_tensor(cases[i].name, cases[i].ne, cases[i].type, data.back());
    }
    auto path = tmp / "aligned.gguf";
    auto err = w.write(path);
    ASSERT_FALSE(err) << render(err);
    auto f = gguf_file::open(path);
    ASSERT_TRUE(f) << render(f.error());
    EXPECT_EQ(f->alignment(), alignment);
    EXPECT_EQ(f->data_offset() % alignment, 0u);
    const value* a = f->find("general.alignment");
    ASSERT_NE(a, nullptr);
    // GGUF's general.alignment is a uint32.
    expect_same(*a, scalar_u(value_type::u32, alignment), "general.alignment");
    EXPECT_EQ(f->metadata().size(), 2u);
    ASSERT_EQ(f->tensors().size(), cases.size());
    uint64_t previous_end = 0;
    for (size_t i = 0; i < cases.size(); ++i) {
      const auto& t = f->tensors()[i];
      EXPECT_EQ(t.name, cases[i].name);
      EXPECT_EQ(t.offset % alignment, 0u) << t.name;
      EXPECT_GE(t.offset, previous_end) << t.name;
      previous_end = t.offset + t.bytes;
      std::vector<std::byte> got(t.bytes);
      auto read_err = f->read(t, got);
      ASSERT_FALSE(read_err) << render(read_err);
      EXPECT_EQ(got, data[i]) << t.name;
    }
  }
}

TEST(gguf_writer, writes_atomically_and_reports_a_bad_path) {
  temp_dir tmp;
  gguf_writer w;
  w.set_u32("k", 1);
  w.add_tensor("w", {8}, ggml_type::f32, pattern(32, 1));
  ASSERT_FALSE(w.write(tmp / "out.gguf"));
  // The temporary name is gone once the file is complete.
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(tmp.path()))
    names.push_back(e.path().filename().string());
  EXPECT_EQ(names, std::vector<std::string>{"out.gguf"});

  auto bad = tmp / "no_such_dir" / "out.gguf";
  auto err = w.write(bad);
  ASSERT_TRUE(err);
  EXPECT_EQ(err.code(), static_cast<uint8_t>(errc::io_error)) << render(err);
  EXPECT_NE(render(err).find("no_such_dir"), std::string::npos) << render(err);
}

TEST(gguf_file, file_without_tensors_opens) {
  temp_dir tmp;
  gguf_writer w;
  w.set_string("general.name", "empty");
  auto path = tmp / "empty.gguf";
  ASSERT_FALSE(w.write(path));
  auto f = gguf_file::open(path);
  ASSERT_TRUE(f) << render(f.error());
  EXPECT_TRUE(f->tensors().empty());
  EXPECT_EQ(f->metadata().size(), 1u);
}

TEST(gguf_file, version_2_is_read) {
  temp_dir tmp;
  gguf_writer w;
  w.set_u32("k", 7);
  w.add_tensor("blk.0.w", {8}, ggml_type::f32, pattern(32, 3));
  auto bytes = w.bytes();
  put_u32(bytes, 4, 2); // v2 lays files out as v3 (v3 only adds big-endian)
  auto path = tmp / "v2.gguf";
  write_bytes(path, bytes);
  auto f = gguf_file::open(path);
  ASSERT_TRUE(f) << render(f.error());
  EXPECT_EQ(f->version(), 2u);
  ASSERT_EQ(f->tensors().size(), 1u);
  EXPECT_EQ(f->tensors()[0].name, "blk.0.w");
}

TEST(gguf_file, value_kinds) {
  for (auto t : {value_type::u8, value_type::u16, value_type::u32,
                 value_type::u64}) {
    value v = scalar_u(t, 1);
    EXPECT_TRUE(v.is_unsigned()) << to_string(t);
    EXPECT_FALSE(v.is_signed()) << to_string(t);
    EXPECT_FALSE(v.is_float()) << to_string(t);
  }
  for (auto t : {value_type::i8, value_type::i16, value_type::i32,
                 value_type::i64}) {
    value v = scalar_i(t, -1);
    EXPECT_FALSE(v.is_unsigned()) << to_string(t);
    EXPECT_TRUE(v.is_signed()) << to_string(t);
    EXPECT_FALSE(v.is_float()) << to_string(t);
  }
  for (auto t : {value_type::f32, value_type::f64}) {
    value v = scalar_f(t, 1);
    EXPECT_FALSE(v.is_unsigned()) << to_string(t);
    EXPECT_FALSE(v.is_signed()) << to_string(t);
    EXPECT_TRUE(v.is_float()) << to_string(t);
  }
  value s = string_value("x");
  EXPECT_FALSE(s.is_unsigned() || s.is_signed() || s.is_float());
}

// -- Dequantization -------------------------------------------------------------
//
// The expectations are ggml's dequantize_row_q8_0, _q4_0, _q4_K and _q6_K
// (ggml/src/ggml-quants.c in llama.cpp) worked out by hand for the blocks
// below; the arithmetic is in the comments. Every product is exact in f32,
// so the comparisons are exact.

std::vector<float> dequantize(ggml_type type, const std::vector<std::byte>& in,
                              size_t elements) {
  std::vector<float> out(elements, std::nanf(""));
  to_f32(type, in, out);
  return out;
}

void expect_floats(const std::vector<float>& got,
                   const std::vector<float>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_EQ(got[i], want[i]) << "element " << i;
}

TEST(gguf_types, q8_0_is_qs_times_d) {
  // Block 0: d = 0.5 (f16 0x3800); block 1: d = 2.0 (f16 0x4000).
  byte_appender b;
  std::vector<int8_t> qs0(32, 0), qs1(32, 0);
  qs0[0] = -3;
  qs0[2] = 1;
  qs0[5] = -128;
  qs0[31] = 127;
  qs1[0] = 5;
  qs1[31] = -1;
  b.u16(0x3800);
  for (auto q : qs0)
    b.u8(static_cast<uint8_t>(q));
  b.u16(0x4000);
  for (auto q : qs1)
    b.u8(static_cast<uint8_t>(q));
  auto in = b.take();
  ASSERT_EQ(in.size(), 2u * 34);
  std::vector<float> want(64, 0.0f);
  want[0] = -1.5f;  // -3 * 0.5
  want[2] = 0.5f;   // 1 * 0.5
  want[5] = -64.0f; // -128 * 0.5
  want[31] = 63.5f; // 127 * 0.5
  want[32] = 10.0f; // 5 * 2
  want[63] = -2.0f; // -1 * 2
  expect_floats(dequantize(ggml_type::q8_0, in, 64), want);
}

TEST(gguf_types, q4_0_is_nibble_minus_8_times_d) {
  // Block 0: d = 0.5; nibbles 8 (qs 0x88) are 0.
  // Block 1: d = -1.0 (f16 0xBC00).
  byte_appender b;
  std::vector<uint8_t> qs0(16, 0x88), qs1(16, 0x88);
  qs0[0] = 0x9A;
  qs0[1] = 0x3C;
  qs0[15] = 0x0F;
  qs1[7] = 0x71;
  b.u16(0x3800);
  for (auto q : qs0)
    b.u8(q);
  b.u16(0xBC00);
  for (auto q : qs1)
    b.u8(q);
  auto in = b.take();
  ASSERT_EQ(in.size(), 2u * 18);
  std::vector<float> want(64, 0.0f);
  want[0] = 1.0f;        // low nibble of 0x9A: (10 - 8) * 0.5
  want[16] = 0.5f;       // high nibble of 0x9A: (9 - 8) * 0.5
  want[1] = 2.0f;        // 0x3C low: (12 - 8) * 0.5
  want[17] = -2.5f;      // 0x3C high: (3 - 8) * 0.5
  want[15] = 3.5f;       // 0x0F low: (15 - 8) * 0.5
  want[31] = -4.0f;      // 0x0F high: (0 - 8) * 0.5
  want[32 + 7] = 7.0f;   // 0x71 low: (1 - 8) * -1
  want[32 + 23] = 1.0f;  // 0x71 high: (7 - 8) * -1
  expect_floats(dequantize(ggml_type::q4_0, in, 64), want);
}

// One Q4_K super-block: d, dmin, scales[12], qs[128]. The scales bytes give
// (get_scale_min_k4):
//   j<4:  sc = q[j] & 63, m = q[j+4] & 63
//   j>=4: sc = (q[j+4] & 0xF) | ((q[j-4] >> 6) << 4),
//         m  = (q[j+4] >> 4)  | ((q[j]   >> 6) << 4)
// q = {0x02, 0xC3, 0x01, 0x41, 0x01, 0x84, 0x00, 0x02, 0x53, 0x21, 0x00, 0xF7}
//   sub 0: sc = 0x02 & 63 = 2,  m = 0x01 & 63 = 1
//   sub 1: sc = 0xC3 & 63 = 3,  m = 0x84 & 63 = 4
//   sub 2: sc = 0x01 & 63 = 1,  m = 0x00 & 63 = 0
//   sub 3: sc = 0x41 & 63 = 1,  m = 0x02 & 63 = 2
//   sub 4: sc = 3 | (0 << 4) = 3,   m = 5 | (0 << 4) = 5        (q[8] = 0x53)
//   sub 5: sc = 1 | (3 << 4) = 49,  m = 2 | (2 << 4) = 34       (q[9] = 0x21,
//          q[1] >> 6 = 3, q[5] >> 6 = 2)
//   sub 6: sc = 0, m = 0
//   sub 7: sc = 7 | (1 << 4) = 23,  m = 15 | (0 << 4) = 15      (q[11] = 0xF7,
//          q[3] >> 6 = 1, q[7] >> 6 = 0)
// Elements 64c + l take the low nibble of qs[32c + l] (sub 2c); elements
// 64c + 32 + l its high nibble (sub 2c + 1); y = d*sc*q - dmin*m.
std::vector<std::byte> q4_k_block(uint16_t d, uint16_t dmin) {
  byte_appender b;
  b.u16(d).u16(dmin);
  for (uint8_t q : {0x02, 0xC3, 0x01, 0x41, 0x01, 0x84, 0x00, 0x02, 0x53, 0x21,
                    0x00, 0xF7})
    b.u8(q);
  std::vector<uint8_t> qs(128, 0);
  qs[0] = 0x57;
  qs[31] = 0xF0;
  qs[32] = 0x3F;
  qs[64] = 0xA1;
  qs[70] = 0x0F;
  qs[96] = 0x20;
  qs[127] = 0xC9;
  for (auto q : qs)
    b.u8(q);
  return b.take();
}

TEST(gguf_types, q4_k_follows_ggml) {
  // Block 0: d = 1.0 (0x3C00), dmin = 0.5 (0x3800).
  // Block 1: d = 2.0 (0x4000), dmin = 1.0 (0x3C00).
  auto in = q4_k_block(0x3C00, 0x3800);
  auto second = q4_k_block(0x4000, 0x3C00);
  in.insert(in.end(), second.begin(), second.end());
  ASSERT_EQ(in.size(), 2u * 144);
  // Where qs is 0, y = -dmin * m of the sub-block: 0.5 * {1, 4, 0, 2, 5,
  // 34, 0, 15}.
  const float zero_q[8] = {-0.5f, -2.0f, 0.0f, -1.0f,
                           -2.5f, -17.0f, 0.0f, -7.5f};
  std::vector<float> want(512);
  for (size_t e = 0; e < 256; ++e)
    want[e] = zero_q[e / 32];
  want[0] = 13.5f;   // qs[0] = 0x57 low 7:   1*2*7 - 0.5*1
  want[32] = 13.0f;  // qs[0] high 5:         1*3*5 - 0.5*4
  want[31] = -0.5f;  // qs[31] = 0xF0 low 0:  1*2*0 - 0.5*1
  want[63] = 43.0f;  // qs[31] high 15:       1*3*15 - 0.5*4
  want[64] = 15.0f;  // qs[32] = 0x3F low 15: 1*1*15 - 0.5*0
  want[96] = 2.0f;   // qs[32] high 3:        1*1*3 - 0.5*2
  want[128] = 0.5f;  // qs[64] = 0xA1 low 1:  1*3*1 - 0.5*5
  want[160] = 473.0f; // qs[64] high 10:      1*49*10 - 0.5*34
  want[134] = 42.5f; // qs[70] = 0x0F low 15: 1*3*15 - 0.5*5
  want[166] = -17.0f; // qs[70] high 0:       1*49*0 - 0.5*34
  want[192] = 0.0f;  // qs[96] = 0x20 low 0:  1*0*0 - 0.5*0
  want[224] = 38.5f; // qs[96] high 2:        1*23*2 - 0.5*15
  want[223] = 0.0f;  // qs[127] = 0xC9 low 9: 1*0*9 - 0.5*0
  want[255] = 268.5f; // qs[127] high 12:     1*23*12 - 0.5*15
  auto got = dequantize(ggml_type::q4_k, in, 512);
  for (size_t e = 0; e < 256; ++e)
    EXPECT_EQ(got[e], want[e]) << "element " << e;
  // The second block uses its own d and dmin.
  EXPECT_EQ(got[256 + 0], 27.0f);    // 2*2*7 - 1*1
  EXPECT_EQ(got[256 + 1], -1.0f);    // 2*2*0 - 1*1
  EXPECT_EQ(got[256 + 160], 946.0f); // 2*49*10 - 1*34
  EXPECT_EQ(got[256 + 255], 537.0f); // 2*23*12 - 1*15
}

TEST(gguf_types, q6_k_follows_ggml) {
  // One super-block: ql[128], qh[64], int8 scales[16], d = 0.5 (0x3800).
  // Half n (elements 128n..) uses ql + 64n, qh + 32n, scales + 8n; for l <
  // 32, is = l / 16:
  //   q1 = (ql[l] & 0xF | (qh[l] & 3) << 4) - 32          -> y[l]      sc[is]
  //   q2 = (ql[l+32] & 0xF | (qh[l] >> 2 & 3) << 4) - 32  -> y[l + 32] sc[is+2]
  //   q3 = (ql[l] >> 4 | (qh[l] >> 4 & 3) << 4) - 32      -> y[l + 64] sc[is+4]
  //   q4 = (ql[l+32] >> 4 | (qh[l] >> 6 & 3) << 4) - 32   -> y[l + 96] sc[is+6]
  std::vector<uint8_t> ql(128, 0), qh(64, 0);
  ql[0] = 0x5A;
  ql[32] = 0x3F;
  ql[64] = 0x21;
  ql[127] = 0xF0;
  qh[0] = 0x9C; // 0b10'01'11'00: 2-bit fields 0, 3, 1, 2
  qh[32] = 0x03;
  qh[63] = 0xC0;
  const int8_t sc[16] = {2, -3, 4, 6, 1, 0, -1, 0, 3, -1, 5, 1, -2, 0, 0, 7};
  byte_appender b;
  for (auto q : ql)
    b.u8(q);
  for (auto q : qh)
    b.u8(q);
  for (auto s : sc)
    b.u8(static_cast<uint8_t>(s));
  b.u16(0x3800);
  auto in = b.take();
  ASSERT_EQ(in.size(), 210u);
  // Where ql and qh are 0, q = -32 and y = 0.5 * sc * -32 = -16 * sc; the
  // g-th 16 elements use sc[g] (q1 is=0, q1 is=1, q2 is=0, ... half 1).
  const float zero_q[16] = {-32.0f, 48.0f,  -64.0f, -96.0f, -16.0f, 0.0f,
                            16.0f,  0.0f,   -48.0f, 16.0f,  -80.0f, -16.0f,
                            32.0f,  0.0f,   0.0f,   -112.0f};
  std::vector<float> want(256);
  for (size_t e = 0; e < 256; ++e)
    want[e] = zero_q[e / 16];
  want[0] = -22.0f;   // q1 = (0xA | 0 << 4) - 32 = -22;  0.5 * 2 * -22
  want[32] = 62.0f;   // q2 = (0xF | 3 << 4) - 32 = 31;   0.5 * 4 * 31
  want[64] = -5.5f;   // q3 = (0x5 | 1 << 4) - 32 = -11;  0.5 * 1 * -11
  want[96] = -1.5f;   // q4 = (0x3 | 2 << 4) - 32 = 3;    0.5 * -1 * 3
  // Second half: ql[64] = 0x21, qh[32] = 0x03, scales from sc[8].
  want[128] = 25.5f;  // q1 = (0x1 | 3 << 4) - 32 = 17;   0.5 * 3 * 17
  want[192] = 30.0f;  // q3 = (0x2 | 0 << 4) - 32 = -30;  0.5 * -2 * -30
  // l = 31: ql[64+63] = 0xF0, qh[32+31] = 0xC0 (top field 3), is = 1.
  want[255] = 108.5f; // q4 = (0xF | 3 << 4) - 32 = 31;   0.5 * 7 * 31
  expect_floats(dequantize(ggml_type::q6_k, in, 256), want);
}

struct f16_case {
  uint16_t bits;
  float value;
};

// Compares bits, so -0 is not 0; any NaN stands for NaN.
void expect_same_float(float got, float want, uint32_t input_bits) {
  if (std::isnan(want)) {
    EXPECT_TRUE(std::isnan(got)) << std::hex << input_bits;
    return;
  }
  EXPECT_EQ(std::bit_cast<uint32_t>(got), std::bit_cast<uint32_t>(want))
    << std::hex << "input " << input_bits << ": got " << got << " want "
    << want;
}

TEST(gguf_types, f16_widens_exactly) {
  const std::vector<f16_case> cases = {
    {0x0000, 0.0f},
    {0x8000, -0.0f},
    {0x3C00, 1.0f},
    {0xC100, -2.5f},
    {0x3555, 0.333251953125f},           // 0x155 / 1024 + 1, / 4
    {0x7BFF, 65504.0f},                  // largest finite
    {0x0400, 6.103515625e-05f},          // 2^-14, smallest normal
    {0x0001, 5.9604644775390625e-08f},   // 2^-24, smallest subnormal
    {0x03FF, 6.0975551605224609375e-05f}, // 1023 * 2^-24
    {0x7C00, std::numeric_limits<float>::infinity()},
    {0xFC00, -std::numeric_limits<float>::infinity()},
    {0x7E00, std::numeric_limits<float>::quiet_NaN()},
  };
  byte_appender b;
  for (const auto& c : cases)
    b.u16(c.bits);
  auto got = dequantize(ggml_type::f16, b.take(), cases.size());
  for (size_t i = 0; i < cases.size(); ++i)
    expect_same_float(got[i], cases[i].value, cases[i].bits);

  // Inputs made by the model's converter widen to what it widens them to,
  // for every bit pattern.
  byte_appender all;
  for (uint32_t h = 0; h < 65536; ++h)
    all.u16(static_cast<uint16_t>(h));
  auto wide = dequantize(ggml_type::f16, all.take(), 65536);
  for (uint32_t h = 0; h < 65536; ++h) {
    float want = model::f16_bits_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(want) ? !std::isnan(wide[h])
                         : std::bit_cast<uint32_t>(wide[h]) !=
                             std::bit_cast<uint32_t>(want)) {
      ADD_FAILURE() << std::hex << "f16 0x" << h;
      break;
    }
  }
  byte_appender some;
  const float values[] = {0.1f, -3.0f, 1e-6f, 70000.0f, 1.0f / 3.0f};
  for (float v : values)
    some.u16(model::f32_to_f16_bits(v));
  auto made = dequantize(ggml_type::f16, some.take(), std::size(values));
  for (size_t i = 0; i < std::size(values); ++i) {
    auto bits = model::f32_to_f16_bits(values[i]);
    expect_same_float(made[i], model::f16_bits_to_f32(bits), bits);
  }
}

TEST(gguf_types, bf16_widens_exactly) {
  const std::vector<f16_case> cases = {
    {0x0000, 0.0f},
    {0x8000, -0.0f},
    {0x3F80, 1.0f},
    {0xC020, -2.5f},
    {0x7F80, std::numeric_limits<float>::infinity()},
    {0x7FC0, std::numeric_limits<float>::quiet_NaN()},
  };
  byte_appender b;
  for (const auto& c : cases)
    b.u16(c.bits);
  auto got = dequantize(ggml_type::bf16, b.take(), cases.size());
  for (size_t i = 0; i < cases.size(); ++i)
    expect_same_float(got[i], cases[i].value, cases[i].bits);

  // bf16 is the top half of an f32: widening appends 16 zero bits.
  byte_appender all;
  for (uint32_t h = 0; h < 65536; ++h)
    all.u16(static_cast<uint16_t>(h));
  auto wide = dequantize(ggml_type::bf16, all.take(), 65536);
  for (uint32_t h = 0; h < 65536; ++h) {
    float want = std::bit_cast<float>(h << 16);
    if (std::isnan(want) ? !std::isnan(wide[h])
                         : std::bit_cast<uint32_t>(wide[h]) != (h << 16)) {
      ADD_FAILURE() << std::hex << "bf16 0x" << h;
      break;
    }
  }
  byte_appender some;
  const float values[] = {0.1f, -3.0f, 1e-30f, 3e38f, 1.0f / 3.0f};
  for (float v : values)
    some.u16(model::f32_to_bf16_bits(v));
  auto made = dequantize(ggml_type::bf16, some.take(), std::size(values));
  for (size_t i = 0; i < std::size(values); ++i) {
    auto bits = model::f32_to_bf16_bits(values[i]);
    expect_same_float(made[i], model::bf16_bits_to_f32(bits), bits);
  }
}

TEST(gguf_types, f32_is_copied) {
  const float values[] = {1.5f, -0.0f, std::numeric_limits<float>::denorm_min(),
                          -std::numeric_limits<float>::max()};
  std::vector<std::byte> in(sizeof values);
  std::memcpy(in.data(), values, sizeof values);
  auto got = dequantize(ggml_type::f32, in, std::size(values));
  for (size_t i = 0; i < std::size(values); ++i)
    expect_same_float(got[i], values[i], std::bit_cast<uint32_t>(values[i]));
}

TEST(gguf_types, traits_of_known_and_unknown_ids) {
  struct row {
    uint32_t id;
    std::string_view name;
    uint32_t block_elems;
    uint32_t block_bytes;
    bool supported;
  };
  // Block sizes are ggml's block_* structs (ggml-common.h).
  const row rows[] = {
    {0, "F32", 1, 4, true},       {1, "F16", 1, 2, true},
    {30, "BF16", 1, 2, true},     {2, "Q4_0", 32, 18, true},
    {8, "Q8_0", 32, 34, true},    {12, "Q4_K", 256, 144, true},
    {14, "Q6_K", 256, 210, true}, {3, "Q4_1", 32, 20, false},
    {6, "Q5_0", 32, 22, false},   {7, "Q5_1", 32, 24, false},
    {9, "Q8_1", 32, 36, false},   {10, "Q2_K", 256, 84, false},
    {11, "Q3_K", 256, 110, false}, {13, "Q5_K", 256, 176, false},
    {15, "Q8_K", 256, 292, false},
  };
  for (const auto& r : rows) {
    SCOPED_TRACE("id " + std::to_string(r.id));
    auto t = traits_of(r.id);
    ASSERT_TRUE(t);
    EXPECT_EQ(t->name, r.name);
    EXPECT_EQ(t->block_elems, r.block_elems);
    EXPECT_EQ(t->block_bytes, r.block_bytes);
    EXPECT_EQ(t->supported, r.supported);
  }
  // 4 and 5 were Q4_2 and Q4_3, removed from ggml.
  for (uint32_t id : {4u, 5u, 999u, std::numeric_limits<uint32_t>::max()})
    EXPECT_FALSE(traits_of(id)) << id;
}

// -- Malformed files ------------------------------------------------------------

std::vector<std::byte> small_valid_file() {
  gguf_writer w;
  w.set_string("general.name", "small");
  w.set_strings("tokenizer.ggml.tokens", {"a", "bc"});
  // 32 bytes: the file ends where the data does, so every shorter prefix
  // lacks some of it.
  w.add_tensor("blk.0.small", {8}, ggml_type::f32, pattern(32, 5));
  return w.bytes();
}

TEST(gguf_file, hand_built_file_opens) {
  // The baseline of the hand-built bad files below: each differs in one
  // field.
  temp_dir tmp;
  auto bytes = hand_file({kv_u32("general.k", 7)},
                         {{"blk.0.a", {8, 2}, type_f32_tensor, 0},
                          {"blk.0.b", {32}, type_q8_0_tensor, 64}},
                         64 + 34);
  auto path = tmp / "hand.gguf";
  write_bytes(path, bytes);
  auto f = gguf_file::open(path);
  ASSERT_TRUE(f) << render(f.error());
  ASSERT_EQ(f->tensors().size(), 2u);
  EXPECT_EQ(f->tensors()[1].offset, 64u);
  EXPECT_EQ(f->tensors()[1].bytes, 34u);
  ASSERT_NE(f->find("general.k"), nullptr);
  EXPECT_EQ(f->find("general.k")->u, 7u);
}

TEST(gguf_file, wrong_magic_is_invalid) {
  auto bytes = small_valid_file();
  bytes[0] = static_cast<std::byte>('X');
  expect_invalid(bytes, {}, {"magic", "gguf"});
}

TEST(gguf_file, versions_other_than_2_and_3_are_invalid) {
  for (uint32_t version : {0u, 1u, 4u, 0x03000000u}) {
    SCOPED_TRACE("version " + std::to_string(version));
    auto bytes = small_valid_file();
    put_u32(bytes, 4, version);
    expect_invalid(bytes, {}, {"version"});
  }
}

TEST(gguf_file, string_longer_than_the_file_is_invalid) {
  for (uint64_t length : {uint64_t{1000}, std::numeric_limits<uint64_t>::max(),
                          std::numeric_limits<uint64_t>::max() - 30}) {
    SCOPED_TRACE("length " + std::to_string(length));
    auto kv = byte_appender{}
                .str("general.name")
                .u32(type_string)
                .u64(length)
                .raw("short")
                .take();
    expect_invalid(hand_file({kv}, {}, 0), {"general.name"});
  }
}

TEST(gguf_file, key_longer_than_the_file_or_the_limit_is_invalid) {
  auto huge = byte_appender{}
                .raw("GGUF")
                .u32(3)
                .u64(0)
                .u64(1)
                .u64(uint64_t{1} << 63)
                .raw("general.name")
                .take();
  expect_invalid(huge, {});
  read_limits limits;
  limits.max_key_bytes = 8;
  expect_invalid(hand_file({kv_u32("a.rather.long.key", 1)}, {}, 0), {}, {},
                 limits);
}

TEST(gguf_file, array_counts_the_file_cannot_hold_are_invalid) {
  // 2^60 bytes, strings and u64s; 2^61 + 1 u64s are 8 bytes if the size is
  // computed modulo 2^64.
  struct array_case {
    uint32_t element;
    uint64_t count;
  };
  for (auto c : {array_case{0, uint64_t{1} << 60},
                 array_case{type_string, uint64_t{1} << 60},
                 array_case{10, uint64_t{1} << 60},
                 array_case{10, (uint64_t{1} << 61) + 1}}) {
    SCOPED_TRACE("element " + std::to_string(c.element) + " count " +
                 std::to_string(c.count));
    auto kv = byte_appender{}
                .str("tokenizer.ggml.tokens")
                .u32(type_array)
                .u32(c.element)
                .u64(c.count)
                .str("a")
                .u64(0)
                .take();
    expect_invalid(hand_file({kv}, {}, 0), {"tokenizer.ggml.tokens"});
  }
}

TEST(gguf_file, header_counts_the_file_cannot_hold_are_invalid) {
  auto tensors = byte_appender{}
                   .raw("GGUF")
                   .u32(3)
                   .u64(uint64_t{1} << 60)
                   .u64(0)
                   .str("blk.0.w")
                   .take();
  expect_invalid(tensors, {});
  auto kvs = byte_appender{}
               .raw("GGUF")
               .u32(3)
               .u64(0)
               .u64(uint64_t{1} << 60)
               .raw(kv_u32("general.k", 1))
               .take();
  expect_invalid(kvs, {});
}

TEST(gguf_file, unknown_value_type_is_invalid) {
  auto kv = byte_appender{}.str("general.odd").u32(13).u32(0).take();
  expect_invalid(hand_file({kv}, {}, 0), {"general.odd"}, {"13", "type"});
  auto element = byte_appender{}
                   .str("general.odd_array")
                   .u32(type_array)
                   .u32(13)
                   .u64(1)
                   .u32(0)
                   .take();
  expect_invalid(hand_file({element}, {}, 0), {"general.odd_array"},
                 {"13", "type"});
}

TEST(gguf_file, arrays_nested_beyond_the_limit_are_invalid) {
  // 10,000 levels: a reader recursing without a limit runs out of stack.
  for (int levels : {11, 10000}) {
    SCOPED_TRACE(std::to_string(levels) + " levels");
    byte_appender kv;
    kv.str("general.deep").u32(type_array);
    for (int i = 1; i < levels; ++i)
      kv.u32(type_array).u64(1);
    kv.u32(0).u64(0); // the innermost: no u8s
    expect_invalid(hand_file({kv.take()}, {}, 0), {"general.deep"});
  }
}

TEST(gguf_file, metadata_beyond_the_memory_limit_is_invalid) {
  read_limits limits;
  limits.max_metadata_bytes = 1024;
  byte_appender text;
  text.str("general.text").u32(type_string).str(std::string(4096, 'x'));
  expect_invalid(hand_file({text.take()}, {}, 0), {"general.text"}, {},
                 limits);
  byte_appender numbers;
  numbers.str("general.numbers").u32(type_array).u32(10).u64(1000);
  for (int i = 0; i < 1000; ++i)
    numbers.u64(static_cast<uint64_t>(i));
  expect_invalid(hand_file({numbers.take()}, {}, 0), {"general.numbers"}, {},
                 limits);
}

TEST(gguf_file, unknown_tensor_type_is_invalid) {
  auto bytes = hand_file({}, {{"blk.0.bad_type", {8}, 999, 0}}, 32);
  expect_invalid(bytes, {"blk.0.bad_type"}, {"999", "type"});
}

TEST(gguf_file, known_unsupported_tensor_type_opens) {
  // Q5_K (13): refusing it by name is the importer's business.
  temp_dir tmp;
  auto path = tmp / "q5k.gguf";
  write_bytes(path, hand_file({}, {{"blk.0.q5k", {256, 2}, 13, 0}}, 2 * 176));
  auto f = gguf_file::open(path);
  ASSERT_TRUE(f) << render(f.error());
  ASSERT_EQ(f->tensors().size(), 1u);
  const auto& t = f->tensors()[0];
  EXPECT_EQ(static_cast<uint32_t>(t.type),
            static_cast<uint32_t>(ggml_type::q5_k));
  EXPECT_EQ(t.bytes, 2u * 176);
  auto traits = traits_of(static_cast<uint32_t>(t.type));
  ASSERT_TRUE(traits);
  EXPECT_FALSE(traits->supported);
}

TEST(gguf_file, dimension_counts_other_than_1_to_4_are_invalid) {
  expect_invalid(hand_file({}, {{"blk.0.five_dims", {8, 1, 1, 1, 1}}}, 32),
                 {"blk.0.five_dims"}, {"dim"});
  expect_invalid(hand_file({}, {{"blk.0.no_dims", {}}}, 32),
                 {"blk.0.no_dims"}, {"dim"});
}

TEST(gguf_file, empty_dimension_is_invalid) {
  expect_invalid(hand_file({}, {{"blk.0.empty_row", {8, 0}}}, 32),
                 {"blk.0.empty_row"}, {"dim", "empty", "zero"});
  expect_invalid(hand_file({}, {{"blk.0.empty_col", {0}}}, 32),
                 {"blk.0.empty_col"}, {"dim", "empty", "zero"});
}

TEST(gguf_file, first_dimension_off_the_block_is_invalid) {
  // Q8_0 blocks are 32 elements; 40 is 1.25 blocks.
  auto bytes = hand_file({}, {{"blk.0.ragged", {40}, type_q8_0_tensor}}, 64);
  expect_invalid(bytes, {"blk.0.ragged"}, {"block", "multiple", "32", "40"});
}

TEST(gguf_file, shape_whose_size_overflows_is_invalid) {
  // Elements: 2^62 * 4 and 2^32 * 2^32 are 0 modulo 2^64.
  expect_invalid(hand_file({}, {{"blk.0.huge", {uint64_t{1} << 62, 4}}}, 32),
                 {"blk.0.huge"});
  expect_invalid(
    hand_file({}, {{"blk.0.huge", {uint64_t{1} << 32, uint64_t{1} << 32}}}, 32),
    {"blk.0.huge"});
  // Bytes: 4 * 2^60 = 2^62 elements fit in a u64, their 2^64 bytes as f32
  // are 0 modulo 2^64 (found by the fuzz test below).
  {
    SCOPED_TRACE("f32 {4, 2^60}");
    expect_invalid(hand_file({}, {{"blk.0.huge", {4, uint64_t{1} << 60}}}, 32),
                   {"blk.0.huge"});
  }
  {
    SCOPED_TRACE("f32 {2^62}");
    expect_invalid(hand_file({}, {{"blk.0.huge", {uint64_t{1} << 62}}}, 32),
                   {"blk.0.huge"});
  }
}

TEST(gguf_file, data_past_the_end_is_invalid) {
  expect_invalid(hand_file({}, {{"blk.0.far", {8}, type_f32_tensor, 1024}}, 32),
                 {"blk.0.far"});
  // Aligned, and offset + bytes wraps around 2^64.
  expect_invalid(hand_file({}, {{"blk.0.far", {8}, type_f32_tensor,
                                 std::numeric_limits<uint64_t>::max() & ~31ull}},
                           32),
                 {"blk.0.far"});
  // One byte short.
  expect_invalid(hand_file({}, {{"blk.0.short", {8}, type_f32_tensor, 0}}, 31),
                 {"blk.0.short"});
}

TEST(gguf_file, misaligned_offset_is_invalid) {
  auto bytes = hand_file({},
                         {{"blk.0.first", {8}, type_f32_tensor, 0},
                          {"blk.0.misaligned", {8}, type_f32_tensor, 36}},
                         96);
  expect_invalid(bytes, {"blk.0.misaligned"}, {"align"});
}

TEST(gguf_file, overlapping_tensors_are_invalid) {
  // 64 bytes at 0 and 32 bytes at 32.
  auto bytes = hand_file({},
                         {{"blk.0.wide", {16}, type_f32_tensor, 0},
                          {"blk.0.inside", {8}, type_f32_tensor, 32}},
                         96);
  expect_invalid(bytes, {}, {"blk.0.wide", "blk.0.inside"});
}

TEST(gguf_file, duplicate_tensor_names_are_invalid) {
  auto bytes = hand_file({},
                         {{"blk.0.same", {8}, type_f32_tensor, 0},
                          {"blk.0.same", {8}, type_f32_tensor, 32}},
                         64);
  expect_invalid(bytes, {"blk.0.same"}, duplicate_hints);
}

TEST(gguf_file, duplicate_keys_are_invalid) {
  auto bytes = hand_file({kv_u32("general.dup", 1), kv_u32("general.dup", 2)},
                         {{"blk.0.w", {8}}}, 32);
  expect_invalid(bytes, {"general.dup"}, duplicate_hints);
}

TEST(gguf_file, alignment_not_a_power_of_two_is_invalid) {
  for (uint64_t alignment : {24u, 0u}) {
    SCOPED_TRACE("alignment " + std::to_string(alignment));
    gguf_writer w;
    w.set("general.alignment", scalar_u(value_type::u32, alignment));
    w.add_tensor("blk.0.w", {8}, ggml_type::f32, pattern(32, 1));
    expect_invalid(w.bytes(), {"general.alignment"});
  }
}

TEST(gguf_file, every_truncation_is_invalid) {
  temp_dir tmp;
  auto bytes = small_valid_file();
  ASSERT_LT(bytes.size(), 2048u);
  auto path = tmp / "cut.gguf";
  write_bytes(path, bytes);
  auto full = gguf_file::open(path);
  ASSERT_TRUE(full) << render(full.error());
  ASSERT_EQ(full->tensors().size(), 1u);
  size_t opened = 0;
  size_t wrong_code = 0;
  for (size_t n = 0; n < bytes.size(); ++n) {
    write_bytes(path, std::span{bytes}.first(n));
    auto err = open_error(path);
    if (!err) {
      if (++opened <= 5)
        ADD_FAILURE() << "a prefix of " << n << " of " << bytes.size()
                      << " bytes opened";
    } else if (err.code() != static_cast<uint8_t>(errc::invalid_file)) {
      if (++wrong_code <= 5)
        ADD_FAILURE() << "prefix of " << n << " bytes: " << render(err);
    }
  }
  EXPECT_EQ(opened, 0u);
  EXPECT_EQ(wrong_code, 0u);
}

TEST(gguf_file, file_shrunk_after_open_fails_to_read) {
  temp_dir tmp;
  auto path = tmp / "shrinks.gguf";
  write_bytes(path, small_valid_file());
  auto f = gguf_file::open(path);
  ASSERT_TRUE(f) << render(f.error());
  const auto& t = f->tensors().at(0);
  std::filesystem::resize_file(path, f->data_offset() + t.offset + t.bytes / 2);
  std::vector<std::byte> out(t.bytes);
  auto err = f->read(t, out);
  ASSERT_TRUE(err);
  EXPECT_EQ(err.code(), static_cast<uint8_t>(errc::invalid_file))
    << render(err);
}

TEST(gguf_file, missing_file_is_not_found) {
  temp_dir tmp;
  auto err = open_error(tmp / "absent.gguf");
  ASSERT_TRUE(err);
  EXPECT_EQ(err.code(), static_cast<uint8_t>(errc::not_found)) << render(err);
  EXPECT_NE(render(err).find("absent.gguf"), std::string::npos)
    << render(err);
}

// -- Fuzzing --------------------------------------------------------------------

std::vector<std::byte> fuzz_seed_file() {
  gguf_writer w;
  w.set_u32("general.quantization_version", 2);
  w.set_string("general.name", "fuzz");
  w.set_strings("tokenizer.ggml.tokens", {"<s>", "</s>", "a", "bc"});
  w.set("general.ids",
        array_of(value_type::i32,
                 {scalar_i(value_type::i32, 1), scalar_i(value_type::i32, 2)}));
  w.set_f32("general.scale", 0.25f);
  w.add_tensor("a", {4, 2}, ggml_type::f32, pattern(32, 21));
  w.add_tensor("b", {32}, ggml_type::q8_0, pattern(34, 22));
  w.add_tensor("c", {32, 2}, ggml_type::q4_0, pattern(36, 23));
  return w.bytes();
}

/// An array's items have its element type, all the way down.
bool arrays_consistent(const value& v) {
  if (v.type != value_type::array)
    return true;
  return std::all_of(v.items.begin(), v.items.end(), [&](const value& item) {
    return item.type == v.element && arrays_consistent(item);
  });
}

TEST(gguf_file, mutated_files_fail_cleanly_or_open_consistently) {
  temp_dir tmp;
  const auto seed_file = fuzz_seed_file();
  auto path = tmp / "mutant.gguf";
  std::mt19937_64 rng(0x6767'7566'2024ull);
  auto below = [&](uint64_t n) { return n == 0 ? 0 : rng() % n; };
  const uint64_t huge[] = {std::numeric_limits<uint64_t>::max(),
                           uint64_t{1} << 63,
                           uint64_t{1} << 60,
                           uint64_t{1} << 32,
                           0xFFFF'FFFFull,
                           seed_file.size(),
                           seed_file.size() + 1};
  size_t opened = 0;
  size_t rejected = 0;
  size_t failures = 0;
  auto fail = [&](size_t mutant, const std::string& what) {
    if (++failures <= 10)
      ADD_FAILURE() << "mutant " << mutant << ": " << what;
  };
  for (size_t mutant = 0; mutant < 3000; ++mutant) {
    auto m = seed_file;
    // One mutation, sometimes two.
    int rounds = below(4) == 0 ? 2 : 1;
    for (int r = 0; r < rounds; ++r) {
      switch (below(6)) {
        case 0: // flip 1-8 bytes
          for (auto n = 1 + below(8); n > 0 && !m.empty(); --n)
            m[below(m.size())] ^= static_cast<std::byte>(1 + below(255));
          break;
        case 1: // truncate
          m.resize(below(m.size()));
          break;
        case 2: // a u64 field made huge
          if (m.size() >= 8)
            put_u64(m, below(m.size() - 7), huge[below(std::size(huge))]);
          break;
        case 3: // a u32 field (type, n_dims, version) made odd
          if (m.size() >= 4)
            put_u32(m, below(m.size() - 3),
                    static_cast<uint32_t>(huge[below(std::size(huge))] +
                                          below(3)));
          break;
        case 4: { // insert 1-4 bytes
          auto at = below(m.size() + 1);
          auto extra = pattern(1 + below(4), static_cast<uint32_t>(rng()));
          m.insert(m.begin() + static_cast<ptrdiff_t>(at), extra.begin(),
                   extra.end());
          break;
        }
        default: { // delete 1-4 bytes
          auto at = below(m.size());
          auto n = std::min<uint64_t>(1 + below(4), m.size() - at);
          m.erase(m.begin() + static_cast<ptrdiff_t>(at),
                  m.begin() + static_cast<ptrdiff_t>(at + n));
        }
      }
    }
    write_bytes(path, m);
    auto f = gguf_file::open(path);
    if (!f) {
      ++rejected;
      if (f.error().code() != static_cast<uint8_t>(errc::invalid_file))
        fail(mutant, "not invalid_file: " + render(f.error()));
      continue;
    }
    ++opened;
    if (f->file_bytes() != m.size() || f->data_offset() > m.size()) {
      fail(mutant, "file_bytes or data_offset off");
      continue;
    }
    for (const auto& [key, v] : f->metadata())
      if (!arrays_consistent(v))
        fail(mutant, "array items of another type in " + key);
    const uint64_t data_bytes = f->file_bytes() - f->data_offset();
    for (const auto& t : f->tensors()) {
      if (t.bytes > m.size() || t.offset > data_bytes ||
          t.bytes > data_bytes - t.offset) {
        fail(mutant, "tensor " + t.name + " outside the file");
        continue;
      }
      // Its size follows from its shape without wrapping around 2^64:
      // blocks <= bytes / block_bytes keeps the product below bytes.
      auto traits = traits_of(static_cast<uint32_t>(t.type));
      uint64_t elements = 1;
      bool wraps = false;
      for (auto n : t.ne) {
        if (n != 0 && elements > std::numeric_limits<uint64_t>::max() / n)
          wraps = true;
        elements *= n;
      }
      if (!traits || wraps || elements != t.elements() ||
          elements % traits->block_elems != 0 ||
          elements / traits->block_elems > t.bytes / traits->block_bytes ||
          elements / traits->block_elems * traits->block_bytes != t.bytes ||
          t.bytes != tensor_bytes(t.ne, t.type)) {
        fail(mutant, "tensor " + t.name + " bytes do not follow its shape");
        continue;
      }
      std::vector<std::byte> out(t.bytes);
      auto err = f->read(t, out);
      if (err) {
        fail(mutant, "read " + t.name + ": " + render(err));
        continue;
      }
      auto at = static_cast<ptrdiff_t>(f->data_offset() + t.offset);
      if (!std::equal(out.begin(), out.end(), m.begin() + at))
        fail(mutant, "read " + t.name + " returned other bytes");
      if (traits->supported) {
        std::vector<float> values(t.elements());
        to_f32(t.type, out, values);
      }
    }
  }
  EXPECT_EQ(failures, 0u);
  // Neither outcome may be vacuous: flips in tensor data or strings leave
  // valid files, most other mutations do not.
  EXPECT_GT(opened, 100u);
  EXPECT_GT(rejected, 100u);
  std::cout << "mutants opened " << opened << ", rejected " << rejected
            << "\n";
}

} // namespace
} // namespace lockstep::storage::gguf
