// MXNet C predict API engine (see predict.hpp).
#include "predict.hpp"

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <stdexcept>

#if defined(_WIN32)
#error "prostate-fast's native MXNet engine supports Linux and macOS (dlopen) only"
#endif
#include <dlfcn.h>

namespace pf {

namespace {

// The C predict API, declared from MXNet 1.x's c_predict_api.h (types: mx_uint = uint32_t,
// PredictorHandle = void*). Every function returns 0 on success and -1 on failure, with the
// message in MXGetLastError() (thread-local in MXNet, so read on the failing thread).
using PredictorHandle = void*;
using FnCreate = int (*)(const char* symbol_json_str, const void* param_bytes, int param_size,
                         int dev_type, int dev_id, uint32_t num_input_nodes,
                         const char** input_keys, const uint32_t* input_shape_indptr,
                         const uint32_t* input_shape_data, PredictorHandle* out);
using FnSetInput = int (*)(PredictorHandle handle, const char* key, const float* data,
                           uint32_t size);
using FnForward = int (*)(PredictorHandle handle);
using FnGetOutputShape = int (*)(PredictorHandle handle, uint32_t index, uint32_t** shape_data,
                                 uint32_t* shape_ndim);
using FnGetOutput = int (*)(PredictorHandle handle, uint32_t index, float* data, uint32_t size);
using FnFree = int (*)(PredictorHandle handle);
using FnLastError = const char* (*)();

}  // namespace

struct MxApi {
    FnCreate create = nullptr;
    FnSetInput set_input = nullptr;
    FnForward forward = nullptr;
    FnGetOutputShape get_output_shape = nullptr;
    FnGetOutput get_output = nullptr;
    FnFree free = nullptr;
    FnLastError last_error = nullptr;
};

namespace {

template <class F>
F lookup(void* lib, const std::string& path, const char* name) {
    dlerror();
    void* sym = dlsym(lib, name);
    if (sym == nullptr) {
        const char* err = dlerror();
        throw std::runtime_error(path + ": not an MXNet library with the C predict API (" + name +
                                 " missing: " + (err ? err : "null symbol") + ")");
    }
    F f;
    static_assert(sizeof(f) == sizeof(sym), "function and data pointers differ in size");
    std::memcpy(&f, &sym, sizeof(f));
    return f;
}

// Libraries are opened once per path and never closed (MXNet's engine threads live as long as
// the process); the function tables live as long, too.
const MxApi* load_api(const std::string& path) {
    static std::mutex mu;
    static std::map<std::string, std::unique_ptr<MxApi>> cache;
    std::lock_guard<std::mutex> lock(mu);
    auto it = cache.find(path);
    if (it != cache.end()) return it->second.get();
    dlerror();
    void* lib = dlopen(path.c_str(), RTLD_LAZY | RTLD_LOCAL);
    if (lib == nullptr) {
        const char* err = dlerror();
        throw std::runtime_error("cannot load " + path + ": " + (err ? err : "dlopen failed"));
    }
    auto api = std::make_unique<MxApi>();
    api->create = lookup<FnCreate>(lib, path, "MXPredCreate");
    api->set_input = lookup<FnSetInput>(lib, path, "MXPredSetInput");
    api->forward = lookup<FnForward>(lib, path, "MXPredForward");
    api->get_output_shape = lookup<FnGetOutputShape>(lib, path, "MXPredGetOutputShape");
    api->get_output = lookup<FnGetOutput>(lib, path, "MXPredGetOutput");
    api->free = lookup<FnFree>(lib, path, "MXPredFree");
    api->last_error = lookup<FnLastError>(lib, path, "MXGetLastError");
    const MxApi* out = api.get();
    cache.emplace(path, std::move(api));
    return out;
}

}  // namespace

std::string MxPredictor::error(const char* what) const {
    const char* msg = api_ != nullptr ? api_->last_error() : nullptr;
    std::string text = msg != nullptr ? msg : "";
    // MXNet appends a C++ stack trace after the message; keep the first paragraph.
    for (const char* marker : {"\nStack trace", "\n\n"}) {
        const auto cut = text.find(marker);
        if (cut != std::string::npos) text.resize(cut);
    }
    while (!text.empty() && (text.back() == ' ' || text.back() == '\n' || text.back() == ':'))
        text.pop_back();
    return std::string(what) + " failed: " + (text.empty() ? "unknown MXNet error" : text);
}

MxPredictor::MxPredictor(const std::string& lib_path, const std::string& symbol_json,
                         const char* params, std::size_t params_size,
                         const std::vector<uint32_t>& input_shape, int dev_type, int dev_id,
                         const std::string& input_name)
    : shape_(input_shape), input_name_(input_name) {
    if (shape_.size() != 4 || std::any_of(shape_.begin(), shape_.end(),
                                          [](uint32_t v) { return v == 0; }))
        throw std::invalid_argument("input_shape must be four positive sizes (N, C, H, W)");
    if (params_size > static_cast<std::size_t>(INT32_MAX))
        throw std::invalid_argument("params file larger than 2 GiB: the C predict API cannot load it");
    const uint64_t total = static_cast<uint64_t>(shape_[0]) * shape_[1] * shape_[2] * shape_[3];
    if (total > UINT32_MAX) throw std::invalid_argument("input batch too large for MXPredSetInput");
    api_ = load_api(lib_path);
    const char* keys[1] = {input_name_.c_str()};
    const uint32_t indptr[2] = {0, 4};
    PredictorHandle h = nullptr;
    if (api_->create(symbol_json.c_str(), params, static_cast<int>(params_size), dev_type, dev_id,
                     1, keys, indptr, shape_.data(), &h) != 0)
        throw std::runtime_error(error("MXPredCreate"));
    handle_ = h;
    uint32_t* oshape = nullptr;
    uint32_t ondim = 0;
    if (api_->get_output_shape(handle_, 0, &oshape, &ondim) != 0) {
        const std::string msg = error("MXPredGetOutputShape");
        close();
        throw std::runtime_error(msg);
    }
    if (ondim < 1 || oshape[0] != shape_[0]) {
        close();
        throw std::runtime_error("network output does not have the batch as its first axis");
    }
    out_size_ = 1;
    for (uint32_t d = 1; d < ondim; ++d) out_size_ *= oshape[d];
    in_buf_.assign(static_cast<std::size_t>(total), 0.0f);
    out_buf_.assign(out_size_ * shape_[0], 0.0f);
}

MxPredictor::~MxPredictor() { close(); }

void MxPredictor::close() {
    std::lock_guard<std::mutex> lock(mu_);
    if (handle_ != nullptr) {
        api_->free(handle_);
        handle_ = nullptr;
    }
}

std::size_t MxPredictor::sample_size() const {
    return static_cast<std::size_t>(shape_[1]) * shape_[2] * shape_[3];
}

void MxPredictor::predict(const float* x, std::size_t n, float* out) {
    std::lock_guard<std::mutex> lock(mu_);
    if (handle_ == nullptr) throw std::runtime_error("the predictor was closed");
    const std::size_t batch = shape_[0];
    const std::size_t in_per = sample_size();
    const auto in_total = static_cast<uint32_t>(batch * in_per);
    const auto out_total = static_cast<uint32_t>(batch * out_size_);
    for (std::size_t start = 0; start < n; start += batch) {
        const std::size_t k = std::min(batch, n - start);
        const float* src = x + start * in_per;
        if (k < batch) {  // pad the last chunk: the handle's shape is fixed
            std::copy(src, src + k * in_per, in_buf_.begin());
            std::fill(in_buf_.begin() + static_cast<std::ptrdiff_t>(k * in_per), in_buf_.end(),
                      0.0f);
            src = in_buf_.data();
        }
        if (api_->set_input(handle_, input_name_.c_str(), src, in_total) != 0)
            throw std::runtime_error(error("MXPredSetInput"));
        if (api_->forward(handle_) != 0) throw std::runtime_error(error("MXPredForward"));
        float* dst = k < batch ? out_buf_.data() : out + start * out_size_;
        if (api_->get_output(handle_, 0, dst, out_total) != 0)
            throw std::runtime_error(error("MXPredGetOutput"));
        if (k < batch) std::copy(out_buf_.begin(), out_buf_.begin() + k * out_size_,
                                 out + start * out_size_);
    }
}

}  // namespace pf
