#include "veda/block_index.h"

#include "veda/error.h"

namespace veda {

BlockIndex::BlockIndex(std::int64_t batch_, std::int64_t heads_, std::int64_t q_tiles_,
                       std::int64_t k_tiles_, std::int64_t budget_)
    : batch(batch_), heads(heads_), q_tiles(q_tiles_), k_tiles(k_tiles_), budget(budget_) {
  VEDA_CHECK(batch > 0 && heads > 0 && q_tiles > 0 && k_tiles > 0, "block index of ", batch,
             " batches, ", heads, " heads, ", q_tiles, " query tiles and ", k_tiles,
             " key tiles; expected every size positive");
  VEDA_CHECK(budget >= 0 && budget <= k_tiles, "block index budget ", budget, " is outside [0, ",
             k_tiles, "] (the number of key tiles)");
  counts.assign(static_cast<std::size_t>(batch * heads * q_tiles), 0);
  indices.assign(static_cast<std::size_t>(batch * heads * q_tiles * budget), kPaddedSlot);
}

BlockIndex BlockIndex::dense(std::int64_t batch, std::int64_t heads, std::int64_t q_tiles,
                             std::int64_t k_tiles) {
  BlockIndex index(batch, heads, q_tiles, k_tiles, k_tiles);
  for (std::int64_t row = 0; row < batch * heads * q_tiles; ++row) {
    index.counts[static_cast<std::size_t>(row)] = static_cast<std::int32_t>(k_tiles);
    for (std::int64_t j = 0; j < k_tiles; ++j) {
      index.indices[static_cast<std::size_t>(row * k_tiles + j)] = static_cast<std::int32_t>(j);
    }
  }
  return index;
}

double BlockIndex::sparsity() const {
  double kept = 0.0;
  for (std::int32_t count : counts) kept += count;
  return 1.0 - kept / (static_cast<double>(counts.size()) * static_cast<double>(k_tiles));
}

void BlockIndex::validate() const {
  VEDA_CHECK(counts.size() == static_cast<std::size_t>(batch * heads * q_tiles) &&
                 indices.size() == counts.size() * static_cast<std::size_t>(budget),
             "block index holds ", counts.size(), " counts and ", indices.size(),
             " slots; expected ", batch * heads * q_tiles, " and ",
             batch * heads * q_tiles * budget);
  for (std::size_t row = 0; row < counts.size(); ++row) {
    const std::int32_t count = counts[row];
    VEDA_CHECK(count >= 0 && count <= budget, "block index row ", row, " has count ", count,
               "; expected 0..", budget);
    const std::int32_t* slots = indices.data() + row * static_cast<std::size_t>(budget);
    for (std::int64_t s = 0; s < budget; ++s) {
      if (s < count) {
        VEDA_CHECK(slots[s] >= 0 && slots[s] < k_tiles, "block index row ", row, " lists tile ",
                   slots[s], "; expected 0..", k_tiles - 1);
        VEDA_CHECK(s == 0 || slots[s] > slots[s - 1], "block index row ", row,
                   " is not strictly ascending at slot ", s);
      } else {
        VEDA_CHECK(slots[s] == kPaddedSlot, "block index row ", row, " slot ", s,
                   " past its count holds ", slots[s], "; expected padding ", kPaddedSlot);
      }
    }
  }
}

}  // namespace veda
