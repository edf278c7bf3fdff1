// The only pybind11 file: module prostate_fast._native. Each kernel family lives in its own
// csrc/<stage>.hpp/.cpp pair; this file converts arrays, releases the GIL and calls them.
//
// Nothing is validated here: every function is private, called only by its Python wrapper, which
// checked shapes, dtypes and ranges and resolved n_threads (>= 1) before the call (see
// common.hpp). Output arrays are bound with noconvert(): a converted copy would lose the writes.
#include <cstdint>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "blend.hpp"
#include "common.hpp"
#include "jpegcrop.hpp"
#include "label.hpp"
#include "marker.hpp"
#include "predict.hpp"
#include "tissue.hpp"

namespace py = pybind11;

namespace {

using u8_in = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;
using i64_out = py::array_t<int64_t, py::array::c_style>;

// tissue: white pixels per tile (see csrc/tissue.hpp); wrapper: prostate_fast.tissue.
void count_white(const u8_in& tiles, int lo, int spread, i64_out& out, int n_threads) {
    const uint8_t* t = tiles.data();
    const std::ptrdiff_t n = tiles.shape(0), pixels = tiles.shape(1) / 3;
    int64_t* o = out.mutable_data();
    py::gil_scoped_release release;
    pf::count_white(t, n, pixels, static_cast<uint8_t>(lo), static_cast<uint8_t>(spread), o,
                    n_threads);
}

// label: painted-copy statistics per tile (see csrc/label.hpp); wrapper: prostate_fast.label.
void painted_tile_stats(const u8_in& original, const u8_in& painted, const u8_in& colours,
                        int threshold, int colour_tol, i64_out& counts, i64_out& sums,
                        int n_threads) {
    pf::PaintedRule rule;
    rule.threshold = threshold;
    rule.colour_tol = colour_tol;
    rule.colours = colours.data();
    rule.n_colours = static_cast<int>(colours.shape(0));
    const uint8_t* o = original.data();
    const uint8_t* p = painted.data();
    const std::ptrdiff_t n = original.shape(0), pixels = original.shape(1) * original.shape(2);
    int64_t* c = counts.mutable_data();
    int64_t* s = sums.mutable_data();
    py::gil_scoped_release release;
    pf::painted_tile_stats(o, p, n, pixels, rule, c, s, n_threads);
}

}  // namespace

// predict: MXNet C predict API engine (see csrc/predict.hpp), bound as _native.MxPredictor.
namespace {

using f32_in = py::array_t<float, py::array::c_style | py::array::forcecast>;

std::unique_ptr<pf::MxPredictor> make_mx_predictor(const std::string& lib_path,
                                                   const std::string& symbol_json,
                                                   const py::bytes& params,
                                                   const std::vector<uint32_t>& input_shape,
                                                   int dev_type, int dev_id,
                                                   const std::string& input_name) {
    char* buf = nullptr;
    Py_ssize_t size = 0;
    if (PyBytes_AsStringAndSize(params.ptr(), &buf, &size) != 0) throw py::error_already_set();
    py::gil_scoped_release release;  // parsing the params and binding the graph take a while
    return std::make_unique<pf::MxPredictor>(lib_path, symbol_json, buf,
                                             static_cast<std::size_t>(size), input_shape,
                                             dev_type, dev_id, input_name);
}

// x: (n, C, H, W) with the predictor's C, H, W: checked by Predictor.run (predict.engines).
py::array_t<float> mx_predict(pf::MxPredictor& self, const f32_in& x) {
    const auto n = static_cast<std::size_t>(x.shape(0));
    py::array_t<float> out({static_cast<py::ssize_t>(n),
                            static_cast<py::ssize_t>(self.output_size())});
    const float* src = x.data();
    float* dst = out.mutable_data();
    {
        py::gil_scoped_release release;
        self.predict(src, n, dst);
    }
    return out;
}

void bind_predict(py::module_& m) {
    py::class_<pf::MxPredictor>(m, "MxPredictor",
                                "One MXNet C predict API handle (MXPredCreate) on a libmxnet.so "
                                "loaded at run time. Calls release the GIL.")
        .def(py::init(&make_mx_predictor), py::arg("lib_path"), py::arg("symbol_json"),
             py::arg("params"), py::arg("input_shape"), py::arg("dev_type") = 1,
             py::arg("dev_id") = 0, py::arg("input_name") = "data")
        .def("predict", &mx_predict, py::arg("x"),
             "float32 (n, C, H, W) -> float32 (n, outputs); chunks of batch_size, last padded.")
        .def("close", &pf::MxPredictor::close, py::call_guard<py::gil_scoped_release>(),
             "Free the MXNet handle now (idempotent).")
        .def_property_readonly("closed", &pf::MxPredictor::closed)
        .def_property_readonly("batch_size", &pf::MxPredictor::batch_size)
        .def_property_readonly("output_size", &pf::MxPredictor::output_size)
        .def_property_readonly("input_shape", [](const pf::MxPredictor& self) {
            const auto& s = self.input_shape();
            return py::make_tuple(s[0], s[1], s[2], s[3]);
        });
}

// blend: tile overlay colours over one strip, in place (see csrc/blend.hpp); wrapper:
// prostate_fast.overlay.blend_tiles (and write_overlay, on the tables of blend_tables).
void blend_strip(py::array_t<uint8_t, py::array::c_style>& image, int64_t x0, int64_t y0,
                 const py::array_t<int16_t, py::array::c_style>& cls,
                 const py::array_t<uint16_t, py::array::c_style>& alpha,
                 const py::array_t<uint8_t, py::array::c_style>& outline, const u8_in& colours,
                 int64_t tile, int64_t stride, int64_t outline_width, int n_threads) {
    pf::BlendTable t;
    t.cls = cls.data();
    t.alpha = alpha.data();
    t.outline = outline.data();
    t.rows = cls.shape(0);
    t.cols = cls.shape(1);
    t.colours = colours.data();
    t.tile = tile;
    t.stride = stride;
    t.outline_width = outline_width;
    uint8_t* img = image.mutable_data();
    const std::ptrdiff_t h = image.shape(0), w = image.shape(1);
    py::gil_scoped_release release;
    pf::blend_strip(img, h, w, x0, y0, t, n_threads);
}

// jpegcrop: lossless DCT-domain crops of one JPEG (see csrc/jpegcrop.hpp); wrapper:
// prostate_fast.slide.jpegcrop.jpeg_crop. None when the kernel refuses (the caller re-encodes).
py::object jpeg_crop(const py::bytes& data, const py::object& tables,
                     const std::vector<std::tuple<int, int, int, int>>& rects) {
    char* d = nullptr;
    char* t = nullptr;
    Py_ssize_t dn = 0, tn = 0;
    if (PyBytes_AsStringAndSize(data.ptr(), &d, &dn) != 0) throw py::error_already_set();
    py::bytes tables_bytes = tables.is_none() ? py::bytes() : tables.cast<py::bytes>();
    if (PyBytes_AsStringAndSize(tables_bytes.ptr(), &t, &tn) != 0) throw py::error_already_set();
    std::vector<pf::CropRect> r;
    r.reserve(rects.size());
    for (const auto& [x, y, w, h] : rects) r.push_back({x, y, w, h});
    std::vector<std::string> out;
    bool ok;
    {
        py::gil_scoped_release release;
        ok = pf::jpeg_crop(reinterpret_cast<const uint8_t*>(d), static_cast<std::size_t>(dn),
                           reinterpret_cast<const uint8_t*>(t), static_cast<std::size_t>(tn), r,
                           out);
    }
    if (!ok) return py::none();
    py::list result;
    for (const std::string& o : out) result.append(py::bytes(o));
    return std::move(result);
}

}  // namespace

