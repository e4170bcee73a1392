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
  view().validate();
  for (std::size_t row = 0; row < counts.size(); ++row) {
    const std::int32_t* slots = indices.data() + row * static_cast<std::size_t>(budget);
    for (std::int64_t s = counts[row]; s < budget; ++s) {
      VEDA_CHECK(slots[s] == kPaddedSlot, "block index row ", row, " slot ", s,
                 " past its count holds ", slots[s], "; expected padding ", kPaddedSlot);
    }
  }
}

CsrBlockIndex BlockIndex::csr() const {
  CsrBlockIndex out{batch, heads, q_tiles, k_tiles, {0}, {}};
  for (std::size_t row = 0; row < counts.size(); ++row) {
    const std::int32_t* slots = indices.data() + row * static_cast<std::size_t>(budget);
    out.indices.insert(out.indices.end(), slots, slots + counts[row]);
    out.offsets.push_back(static_cast<std::int64_t>(out.indices.size()));
  }
  return out;
}

void BlockIndexView::validate() const {
  VEDA_CHECK(offsets != nullptr || counts != nullptr,
             "block index view without counts or offsets; expected counts and indices (padded "
             "form) or offsets and indices (CSR form)");
  for (std::int64_t row = 0; row < batch * heads * q_tiles; ++row) {
    std::int64_t count = 0;
    const std::int32_t* slots = nullptr;
    if (offsets != nullptr) {
      VEDA_CHECK(
          offsets[row] >= 0 && offsets[row + 1] >= offsets[row] && (row > 0 || offsets[0] == 0),
          "CSR block index offsets ", offsets[row], ", ", offsets[row + 1], " at row ", row,
          "; expected offsets starting at 0 and never decreasing");
      count = offsets[row + 1] - offsets[row];
      slots = indices + offsets[row];
    } else {
      count = counts[row];
      VEDA_CHECK(count >= 0 && count <= budget, "block index row ", row, " has count ", count,
                 "; expected 0..", budget);
      slots = indices + row * budget;
    }
    VEDA_CHECK(count <= k_tiles, "block index row ", row, " lists ", count, " tiles; there are ",
               k_tiles, " key tiles");
    VEDA_CHECK(count == 0 || indices != nullptr, "block index row ", row, " lists ", count,
               " tiles but the index has no indices array");
    for (std::int64_t s = 0; s < count; ++s) {
      VEDA_CHECK(slots[s] >= 0 && slots[s] < k_tiles, "block index row ", row, " lists tile ",
                 slots[s], "; expected 0..", k_tiles - 1);
      VEDA_CHECK(s == 0 || slots[s] > slots[s - 1], "block index row ", row,
                 " is not strictly ascending at slot ", s);
    }
  }
}

}  // namespace veda
