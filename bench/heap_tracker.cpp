// Counts live and peak heap bytes by replacing the program's allocation functions (see heap_tracker.hpp).
//
// Why malloc and not only operator new: Eigen allocates its matrices with std::malloc (aligned by
// hand), so an Eigen temporary inside a kernel would be invisible to an operator new counter. glibc
// lets an executable replace malloc, free, calloc, realloc and the aligned variants; ours forward to
// glibc's own __libc_* entry points, and libstdc++'s operator new calls malloc, so one counter sees
// every allocation. Elsewhere, and under a sanitizer (which owns malloc), the replaceable global
// operator new/delete are replaced instead and Eigen's allocations are not counted.
// Define EFFATTN_BENCH_HEAP_OPERATOR_NEW to force the portable path.

#include "heap_tracker.hpp"

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || defined(__SANITIZE_MEMORY__)
#define EFFATTN_BENCH_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define EFFATTN_BENCH_SANITIZED 1
#endif
#endif

#if defined(__GLIBC__) && !defined(EFFATTN_BENCH_SANITIZED) && !defined(EFFATTN_BENCH_HEAP_OPERATOR_NEW)
#define EFFATTN_BENCH_HEAP_MALLOC 1
#include <malloc.h>
#endif

namespace {

// Relaxed atomics: the counters need no ordering with the memory they describe, only exact sums.
std::atomic<std::size_t> g_live{0};
std::atomic<std::size_t> g_peak{0};
std::atomic<std::uint64_t> g_count{0};

void note_alloc(std::size_t bytes) noexcept {
  const std::size_t live = g_live.fetch_add(bytes, std::memory_order_relaxed) + bytes;
  g_count.fetch_add(1, std::memory_order_relaxed);
  std::size_t peak = g_peak.load(std::memory_order_relaxed);
  while (live > peak && !g_peak.compare_exchange_weak(peak, live, std::memory_order_relaxed)) {
  }
}

void note_free(std::size_t bytes) noexcept { g_live.fetch_sub(bytes, std::memory_order_relaxed); }

}  // namespace

namespace effattn_bench::heap {

std::size_t live_bytes() noexcept { return g_live.load(std::memory_order_relaxed); }
std::size_t peak_bytes() noexcept { return g_peak.load(std::memory_order_relaxed); }
std::uint64_t allocations() noexcept { return g_count.load(std::memory_order_relaxed); }
void reset_peak() noexcept { g_peak.store(g_live.load(std::memory_order_relaxed), std::memory_order_relaxed); }

const char* scope() noexcept {
#if defined(EFFATTN_BENCH_HEAP_MALLOC)
  return "malloc";
#else
  return "operator new";
#endif
}

}  // namespace effattn_bench::heap

#if defined(EFFATTN_BENCH_HEAP_MALLOC)

// glibc's implementation, under the names it exports for exactly this purpose.
extern "C" {
void* __libc_malloc(std::size_t size) noexcept;
void __libc_free(void* ptr) noexcept;
void* __libc_calloc(std::size_t count, std::size_t size) noexcept;
void* __libc_realloc(void* ptr, std::size_t size) noexcept;
void* __libc_memalign(std::size_t alignment, std::size_t size) noexcept;
}

namespace {
// Usable size, not the requested one: it is what free() gives back, so the two always match.
void* counted(void* p) noexcept {
  if (p != nullptr) note_alloc(malloc_usable_size(p));
  return p;
}
}  // namespace

