// The host store: creation, reopening, format version, the owner lock (with a
// real second process), and the key-value operations.

#include "storage/store.hpp"

#include "storage/detail/meta_keys.hpp"
#include "tests/storage/temp_dir.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include <sys/wait.h>
#include <unistd.h>

namespace lockstep::storage {
namespace {

using test::temp_dir;

std::unique_ptr<store> create(const std::filesystem::path& dir) {
  open_options o;
  o.create_if_missing = true;
  auto s = store::open(dir, o);
  EXPECT_TRUE(s) << render(s.error());
  return s ? std::move(*s) : nullptr;
}

caf::error open_error(const std::filesystem::path& dir, open_options o = {}) {
  auto s = store::open(dir, o);
  return s ? caf::error{} : s.error();
}

TEST(store, creates_all_column_families_and_reopens) {
  temp_dir tmp;
  auto dir = tmp / "db";
  {
    auto s = create(dir);
    ASSERT_TRUE(s);
    for (auto cf :
         {column::meta, column::weights, column::plans, column::cluster}) {
      ASSERT_FALSE(s->put(cf, "k", std::string{"v-"} + to_string(cf)));
    }
  }
  auto s = store::open(dir, {});
  ASSERT_TRUE(s) << render(s.error());
  for (auto cf :
       {column::meta, column::weights, column::plans, column::cluster}) {
    auto v = (*s)->get(cf, "k");
    ASSERT_TRUE(v);
    ASSERT_TRUE(*v);
    EXPECT_EQ(**v, std::string{"v-"} + to_string(cf));
  }
  auto absent = (*s)->get(column::plans, "nope");
  ASSERT_TRUE(absent);
  EXPECT_FALSE(*absent);
}

TEST(store, missing_directory_is_not_found_naming_it) {
  temp_dir tmp;
  auto dir = tmp / "nowhere";
  auto err = open_error(dir);
  EXPECT_EQ(err, errc::not_found);
  EXPECT_NE(render(err).find(dir.string()), std::string::npos) << render(err);
  EXPECT_EQ(lockstep::kind_of(err), error_kind::invalid_input);
  EXPECT_FALSE(std::filesystem::exists(dir)); // nothing created
  open_options ro;
  ro.read_only = true;
  ro.create_if_missing = true; // read-only never creates
  EXPECT_EQ(open_error(dir, ro), errc::not_found);
}

TEST(store, directory_without_a_store_is_rejected_clearly) {
  temp_dir tmp;
  auto err = open_error(tmp.path());
  EXPECT_EQ(err, errc::not_found);
  EXPECT_NE(render(err).find("is not a lockstep store"), std::string::npos)
      << render(err);
  // Creating a store in a directory full of other files is refused.
  std::ofstream{tmp / "notes.txt"} << "mine";
  open_options o;
  o.create_if_missing = true;
  err = open_error(tmp.path(), o);
  EXPECT_EQ(err, errc::invalid_argument);
  EXPECT_NE(render(err).find("not empty"), std::string::npos) << render(err);
  // A file is not a directory.
  err = open_error(tmp / "notes.txt", o);
  EXPECT_EQ(err, errc::invalid_argument) << render(err);
}

TEST(store, format_version_is_checked_on_open) {
  temp_dir tmp;
  auto dir = tmp / "db";
  {
    auto s = create(dir);
    ASSERT_TRUE(s);
    auto v = s->get(column::meta, detail::format_version_key);
    ASSERT_TRUE(v && *v);
    uint32_t stored = 0;
    ASSERT_EQ((*v)->size(), 4u);
    std::memcpy(&stored, (*v)->data(), 4);
    EXPECT_EQ(stored, store_format_version);
    // A store written by a future build.
    uint32_t future = store_format_version + 1;
    ASSERT_FALSE(s->put(column::meta, detail::format_version_key,
                        std::string_view{reinterpret_cast<char*>(&future), 4}));
  }
  auto err = open_error(dir);
  EXPECT_EQ(err, errc::version_mismatch);
  EXPECT_NE(render(err).find("format version " +
                             std::to_string(store_format_version + 1)),
            std::string::npos)
      << render(err);
  open_options ro;
  ro.read_only = true;
  EXPECT_EQ(open_error(dir, ro), errc::version_mismatch);
}

TEST(store, second_process_gets_in_use_naming_our_pid) {
  temp_dir tmp;
  auto dir = tmp / "db";
  auto s = create(dir);
  ASSERT_TRUE(s);
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // The child only reaches the owner lock, which fails before RocksDB is
    // touched; it reports the rendered error through the pipe.
    ::close(fds[0]);
    open_options ro;
    ro.read_only = true;
    auto other = store::open(dir, ro);
    std::string msg = other ? "opened" : render(other.error());
    if (!other && other.error() != errc::in_use)
      msg = "wrong code: " + msg;
    auto n = ::write(fds[1], msg.data(), msg.size());
    ::_exit(n == static_cast<ssize_t>(msg.size()) ? 0 : 1);
  }
  ::close(fds[1]);
  std::string got;
  char buf[256];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;)
    got.append(buf, n);
  ::close(fds[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_EQ(got, "storage.in_use: store " + dir.string() + " in use by PID " +
                     std::to_string(::getpid()));
}

// Readers share a store (the hosts of a local cluster read one imported
// model at once); a writer still excludes them, and they it.
TEST(store, readers_share_a_store_and_exclude_a_writer) {
  temp_dir tmp;
  auto dir = tmp / "db";
  ASSERT_TRUE(create(dir)); // made, then closed
  open_options ro;
  ro.read_only = true;
  auto reader = store::open(dir, ro);
  ASSERT_TRUE(reader) << render(reader.error());
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    open_options also_ro;
    also_ro.read_only = true;
    auto other = store::open(dir, also_ro); // a second reader: fine
    auto writer = store::open(dir, {});     // a writer: in use
    ::_exit(other && !writer && writer.error() == errc::in_use ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST(store, lock_is_released_on_close_and_held_within_a_process) {
  temp_dir tmp;
  auto dir = tmp / "db";
  auto s = create(dir);
  ASSERT_TRUE(s);
  auto err = open_error(dir);
  EXPECT_EQ(err, errc::in_use);
  EXPECT_EQ(lockstep::kind_of(err), error_kind::overloaded);
  s.reset();
  auto again = store::open(dir, {});
  EXPECT_TRUE(again) << render(again.error());
}

TEST(store, batches_are_atomic_across_column_families_and_scans_are_ordered) {
  temp_dir tmp;
  auto s = create(tmp / "db");
  ASSERT_TRUE(s);
  store::batch b;
  b.put(column::plans, "p/2", "two");
  b.put(column::plans, "p/1", "one");
  b.put(column::plans, "q/1", "other prefix");
  b.put(column::cluster, "members", "3");
  EXPECT_EQ(b.size_bytes(), 3u + 3 + 3 + 3 + 3 + 12 + 7 + 1);
  ASSERT_FALSE(s->write(b, true));
  std::vector<std::pair<std::string, std::string>> seen;
  ASSERT_FALSE(s->scan(column::plans, "p/", [&](auto k, auto v) {
    seen.emplace_back(k, v);
    return true;
  }));
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0], (std::pair<std::string, std::string>{"p/1", "one"}));
  EXPECT_EQ(seen[1], (std::pair<std::string, std::string>{"p/2", "two"}));
  // Early stop.
  size_t calls = 0;
  ASSERT_FALSE(s->scan(column::plans, "", [&](auto, auto) {
    ++calls;
    return false;
  }));
  EXPECT_EQ(calls, 1u);
  ASSERT_FALSE(s->erase(column::plans, "p/1"));
  auto v = s->get(column::plans, "p/1");
  ASSERT_TRUE(v);
  EXPECT_FALSE(*v);
}

TEST(store, unlogged_writes_are_durable_after_flush_and_close) {
  temp_dir tmp;
  auto dir = tmp / "db";
  {
    auto s = create(dir);
    ASSERT_TRUE(s);
    store::batch b;
    b.put(column::weights, "w", std::string(100000, 'x'));
    b.put(column::meta, "marker", "done");
    ASSERT_FALSE(s->write_unlogged(b));
    ASSERT_FALSE(s->flush());
  }
  auto s = store::open(dir, {});
  ASSERT_TRUE(s);
  auto v = (*s)->get(column::weights, "w");
  ASSERT_TRUE(v && *v);
  EXPECT_EQ((*v)->size(), 100000u);
}

TEST(store, read_only_store_refuses_writes) {
  temp_dir tmp;
  auto dir = tmp / "db";
  ASSERT_TRUE(create(dir));
  open_options ro;
  ro.read_only = true;
  auto s = store::open(dir, ro);
  ASSERT_TRUE(s) << render(s.error());
  EXPECT_TRUE((*s)->read_only());
  EXPECT_EQ((*s)->put(column::meta, "k", "v"), errc::invalid_argument);
  EXPECT_EQ((*s)->flush(), errc::invalid_argument);
  auto v = (*s)->get(column::meta, detail::format_version_key);
  ASSERT_TRUE(v && *v);
}

} // namespace
} // namespace lockstep::storage
