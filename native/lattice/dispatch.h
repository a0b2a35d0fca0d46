// The one place where an object's engine is chosen: by its target, once, when it is built.
// Host arrays go to the host target, the CPU engine unless IMPLS_NATIVE_HOST_ENGINE=device
// (or set_host_engine) sends them to the CUDA engine's code on host threads, which is how CI
// runs every line of it.
#pragma once

#include <memory>
#include <string>

#include "lattice/engine.h"

namespace impls {

// "cpu", "device-on-host" or "cuda": the engine strings Python sees.
const char *target_name(Target target);

// The target of host arrays, and changing it (objects already built keep their engine).
Target host_target();
void set_host_target(Target target);
// The target that set_host_engine's `name` ("cpu" or "device") stands for; raises
// std::invalid_argument for another name, or for "device" in a build without it.
Target host_target_named(const std::string &name);

std::unique_ptr<LatticeEngine> make_lattice(Target target, Matrix<const float> features, Stream stream);
std::unique_ptr<DenseCrfEngine> make_dense_crf(Target target, Matrix<const float> unary, Stream stream);

}  // namespace impls