// label: marker-colour tally per hue (see csrc/marker.hpp); wrapper:
// prostate_fast.label.marker.MarkerTally.add. Adds into count, matched, sums.
namespace {

void marker_tally(const u8_in& original, const u8_in& painted,
                  const py::array_t<int32_t, py::array::c_style | py::array::forcecast>& colours,
                  int threshold, int min_saturation, int colour_tol, int step, i64_out& count,
                  i64_out& matched, i64_out& sums, int n_threads) {
    pf::MarkerRule rule;
    rule.threshold = threshold;
    rule.min_saturation = min_saturation;
    rule.colour_tol = colour_tol;
    rule.colours = colours.data();
    rule.n_colours = static_cast<int>(colours.shape(0));
    rule.step = step;
    const uint8_t* o = original.data();
    const uint8_t* p = painted.data();
    const std::ptrdiff_t n = original.shape(0), h = original.shape(1), w = original.shape(2);
    int64_t* c = count.mutable_data();
    int64_t* m = matched.mutable_data();
    int64_t* s = sums.mutable_data();
    py::gil_scoped_release release;
    pf::marker_tally(o, p, n, h, w, rule, c, m, s, n_threads);
}

void bind_marker(py::module_& m) {
    m.def("marker_tally", &marker_tally, py::arg("original"), py::arg("painted"),
          py::arg("colours"), py::arg("threshold"), py::arg("min_saturation"),
          py::arg("colour_tol"), py::arg("step"), py::arg("count").noconvert(),
          py::arg("matched").noconvert(), py::arg("sums").noconvert(), py::arg("n_threads"),
          "Changed marker-saturated pixels per hue bin: add to count, matched, sums (GIL "
          "released).");
}

}  // namespace

PYBIND11_MODULE(_native, m) {
    m.doc() = "prostate-fast native kernels (C++ with OpenMP); private: call the Python wrappers";
    m.def("built_with_openmp", &pf::built_with_openmp,
          "True when this module was compiled with OpenMP.");
    m.def("count_white", &count_white, py::arg("tiles"), py::arg("lo"), py::arg("spread"),
          py::arg("out").noconvert(), py::arg("n_threads"),
          "White pixels of each tile of (n, pixels * 3) uint8 into int64 out (GIL released).");
    m.def("painted_tile_stats", &painted_tile_stats, py::arg("original"), py::arg("painted"),
          py::arg("colours"), py::arg("threshold"), py::arg("colour_tol"),
          py::arg("counts").noconvert(), py::arg("sums").noconvert(), py::arg("n_threads"),
          "Per tile: marked pixel count and painted RGB sums over marked pixels (GIL released).");
    bind_predict(m);
    bind_marker(m);
    m.def("blend_strip", &blend_strip, py::arg("image").noconvert(), py::arg("x0"),
          py::arg("y0"), py::arg("cls"), py::arg("alpha"), py::arg("outline"), py::arg("colours"),
          py::arg("tile"), py::arg("stride"), py::arg("outline_width"), py::arg("n_threads"),
          "Blend class colours over the tiles of one strip, in place (GIL released).");
    m.def("jpeg_crop", &jpeg_crop, py::arg("data"), py::arg("tables"), py::arg("rects"),
          "Lossless crops (x, y, w, h) of a baseline JPEG as JPEGs, or None (GIL released).");
}
