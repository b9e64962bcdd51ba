// ReadBandwidth: a STREAM-like read-only probe of the machine's memory bandwidth, run just before a
// benchmark so its "fraction of the bound" compares numbers from the same moment on a shared host.
// Each thread of the pool sums its own slice of a buffer much larger than the caches (AVX2 loads
// when the CPU has them); the best of a few passes is returned.
// Thread safety: uses `pool` exclusively while running.
#pragma once

#include <cstddef>

#include "core/thread_pool.h"

namespace moerun {

// GB/s (1e9 bytes) read by all threads of `pool` together over a `bytes` buffer.
double MeasureReadBandwidth(ThreadPool* pool, size_t bytes = size_t{1} << 30, int passes = 5);

namespace internal {
// Sum of n floats (AVX2 + FMA build); the result only keeps the loads alive.
float SumAvx2(const float* p, size_t n);
}  // namespace internal

}  // namespace moerun
