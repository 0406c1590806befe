// UvHandle<T>: the single owner of one libuv handle.
//
// The handle lives on the heap and is freed only in its close callback, as
// libuv requires; the owner may be destroyed earlier. close() clears
// handle->data first, so callbacks that check `data` never reach a dead
// owner. Not copyable, not movable: the handle's address is registered with
// the loop.
#pragma once

#include <uv.h>

namespace chronomerge {

template <typename T>
class UvHandle {
 public:
  UvHandle() : handle_(new T{}) {}
  ~UvHandle() { close(); }
  UvHandle(const UvHandle&) = delete;
  UvHandle& operator=(const UvHandle&) = delete;

  T* get() const { return handle_; }
  uv_handle_t* base() const { return reinterpret_cast<uv_handle_t*>(handle_); }
  uv_stream_t* stream() const { return reinterpret_cast<uv_stream_t*>(handle_); }

  // Call after the uv_*_init that succeeded: from then on the memory
  // belongs to the loop until the close callback.
  void initialized(void* owner) {
    initialized_ = true;
    base()->data = owner;
  }
  bool open() const { return handle_ != nullptr && initialized_; }

  // Idempotent. Without a successful init the memory is freed at once.
  void close() {
    if (handle_ == nullptr) return;
    if (initialized_) {
      base()->data = nullptr;
      if (!uv_is_closing(base())) {
        uv_close(base(), [](uv_handle_t* h) { delete reinterpret_cast<T*>(h); });
      }
    } else {
      delete handle_;
    }
    handle_ = nullptr;
    initialized_ = false;
  }

 private:
  T* handle_;
  bool initialized_ = false;
};

}  // namespace chronomerge
