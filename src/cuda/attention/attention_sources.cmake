# Sources of the CUDA attention kernels, shared by src/cuda/CMakeLists.txt and the standalone
# device build bench/device/CMakeLists.txt. One file per (kernel, dtype, head dim).
set(VEDA_ATTENTION_CU
  ${CMAKE_CURRENT_LIST_DIR}/attention_hopper_bf16_d64.cu
  ${CMAKE_CURRENT_LIST_DIR}/attention_hopper_bf16_d128.cu
  ${CMAKE_CURRENT_LIST_DIR}/attention_hopper_f16_d64.cu
  ${CMAKE_CURRENT_LIST_DIR}/attention_hopper_f16_d128.cu
  ${CMAKE_CURRENT_LIST_DIR}/attention_portable_bf16_d64.cu
  ${CMAKE_CURRENT_LIST_DIR}/attention_portable_bf16_d128.cu
  ${CMAKE_CURRENT_LIST_DIR}/attention_portable_f16_d64.cu
  ${CMAKE_CURRENT_LIST_DIR}/attention_portable_f16_d128.cu
)
set(VEDA_ATTENTION_CC
  ${CMAKE_CURRENT_LIST_DIR}/attention_cuda.cc
  ${CMAKE_CURRENT_LIST_DIR}/attention_tma.cc
)
set(VEDA_ATTENTION_CAPI_CC ${CMAKE_CURRENT_LIST_DIR}/attention_capi.cc)
