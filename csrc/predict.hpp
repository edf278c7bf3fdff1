// Inference through MXNet's C predict API, loaded at run time. No Python here.
//
// The package is built without MXNet's headers: the few C functions of c_predict_api.h are
// declared here and looked up with dlsym in the libmxnet.so that the caller names (Python finds
// it through mxnet.libinfo.find_lib_path()). That library is usually already loaded by
// `import mxnet`; dlopen then returns the same instance, so the threads set through
// OMP_NUM_THREADS before that import are the ones used here. The same build therefore works with
// the CPU wheel and with any mxnet-cuXX wheel.
//
// One MxPredictor owns one MXPredCreate handle (never MXPredCreateMultiThread: its handles share
// one input buffer). Calls on one MxPredictor are serialised by a mutex; for parallel inference
// make one MxPredictor per thread. The handle is created for a fixed batch; predict() runs any
// number of samples in chunks of that batch, padding the last chunk with zeros.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace pf {

struct MxApi;  // the C predict API functions of one loaded libmxnet.so

class MxPredictor {
  public:
    // lib_path: libmxnet.so to dlopen. symbol_json: the network's JSON text. params/params_size:
    // the bytes of an MXNet .params file (arg:/aux: names, as HybridBlock.export writes).
    // input_shape: (batch, channels, height, width). dev_type: 1 CPU, 2 GPU.
    // Throws std::runtime_error with dlerror()/MXGetLastError() text on failure.
    MxPredictor(const std::string& lib_path, const std::string& symbol_json, const char* params,
                std::size_t params_size, const std::vector<uint32_t>& input_shape, int dev_type,
                int dev_id, const std::string& input_name);
    ~MxPredictor();
    MxPredictor(const MxPredictor&) = delete;
    MxPredictor& operator=(const MxPredictor&) = delete;

    // Run n samples of sample_size() floats each from x; write n * output_size() floats to out.
    // Throws std::runtime_error when MXNet reports an error or the predictor was closed.
    void predict(const float* x, std::size_t n, float* out);

    // Free the MXNet handle now (idempotent). The library stays loaded (never dlclose'd: MXNet's
    // engine threads may outlive us).
    void close();

    bool closed() const { return handle_ == nullptr; }
    uint32_t batch_size() const { return shape_[0]; }
    std::size_t sample_size() const;  // channels * height * width
    std::size_t output_size() const { return out_size_; }  // values per sample (n_classes)
    const std::vector<uint32_t>& input_shape() const { return shape_; }

  private:
    std::string error(const char* what) const;

    const MxApi* api_ = nullptr;
    void* handle_ = nullptr;
    std::vector<uint32_t> shape_;
    std::string input_name_;
    std::size_t out_size_ = 0;
    std::vector<float> in_buf_, out_buf_;
    std::mutex mu_;
};

}  // namespace pf
