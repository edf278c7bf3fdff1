"""The fp16 precision of the ``"onnx"`` engine: the exported network with float16 weights.

:func:`fp16_onnx` turns ``model.onnx`` into ``model-fp16.onnx``: every float32 weight (and
float constant) stored as float16, one ``Cast`` after the input and one before the output, so
the network takes and returns float32 as every other precision does. It is made once and reused
while ``model.onnx`` is the one it was made from (its SHA-256 is in the network's
``metadata_props``). Meant for GPUs (ONNX Runtime's CUDA execution provider runs every operator
of the study network in float16, on tensor cores); on CPU it runs, with no gain.

Why not ``onnxconverter_common`` or ``onnxruntime.transformers.float16``: the latter works with
onnx 1.14 but takes about 20 s for the study network's 13.9 M weights; the former pins its own
onnx and protobuf. This conversion is a NumPy cast per weight and takes well under a second.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..._util import atomic_path
from ...model import ModelInfo

__all__ = ["FP16_ONNX", "fp16_onnx"]

FP16_ONNX = "model-fp16.onnx"
_KEY = "prostate_fast.fp16_source_sha256"


def fp16_onnx(info: ModelInfo, fp32: Path) -> Path:
    """The float16 network of a model folder, made on first use (see the module).

    Parameters
    ----------
    info : ModelInfo
    fp32 : path
        The float32 network (``model.onnx``).

    Returns
    -------
    pathlib.Path
        ``model-fp16.onnx`` in the model folder (in a temporary folder when the model folder is
        read-only).
    """
    import onnx

    folder = info.model_dir
    if not os.access(folder, os.W_OK):  # made anew each time in a temporary folder
        folder = Path(tempfile.mkdtemp(prefix="prostate-fast-fp16-"))
    out = folder / FP16_ONNX
    source = hashlib.sha256(Path(fp32).read_bytes()).hexdigest()
    if out.is_file():
        try:
            meta = {
                p.key: p.value for p in onnx.load(str(out), load_external_data=False).metadata_props
            }
        except Exception:  # noqa: BLE001 - a damaged file of ours is simply made again
            meta = {}
        if meta.get(_KEY) == source:
            return out
        out.unlink()
    model = _to_fp16(onnx, onnx.load(str(fp32)))
    model.metadata_props.add(key=_KEY, value=source)
    with atomic_path(out, overwrite=False) as tmp:
        tmp.write_bytes(model.SerializeToString())
        os.chmod(tmp, 0o644)
    return out


def _to_fp16(onnx: Any, model: Any) -> Any:
    """``model`` (float32 input and output) with float16 weights and compute, float32 I/O."""
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph
    for i, init in enumerate(g.initializer):
        if init.data_type == TensorProto.FLOAT:
            arr = numpy_helper.to_array(init).astype(np.float16)
            g.initializer[i].CopyFrom(numpy_helper.from_array(arr, init.name))
    for node in g.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == TensorProto.FLOAT:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16)))
    inp, outp = g.input[0].name, g.output[0].name
    inner_in, inner_out = f"{inp}__fp16", f"{outp}__fp16"
    for node in g.node:
        node.input[:] = [inner_in if n == inp else n for n in node.input]
        node.output[:] = [inner_out if n == outp else n for n in node.output]
    cast_in = helper.make_node("Cast", [inp], [inner_in], to=TensorProto.FLOAT16, name="to_fp16")
    cast_out = helper.make_node("Cast", [inner_out], [outp], to=TensorProto.FLOAT, name="to_fp32")
    nodes = [cast_in, *g.node, cast_out]
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]  # float32 shapes of inner values: let ONNX Runtime infer them again
    return model