extern "C" {

void* malloc(std::size_t size) noexcept { return counted(__libc_malloc(size)); }

void free(void* ptr) noexcept {
  if (ptr == nullptr) return;
  note_free(malloc_usable_size(ptr));
  __libc_free(ptr);
}

void* calloc(std::size_t count, std::size_t size) noexcept { return counted(__libc_calloc(count, size)); }

void* realloc(void* ptr, std::size_t size) noexcept {
  const std::size_t old = ptr != nullptr ? malloc_usable_size(ptr) : 0;
  void* q = __libc_realloc(ptr, size);
  if (q != nullptr) {
    note_free(old);
    note_alloc(malloc_usable_size(q));
  } else if (ptr != nullptr && size == 0) {
    note_free(old);  // glibc's realloc(p, 0) frees p
  }
  return q;
}

void* reallocarray(void* ptr, std::size_t count, std::size_t size) noexcept {
  std::size_t bytes = 0;
  if (__builtin_mul_overflow(count, size, &bytes)) return nullptr;
  return realloc(ptr, bytes);
}

void* memalign(std::size_t alignment, std::size_t size) noexcept { return counted(__libc_memalign(alignment, size)); }

void* aligned_alloc(std::size_t alignment, std::size_t size) noexcept {
  return counted(__libc_memalign(alignment, size));
}

int posix_memalign(void** out, std::size_t alignment, std::size_t size) noexcept {
  if (alignment < sizeof(void*) || (alignment & (alignment - 1)) != 0) return 22;  // EINVAL
  void* p = counted(__libc_memalign(alignment, size));
  if (p == nullptr) return 12;  // ENOMEM
  *out = p;
  return 0;
}

void* valloc(std::size_t size) noexcept { return counted(__libc_memalign(4096, size)); }

void* pvalloc(std::size_t size) noexcept { return counted(__libc_memalign(4096, (size + 4095) / 4096 * 4096)); }

}  // extern "C"

#else  // portable path: the replaceable global operator new/delete

namespace {

// Each block carries its size (and the pointer malloc gave) just below the address handed out.
struct Prefix {
  void* raw;
  std::size_t size;
};

void* counted_new(std::size_t size, std::size_t align) noexcept {
  if (align < alignof(std::max_align_t)) align = alignof(std::max_align_t);
  const std::size_t header = align > sizeof(Prefix) ? align : sizeof(Prefix);
  void* raw = std::malloc(size + header + align);
  if (raw == nullptr) return nullptr;
  auto base = reinterpret_cast<std::uintptr_t>(raw) + header;
  base = (base + align - 1) / align * align;
  auto* prefix = reinterpret_cast<Prefix*>(base) - 1;
  prefix->raw = raw;
  prefix->size = size;
  note_alloc(size);
  return reinterpret_cast<void*>(base);
}

void counted_delete(void* p) noexcept {
  if (p == nullptr) return;
  const Prefix* prefix = static_cast<Prefix*>(p) - 1;
  note_free(prefix->size);
  std::free(prefix->raw);
}

void* throwing_new(std::size_t size, std::size_t align) {
  for (;;) {
    if (void* p = counted_new(size == 0 ? 1 : size, align)) return p;
    std::new_handler handler = std::get_new_handler();
    if (handler == nullptr) throw std::bad_alloc();
    handler();
  }
}

}  // namespace

void* operator new(std::size_t size) { return throwing_new(size, 0); }
void* operator new[](std::size_t size) { return throwing_new(size, 0); }
void* operator new(std::size_t size, std::align_val_t al) { return throwing_new(size, static_cast<std::size_t>(al)); }
void* operator new[](std::size_t size, std::align_val_t al) { return throwing_new(size, static_cast<std::size_t>(al)); }
void* operator new(std::size_t size, const std::nothrow_t&) noexcept { return counted_new(size == 0 ? 1 : size, 0); }
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept { return counted_new(size == 0 ? 1 : size, 0); }
void* operator new(std::size_t size, std::align_val_t al, const std::nothrow_t&) noexcept {
  return counted_new(size == 0 ? 1 : size, static_cast<std::size_t>(al));
}
void* operator new[](std::size_t size, std::align_val_t al, const std::nothrow_t&) noexcept {
  return counted_new(size == 0 ? 1 : size, static_cast<std::size_t>(al));
}

void operator delete(void* p) noexcept { counted_delete(p); }
void operator delete[](void* p) noexcept { counted_delete(p); }
void operator delete(void* p, std::size_t) noexcept { counted_delete(p); }
void operator delete[](void* p, std::size_t) noexcept { counted_delete(p); }
void operator delete(void* p, std::align_val_t) noexcept { counted_delete(p); }
void operator delete[](void* p, std::align_val_t) noexcept { counted_delete(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { counted_delete(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { counted_delete(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { counted_delete(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { counted_delete(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { counted_delete(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { counted_delete(p); }

#endif
