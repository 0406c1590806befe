#include "uv/uv_error.h"

#include <uv.h>

#include <fmt/core.h>

namespace chronomerge {

std::string uv_error_text(int code) {
  return fmt::format("{} ({})", uv_err_name(code), uv_strerror(code));
}

std::string uv_error_name(int error) {
  char name[64];
  uv_err_name_r(error, name, sizeof(name));
  return name;
}

}  // namespace chronomerge
