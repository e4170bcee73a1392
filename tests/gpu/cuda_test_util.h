// Small helpers for GPU tests: device buffers that free themselves, and a GPU-present check.
#pragma once

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <vector>

namespace veda::testing {

inline bool has_gpu() {
  int devices = 0;
  const bool ok = cudaGetDeviceCount(&devices) == cudaSuccess && devices > 0;
  if (!ok) cudaGetLastError();  // clear the error so later CUDA calls do not report it
  return ok;
}

// Device memory of `bytes`, filled with 0xFF bytes (NaN for floats) so unwritten outputs fail.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(std::size_t bytes) : bytes_(bytes) {
    // At least 16 bytes, so that empty tensors still get a valid, aligned pointer.
    if (cudaMalloc(&data_, std::max<std::size_t>(bytes, 16)) != cudaSuccess) data_ = nullptr;
    if (data_ != nullptr) cudaMemset(data_, 0xFF, bytes);
  }
  template <typename T>
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size() * sizeof(T)) {
    if (data_ != nullptr) cudaMemcpy(data_, host.data(), bytes_, cudaMemcpyHostToDevice);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { cudaFree(data_); }

  template <typename T = void>
  T* get() const {
    return static_cast<T*>(data_);
  }
  template <typename T>
  std::vector<T> download() const {
    std::vector<T> host(bytes_ / sizeof(T));
    cudaMemcpy(host.data(), data_, bytes_, cudaMemcpyDeviceToHost);
    return host;
  }
  void upload(const void* host) const {
    ASSERT_EQ(cudaMemcpy(data_, host, bytes_, cudaMemcpyHostToDevice), cudaSuccess);
  }
  void download(void* host) const {
    ASSERT_EQ(cudaMemcpy(host, data_, bytes_, cudaMemcpyDeviceToHost), cudaSuccess);
  }
  void poison() const { ASSERT_EQ(cudaMemset(data_, 0xFF, bytes_), cudaSuccess); }  // NaN

 private:
  void* data_ = nullptr;
  std::size_t bytes_ = 0;
};

}  // namespace veda::testing
