// The oracle backends' constructors, one per implementation file (oracle_backend_cpu.cc and,
// in builds with CUDA, oracle_backend_cuda.cc); oracle_backend.cc picks among them.
#pragma once

#include <memory>

#include "veda/method/oracle_backend.h"

namespace veda::method::detail {

std::unique_ptr<OracleBackend> make_cpu_oracle_backend();

#ifdef VEDA_METHOD_CUDA
// Throws veda::Error when no GPU is usable.
std::unique_ptr<OracleBackend> make_cuda_oracle_backend();
// gpus, gpu_name or gpu_problem as cudaGetDeviceCount and cudaGetDeviceProperties say.
OracleDevices cuda_oracle_devices();
#endif

}  // namespace veda::method::detail
