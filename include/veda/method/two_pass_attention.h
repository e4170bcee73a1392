// Block-sparse attention of one head, same contract as veda::attend_head (attention.h), computed
// per query tile in two passes over its kept scores instead of an online softmax: scores of all
// listed key tiles ([128, count * 128], 1.3 MB at 20 tiles), then the row max, exp (16-lane
// polynomial, ~2 ulp) and P V. It is what the method's demo and calibration run many times; at
// N = 12,288, d = 128 on 2 cores: dense 1.1 s against attend_head's 1.7 s, 90% sparse 0.12 s
// against 0.16 s.
#pragma once

#include <cstdint>
#include <span>

namespace veda::method {

// q [Nq, D], k, v [Nk, D] float32, tiles of 128 consecutive rows; counts/rows/budget as in
// attend_head (counts == nullptr: dense). out [Nq, D], lse [Nq]; empty list: O = 0, lse = -inf.
void attend_head_two_pass(std::span<const float> q, std::span<const float> k,
                          std::span<const float> v, std::int64_t dim, float scale,
                          const std::int32_t* counts, const std::int32_t* rows, std::int64_t budget,
                          std::span<float> out, std::span<float> lse);

}  // namespace veda::method
