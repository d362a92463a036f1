// Run-time choices (dtype, quant type) turned into template arguments (host), and element access
// by a run-time element type (host and device).
#pragma once

#include <stdexcept>
#include <string>
#include <type_traits>

#include "fastattn/kv_cache.h"

namespace fastattn {

template <typename F>
void dispatch_half_format(bool is_bf16, F&& f) {
  if (is_bf16) f(Bf16Format{}); else f(Fp16Format{});
}

// Calls f(Fmt{}, Codec{}, std::bool_constant<dynamic_quant>{}) for the run-time element dtype and
// cache quant type: block_wise_fp8 is the fp8 codec with dynamic_quant = true.
template <typename F>
void dispatch_cache_types(bool is_bf16, CacheQuant quant, F&& f) {
  dispatch_half_format(is_bf16, [&](auto fmt) {
    switch (quant) {
      case CacheQuant::kNone: f(fmt, CacheCodec<CacheQuant::kNone>{}, std::false_type{}); return;
      case CacheQuant::kInt8: f(fmt, CacheCodec<CacheQuant::kInt8>{}, std::false_type{}); return;
      case CacheQuant::kFp8: f(fmt, CacheCodec<CacheQuant::kFp8>{}, std::false_type{}); return;
      case CacheQuant::kBlockWiseFp8: f(fmt, CacheCodec<CacheQuant::kFp8>{}, std::true_type{}); return;
    }
    throw std::invalid_argument("fastattn: unknown cache quant type");
  });
}

// Calls f(std::integral_constant<int, head_dim>{}) for a supported head_dim (64, 128, 256).
template <typename F>
void dispatch_head_dim(int head_dim, F&& f) {
  switch (head_dim) {
    case 64: f(std::integral_constant<int, 64>{}); return;
    case 128: f(std::integral_constant<int, 128>{}); return;
    case 256: f(std::integral_constant<int, 256>{}); return;
  }
  throw std::invalid_argument("fastattn: head_dim must be 64, 128 or 256, got " + std::to_string(head_dim));
}

// Element types of activations (attention outputs and the like).
enum class ElementType : int { kBf16, kFp16, kFp32, kFp8 };

FA_HD constexpr int element_bytes(ElementType type) {
  return type == ElementType::kFp32 ? 4 : type == ElementType::kFp8 ? 1 : 2;
}

// Element i of a tensor whose element type is known at run time only, read or written through
// its format (host and device: the attention kernels' q loads and output stores).
template <typename Format>
FA_HD float load_as(const void* base, int64_t i) {
  return Format::to_float(static_cast<const typename Format::Storage*>(base)[i]);
}
template <typename Format>
FA_HD void store_as(void* base, int64_t i, float x) {
  static_cast<typename Format::Storage*>(base)[i] = Format::from_float(x);
}

// Formats with a packed two-element conversion (numerics.h: device code only).
template <typename Format, typename = void>
struct HasPack2 : std::false_type {};
template <typename Format>
struct HasPack2<Format, std::void_t<decltype(Format::pack2(0.0f, 0.0f))>> : std::true_type {};

// Elements i and i + 1 in one store: i even, base aligned to two elements. On the device the
// conversion is the packed one where the format has it (one instruction for both).
template <typename Format>
FA_HD void store_pair_as(void* base, int64_t i, float x0, float x1) {
  using Storage = typename Format::Storage;
#if defined(__CUDA_ARCH__)
  if constexpr (HasPack2<Format>::value) {
    using Packed = decltype(Format::pack2(x0, x1));
    static_assert(sizeof(Packed) == 2 * sizeof(Storage), "pack2 gives both elements");
    *reinterpret_cast<Packed*>(static_cast<Storage*>(base) + i) = Format::pack2(x0, x1);
    return;
  }
#endif
  struct alignas(2 * sizeof(Storage)) Pair {
    Storage x0, x1;
  };
  *reinterpret_cast<Pair*>(static_cast<Storage*>(base) + i) = Pair{Format::from_float(x0), Format::from_float(x1)};
}

FA_HD float load_element(const void* base, int64_t i, ElementType type) {
  switch (type) {
    case ElementType::kBf16: return load_as<Bf16Format>(base, i);
    case ElementType::kFp16: return load_as<Fp16Format>(base, i);
    case ElementType::kFp8: return load_as<E4m3Format>(base, i);
    default: return load_as<Fp32Format>(base, i);
  }
}

FA_HD void store_element(void* base, int64_t i, ElementType type, float x) {
  switch (type) {
    case ElementType::kBf16: return store_as<Bf16Format>(base, i, x);
    case ElementType::kFp16: return store_as<Fp16Format>(base, i, x);
    case ElementType::kFp8: return store_as<E4m3Format>(base, i, x);
    default: return store_as<Fp32Format>(base, i, x);
  }
}

// Calls f(Format{}) for a 16-bit or fp32 element type (the formats numerics.h defines).
template <typename F>
void dispatch_float_format(ElementType type, F&& f) {
  switch (type) {
    case ElementType::kBf16: f(Bf16Format{}); return;
    case ElementType::kFp16: f(Fp16Format{}); return;
    case ElementType::kFp32: f(Fp32Format{}); return;
    case ElementType::kFp8: f(E4m3Format{}); return;
  }
  throw std::invalid_argument("fastattn: unknown element type");
}

inline CacheQuant parse_cache_quant(const std::string& name) {
  if (name == "none") return CacheQuant::kNone;
  if (name == "cache_int8") return CacheQuant::kInt8;
  if (name == "cache_fp8") return CacheQuant::kFp8;
  if (name == "block_wise_fp8") return CacheQuant::kBlockWiseFp8;
  throw std::invalid_argument("fastattn: unsupported cache_quant_type '" + name +
                              "' (expected none, cache_int8, cache_fp8 or block_wise_fp8)");
}

}  // namespace fastattn
