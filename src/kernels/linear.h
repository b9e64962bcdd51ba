// Linear: y = x W^T for a PackedWeight, picking the matmul path and preparing bf16 activations
// when the path needs them. The convenience layer over kernels/matmul.h for model code.
// Thread safety: Forward uses a caller-provided scratch; distinct scratches may run concurrently.
#pragma once

#include <cstdint>

#include "core/scratch_buffer.h"
#include "core/thread_pool.h"
#include "kernels/matmul.h"

namespace moerun {

// x: [rows, w.in_features()] f32 row-major; y: [rows, w.out_features()] f32.
// With a gate/up weight and `swiglu`, y is [rows, I] = silu(gate) * up.
void LinearForward(const PackedWeight& w, const float* x, int64_t rows, float* y, ThreadPool* pool,
                   ActivationPrecision precision, ScratchBuffer<uint16_t>* scratch, bool swiglu = false);

}  // namespace moerun
