# A CTest script (no GPU needed): compiles one Hopper attention kernel file to a cubin and fails
# if ptxas reports that it serialises wgmma (infos C7518/C7520: each wgmma then waits for the
# previous one; dense attention measured 18% slower, bench/RESULTS.md). This happens silently when
# a wgmma batch is issued conditionally or is still in flight where two control paths join.
# Variables: NVCC, SOURCE, INCLUDE_DIR, CUBIN.
execute_process(
  COMMAND "${NVCC}" -std=c++20 -O3 -DNDEBUG -DVEDA_HAS_CUDA=1 "-I${INCLUDE_DIR}" -cubin
          --generate-code=arch=compute_90a,code=sm_90a -x cu "${SOURCE}" -o "${CUBIN}"
  RESULT_VARIABLE status
  OUTPUT_VARIABLE output
  ERROR_VARIABLE output)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "${SOURCE} does not compile for sm_90a:\n${output}")
endif()
if(output MATCHES "C7518|C7520|wgmma.mma_async instructions are serialized")
  message(FATAL_ERROR "ptxas serialises wgmma in ${SOURCE}:\n${output}")
endif()
message(STATUS "${SOURCE}: wgmma not serialised")
