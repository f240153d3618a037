// What the oneDNN FFI handlers share: the CPU engine, element types, and running one oneDNN
// call at a time with its errors turned into XLA FFI errors.
#ifndef MSM_JAX_KERNELS_ONEDNN_COMMON_H_
#define MSM_JAX_KERNELS_ONEDNN_COMMON_H_

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace msm_onednn {

inline dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

inline bool ToDnnlType(xla::ffi::DataType type, dnnl::memory::data_type* out) {
  switch (type) {
    case xla::ffi::DataType::F32:
      *out = dnnl::memory::data_type::f32;
      return true;
    case xla::ffi::DataType::BF16:
      *out = dnnl::memory::data_type::bf16;
      return true;
    default:
      return false;
  }
}

// One oneDNN call at a time: each already spreads over every core through OpenMP, and XLA
// may run independent thunks (or several forced CPU devices) on concurrent threads; two
// OpenMP teams on the same cores spin against each other.
inline xla::ffi::Error Run(const std::function<void()>& body) {
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  try {
    body();
  } catch (const dnnl::error& e) {
    return xla::ffi::Error::Internal(std::string("oneDNN: ") + e.what());
  }
  return xla::ffi::Error::Success();
}

// The value built for ``key`` the first time (primitives and their descriptors: building one
// generates its kernel), shared afterwards.
template <typename Value, typename Build>
std::shared_ptr<Value> Cached(const std::string& key, Build build) {
  static std::mutex mutex;
  static auto* cache = new std::unordered_map<std::string, std::shared_ptr<Value>>();
  {
    std::lock_guard<std::mutex> lock(mutex);
    auto found = cache->find(key);
    if (found != cache->end()) return found->second;
  }
  auto value = std::make_shared<Value>(build());
  std::lock_guard<std::mutex> lock(mutex);
  return cache->emplace(key, value).first->second;
}

}  // namespace msm_onednn

#endif  // MSM_JAX_KERNELS_ONEDNN_COMMON_H_
