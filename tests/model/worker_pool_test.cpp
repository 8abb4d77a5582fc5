#include "model/worker_pool.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

namespace lockstep::model {
namespace {

// Uneven work: some indices return at once, some spin, some yield the core,
// so workers of one run are still busy (or still leaving) when the next run
// starts, which is when generations can mix.
uint64_t uneven_work(uint64_t run, uint64_t i) {
  uint64_t h = (run * 0x9e3779b97f4a7c15ull) ^ (i * 0xbf58476d1ce4e5b9ull);
  h ^= h >> 29;
  uint64_t spins = h % 7 == 0 ? 2000 : h % 64;
  for (uint64_t s = 0; s < spins; ++s)
    h = h * 6364136223846793005ull + 1442695040888963407ull;
  if (h % 5 == 0)
    std::this_thread::yield();
  return h;
}

// Many back-to-back runs whose sizes jump between fewer indices than threads
// and several per thread: every index of every run runs exactly once, during
// its own run(), and its (plain, non-atomic) result is visible to the caller
// when run() returns.
TEST(worker_pool, every_index_runs_exactly_once_per_run) {
  constexpr uint32_t runs = 1500;
  constexpr uint32_t max_n = 41;
  for (unsigned threads : {2u, 3u, 4u, 8u}) {
    SCOPED_TRACE(threads);
    worker_pool pool{threads};
    ASSERT_EQ(pool.size(), threads);
    std::vector<std::atomic<uint32_t>> count(size_t{runs} * max_n);
    std::atomic<uint32_t> out_of_range{0};
    std::vector<uint64_t> result(max_n);
    for (uint32_t r = 0; r < runs; ++r) {
      unsigned n = r % 2 == 0 ? 1 + r % 3 : 8 + (r * 13) % (max_n - 8);
      pool.run(n, [&, r, n](unsigned i) {
        if (i >= n) {
          out_of_range.fetch_add(1);
          return;
        }
        count[size_t{r} * max_n + i].fetch_add(1);
        result[i] = uneven_work(r, i);
      });
      for (unsigned i = 0; i < n; ++i) {
        ASSERT_EQ(count[size_t{r} * max_n + i].load(), 1u)
            << "run " << r << " index " << i;
        ASSERT_EQ(result[i], uneven_work(r, i)) << "run " << r << " index " << i;
      }
    }
    // A straggler from an earlier run would show up here as a second count
    // or as an index beyond its run's size.
    for (uint32_t r = 0; r < runs; ++r)
      for (uint32_t i = 0; i < max_n; ++i) {
        unsigned n = r % 2 == 0 ? 1 + r % 3 : 8 + (r * 13) % (max_n - 8);
        ASSERT_EQ(count[size_t{r} * max_n + i].load(), i < n ? 1u : 0u)
            << "run " << r << " index " << i;
      }
    EXPECT_EQ(out_of_range.load(), 0u);
  }
}

TEST(worker_pool, small_runs_and_a_single_thread_pool) {
  for (unsigned threads : {1u, 3u}) {
    worker_pool pool{threads};
    EXPECT_EQ(pool.size(), threads);
    unsigned calls = 0;
    pool.run(0, [&](unsigned) { ++calls; });
    EXPECT_EQ(calls, 0u);
    // One index, or a one-thread pool, runs on the caller.
    auto caller = std::this_thread::get_id();
    pool.run(1, [&](unsigned i) {
      EXPECT_EQ(i, 0u);
      EXPECT_EQ(std::this_thread::get_id(), caller);
      ++calls;
    });
    EXPECT_EQ(calls, 1u);
  }
}

} // namespace
} // namespace lockstep::model
