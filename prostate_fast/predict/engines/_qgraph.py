"""The int8 graph of :mod:`.int8`: activation ranges (:func:`calibrate`) and the rewrite (:func:`quantize`).

The rewrite is ONNX Runtime's QOperator form, written with ``onnx.helper`` of onnx 1.14:

* ``Conv`` with constant weights → ``QLinearConv``: weights int8, symmetric, one scale per output
  channel (``max |w| / 127``); bias int32 at ``x_scale * w_scale``; uint8 input and output. A
  ``Relu`` that is the convolution's only consumer is folded into the output range (zero point
  0: the uint8 saturation is the ReLU). A convolution whose input channels are not a multiple of
  :data:`CHANNEL_ALIGN` (the RGB input's 3) gets its uint8 input padded with zero-point channels
  (``Pad``) and zero weights for them: the result is the same, and ONNX Runtime then runs it with
  MLAS's direct symmetric int8 kernel (``MlasConvSym``, which needs input channels in fours)
  instead of im2col and a general int8 GEMM, about 1.4x faster for the study CNN's first layer.
* ``MaxPool`` (one output) and ``Flatten`` of a uint8 tensor run on it as they are (exact).
* ``Gemm`` with constant ``B`` (``alpha = beta = 1``, no ``transA``) whose input is already uint8
  (a pooled convolution output, exact) → ``QGemm`` (ONNX Runtime's ``com.microsoft`` domain)
  with per-column int8 weights, int32 bias and float32 output. A ``Gemm`` on a float tensor (the
  study CNN's sigmoid outputs) stays float32: quantizing those activations is where an
  undertrained network loses its AUC, and those layers cost under 0.1 % of the FLOP.
* Everything else stays float32: ``QuantizeLinear`` / ``DequantizeLinear`` are inserted where a
  tensor changes form. Activations are uint8, asymmetric, over the calibrated [min, max] widened
  to include 0.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["CHANNEL_ALIGN", "calibrate", "fold_batchnorm", "quantize"]

#: Input channels of an int8 convolution are padded to a multiple of this (MLAS's ConvSym kernels).
CHANNEL_ALIGN = 4

Ranges = dict[str, tuple[float, float]]


def calibrate(
    onnx: Any, model: Any, session: Callable[[bytes], Any], x: np.ndarray, batch: int
) -> Ranges:
    """[min, max] of the graph input and of every node output over the inputs ``x``."""
    from onnx import TensorProto, helper

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    names = [out for node in probe.graph.node for out in node.output if out and out not in have]
    probe.graph.output.extend(
        helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names
    )
    sess = session(probe.SerializeToString())
    inp = sess.get_inputs()[0].name
    outs = [o.name for o in sess.get_outputs()]
    lo: dict[str, float] = {inp: float(x.min())}
    hi: dict[str, float] = {inp: float(x.max())}
    for s in range(0, len(x), batch):
        for name, value in zip(outs, sess.run(outs, {inp: x[s : s + batch]}), strict=True):
            if value.dtype != np.float32 or value.size == 0:
                continue
            lo[name] = min(lo.get(name, np.inf), float(value.min()))
            hi[name] = max(hi.get(name, -np.inf), float(value.max()))
    return {n: (lo[n], hi[n]) for n in lo}


def fold_batchnorm(onnx: Any, model: Any) -> Any:
    """``model`` with each ``BatchNormalization`` that is the only consumer of a constant-weight
    ``Conv`` folded into that convolution (a new model; the same function, in float32).

    ``w' = w * g``, ``b' = (b - mean) * g + beta`` with ``g = scale / sqrt(var + eps)``: the
    convolution's output is then the normalised one, so its ReLU (and a residual ``Add``) can be
    fused in int8 instead of running dequantize, normalise, quantize around every convolution.
    """
    from onnx import numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    consts = {i.name: i for i in g.initializer}
    consumers: dict[str, int] = defaultdict(int)
    for node in g.node:
        for name in node.input:
            consumers[name] += 1
    producer = {o: node for node in g.node for o in node.output}
    drop = []
    for bn in g.node:
        conv = producer.get(bn.input[0])
        ok = bn.op_type == "BatchNormalization" and len(bn.output) == 1 and conv is not None
        ok = ok and conv.op_type == "Conv" and consumers[conv.output[0]] == 1
        if not (ok and conv.input[1] in consts and all(x in consts for x in bn.input[1:5])):
            continue
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        gamma, beta, mean, var = (numpy_helper.to_array(consts[x]) for x in bn.input[1:5])
        w = numpy_helper.to_array(consts[conv.input[1]]).astype(np.float64)
        has_b = len(conv.input) > 2 and conv.input[2] in consts
        b = numpy_helper.to_array(consts[conv.input[2]]) if has_b else np.zeros(len(w))
        k = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
        w_new = (w * k.reshape(-1, *[1] * (w.ndim - 1))).astype(np.float32)
        b_new = ((b - mean) * k + beta).astype(np.float32)
        names = (f"{conv.output[0]}_bnfold_w", f"{conv.output[0]}_bnfold_b")
        g.initializer.extend(
            numpy_helper.from_array(a, n) for a, n in zip((w_new, b_new), names, strict=True)
        )
        del conv.input[1:]
        conv.input.extend(names)
        conv.output[0] = bn.output[0]
        drop.append(bn)
    for bn in drop:
        g.node.remove(bn)
    used = {name for node in g.node for name in node.input}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    return out


def _uint8_params(rng: tuple[float, float]) -> tuple[float, int]:
    """(scale, zero point) of an asymmetric uint8 range that contains 0."""
    rmin, rmax = min(0.0, rng[0]), max(0.0, rng[1])
    scale = (rmax - rmin) / 255.0 or 1.0
    return scale, int(np.clip(round(-rmin / scale), 0, 255))


def _int8_weights(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel int8 of ``w`` along ``axis``: (int8 weights, float32 scales)."""
    moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    scale = (np.abs(moved).max(axis=1) / 127.0).astype(np.float32)
    scale[scale == 0] = 1.0
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.rint(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale


class _Rewrite:
    """The state of one rewrite: new nodes and initializers, and each tensor's uint8 form."""

    def __init__(self, onnx: Any, model: Any, ranges: Ranges) -> None:
        from onnx import numpy_helper

        self.h, self.nh = onnx.helper, numpy_helper
        self.ranges = ranges
        self.consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        self.consumers: dict[str, list[Any]] = defaultdict(list)
        for node in model.graph.node:
            for name in node.input:
                self.consumers[name].append(node)
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.quant: dict[str, tuple[str, str, str]] = {}  # float name -> (uint8, scale, zp)
        self.floats: set[str] = {i.name for i in model.graph.input} | set(self.consts)
        self.used: set[str] = set()
        self.padded: dict[tuple[str, int], str] = {}  # (uint8 name, channels) -> padded name

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(self.nh.from_array(np.asarray(value), name))
        self.used.add(name)
        return name

    def qparams(self, name: str) -> tuple[str, str]:
        scale, zp = _uint8_params(self.ranges[name])
        s = self.const(f"{name}_q_scale", np.array(scale, np.float32))
        z = self.const(f"{name}_q_zp", np.array(zp, np.uint8))
        return s, z

    def uint8(self, name: str) -> tuple[str, str, str]:
        """The uint8 form of float tensor ``name`` (a QuantizeLinear when it has none yet)."""
        if name not in self.quant:
            s, z = self.qparams(name)
            self.nodes.append(self.h.make_node("QuantizeLinear", [name, s, z], [f"{name}_q"]))
            self.quant[name] = (f"{name}_q", s, z)
        return self.quant[name]

    def float(self, name: str) -> None:
        """Make float tensor ``name`` exist (a DequantizeLinear of its uint8 form if needed)."""
        if name and name not in self.floats:
            q, s, z = self.quant[name]
            self.nodes.append(self.h.make_node("DequantizeLinear", [q, s, z], [name]))
            self.floats.add(name)

    def keep(self, node: Any) -> None:
        for name in node.input:
            self.float(name)
        self.nodes.append(node)
        self.floats.update(node.output)

    def relu_after(self, node: Any) -> tuple[Any, str]:
        """(the Relu that is ``node``'s only consumer or None, the name of the result)."""
        after = self.consumers[node.output[0]]
        relu = after[0] if len(after) == 1 and after[0].op_type == "Relu" else None
        return relu, (relu.output[0] if relu is not None else node.output[0])

    def add(self, node: Any) -> Any:
        """QLinearAdd for ``node`` (a following Relu folded); returns that Relu (or None)."""
        relu, out = self.relu_after(node)
        inputs = [name for x in node.input for name in self.uint8(x)]
        ys, yz = self.qparams(out)
        self.nodes.append(
            self.h.make_node("QLinearAdd", [*inputs, ys, yz], [f"{out}_q"], domain="com.microsoft")
        )
        self.quant[out] = (f"{out}_q", ys, yz)
        return relu

    def global_pool(self, node: Any) -> None:
        """QLinearGlobalAveragePool of a uint8 tensor (NCHW)."""
        xq, xs, xz = self.quant[node.input[0]]
        out = node.output[0]
        ys, yz = self.qparams(out)
        self.nodes.append(
            self.h.make_node(
                "QLinearGlobalAveragePool",
                [xq, xs, xz, ys, yz],
                [f"{out}_q"],
                domain="com.microsoft",
                channels_last=0,
            )
        )
        self.quant[out] = (f"{out}_q", ys, yz)

    def pad_channels(self, xq: str, xz: str, add: int) -> str:
        """``xq`` (uint8 NCHW) with ``add`` more channels of its zero point (a Pad node, once)."""
        key = (xq, add)
        if key not in self.padded:
            pads = self.const(f"{xq}_pad{add}", np.array([0, 0, 0, 0, 0, add, 0, 0], np.int64))
            name = f"{xq}_pad{add}_out"
            self.nodes.append(self.h.make_node("Pad", [xq, pads, xz], [name], mode="constant"))
            self.padded[key] = name
        return self.padded[key]

    def conv(self, node: Any) -> Any:
        """QLinearConv for ``node``; returns the Relu folded into it (or None)."""
        relu, out = self.relu_after(node)
        xq, xs, xz = self.uint8(node.input[0])
        w = self.consts[node.input[1]]
        wq, ws = _int8_weights(w, 0)
        add = -w.shape[1] % CHANNEL_ALIGN
        if add and w.ndim == 4 and _group(node) == 1:  # zero weights on zero-point channels
            wq = np.concatenate([wq, np.zeros((len(wq), add, *wq.shape[2:]), np.int8)], axis=1)
            xq = self.pad_channels(xq, xz, add)
        bias = self.consts[node.input[2]] if len(node.input) > 2 and node.input[2] else 0.0
        x_scale = _uint8_params(self.ranges[node.input[0]])[0]
        bq = np.rint(np.broadcast_to(bias, ws.shape) / (x_scale * ws)).astype(np.int32)
        ys, yz = self.qparams(out)
        n = node.output[0]
        inputs = [xq, xs, xz, self.const(f"{n}_w_q", wq), self.const(f"{n}_w_scale", ws)]
        inputs += [self.const(f"{n}_w_zp", np.zeros(len(ws), np.int8)), ys, yz]
        inputs.append(self.const(f"{n}_b_q", bq))
        attrs = {a.name: self.h.get_attribute_value(a) for a in node.attribute}
        self.nodes.append(self.h.make_node("QLinearConv", inputs, [f"{out}_q"], **attrs))
        self.quant[out] = (f"{out}_q", ys, yz)
        return relu

    def gemm(self, node: Any) -> None:
        attrs = {a.name: self.h.get_attribute_value(a) for a in node.attribute}
        aq, as_, az = self.uint8(node.input[0])
        trans_b = int(attrs.get("transB", 0))
        b = self.consts[node.input[1]]
        bq, bs = _int8_weights(b, 0 if trans_b else 1)
        bias = self.consts[node.input[2]] if len(node.input) > 2 and node.input[2] else 0.0
        a_scale = _uint8_params(self.ranges[node.input[0]])[0]
        cq = np.rint(np.broadcast_to(bias, bs.shape) / (a_scale * bs)).astype(np.int32)
        n = node.output[0]
        inputs = [aq, as_, az, self.const(f"{n}_b_q", bq), self.const(f"{n}_b_scale", bs)]
        inputs += [self.const(f"{n}_b_zp", np.zeros(len(bs), np.int8))]
        inputs.append(self.const(f"{n}_c_q", cq))
        self.nodes.append(
            self.h.make_node(
                "QGemm", inputs, [n], domain="com.microsoft", transA=0, transB=trans_b, alpha=1.0
            )
        )
        self.floats.add(n)


def _group(node: Any) -> int:
    return next((int(a.i) for a in node.attribute if a.name == "group"), 1)


def _gemm_ok(node: Any, consts: dict[str, np.ndarray]) -> bool:
    attrs = {a.name: a for a in node.attribute}
    plain = all(attrs[k].f == 1.0 if k in attrs else True for k in ("alpha", "beta")) and not (
        attrs["transA"].i if "transA" in attrs else 0
    )
    return plain and node.input[1] in consts and consts[node.input[1]].ndim == 2


def quantize(onnx: Any, model: Any, ranges: Ranges, *, dense: bool = True) -> Any:
    """The int8 QOperator graph of float32 ``model`` with activation ``ranges`` (a new model);
    ``dense=False`` keeps every ``Gemm`` layer in float32 (else those on uint8 input are int8)."""
    rw = _Rewrite(onnx, model, ranges)
    folded: set[int] = set()
    for node in model.graph.node:
        if id(node) in folded:
            continue
        op = node.op_type
        if op == "Conv" and node.input[1] in rw.consts and node.input[0] in ranges:
            relu = rw.conv(node)
            if relu is not None:
                folded.add(id(relu))
        elif op == "Add" and len(node.input) == 2 and all(x in ranges for x in node.input):
            relu = rw.add(node)
            if relu is not None:
                folded.add(id(relu))
        elif op == "GlobalAveragePool" and node.input[0] in rw.quant and node.output[0] in ranges:
            rw.global_pool(node)
        elif op in ("MaxPool", "Flatten") and len(node.output) == 1 and node.input[0] in rw.quant:
            q, s, z = rw.quant[node.input[0]]
            attrs = {a.name: rw.h.get_attribute_value(a) for a in node.attribute}
            out = node.output[0]
            rw.nodes.append(rw.h.make_node(op, [q], [f"{out}_q"], **attrs))
            rw.quant[out] = (f"{out}_q", s, z)
        elif dense and op == "Gemm" and _gemm_ok(node, rw.consts) and node.input[0] in rw.quant:
            rw.gemm(node)
        else:
            rw.keep(node)
    for out in model.graph.output:
        rw.float(out.name)
    needed = {name for node in rw.nodes for name in node.input}
    inits = [i for i in model.graph.initializer if i.name in needed] + rw.inits
    graph = rw.h.make_graph(
        rw.nodes, model.graph.name, list(model.graph.input), list(model.graph.output), inits
    )
    opsets = [o for o in model.opset_import if o.domain not in ("", "ai.onnx")]
    opsets += [rw.h.make_opsetid("", max(13, _opset(model))), rw.h.make_opsetid("com.microsoft", 1)]
    out = rw.h.make_model(graph, opset_imports=opsets, producer_name="prostate_fast int8")
    out.ir_version = model.ir_version
    return out


def _opset(model: Any) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=13)
