// Bindings that exist for the tests and the benchmarks (test_hooks.cpp).
#pragma once

#include <nanobind/nanobind.h>

namespace impls {
namespace python {

void bind_test_hooks(nanobind::module_ &m);

}  // namespace python
}  // namespace impls
