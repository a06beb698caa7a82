"""Host side of a program's tensors: numpy arrays <-> the DRAM images the NPU reads and writes.

Everything here follows the program file's own description of each tensor
(``npu.npuz.TensorLayout``), so a runtime needs nothing but the program.
"""
from __future__ import annotations

from functools import lru_cache

import numba
import numpy as np

from npu.numerics import mfu, mfu_kernels
from npu.numerics.pack import unpack_floats
from npu.npuz import TensorDesc

from .layout import ActLayout


def windows(x: np.ndarray, kernel, stride, pads, out_hw) -> np.ndarray:
    """(OH*OW, kh*kw, C) windows of a C x H x W array, taps in row-major order.

    Output pixel (oy, ox) reads rows ``sy*oy + ky - top`` and columns
    ``sx*ox + kx - left`` (``pads`` starts with top, left); every position
    outside the array is zero.
    """
    kh, kw = kernel
    sy, sx = stride
    top, left = pads[0], pads[1]
    oh, ow = out_hw
    c, h, w = x.shape
    xp = np.zeros((c, max(h + top, (oh - 1) * sy + kh), max(w + left, (ow - 1) * sx + kw)), x.dtype)
    xp[:, top:top + h, left:left + w] = x
    taps = [xp[:, ky:ky + sy * (oh - 1) + 1:sy, kx:kx + sx * (ow - 1) + 1:sx] for ky in range(kh) for kx in range(kw)]
    return np.stack(taps).transpose(2, 3, 0, 1).reshape(oh * ow, kh * kw, c)


def im2col(x: np.ndarray, kernel, stride, pads) -> np.ndarray:
    """(kh*kw*C, OH, OW) windows of a C x H x W image; channel (ky*kw + kx)*C + c (zero padding)."""
    c, h, w = x.shape
    (kh, kw), (sy, sx) = kernel, stride
    top, left, bottom, right = pads
    oh, ow = (h + top + bottom - kh) // sy + 1, (w + left + right - kw) // sx + 1
    return windows(x, kernel, stride, pads, (oh, ow)).reshape(oh, ow, kh * kw * c).transpose(2, 0, 1)


def strip_windows(x: np.ndarray, kernel, stride, pads, group: int, out_hw) -> np.ndarray:
    """(kh*G*C, OH, M) strips of a C x H x W image (zero padding): channel (ky*G + j)*C + c of strip
    (oy, m) is input row ``stride_h*oy + ky``, column ``G*m + j`` of the padded image."""
    c, h, w = x.shape
    kh = kernel[0]
    sy = stride[0]
    top, left = pads[0], pads[1]
    oh, groups = out_hw
    xp = np.zeros((c, max(h + top, sy * (oh - 1) + kh), max(w + left, group * groups)), x.dtype)
    xp[:, top:top + h, left:left + w] = x
    rows = np.stack([xp[:, ky:ky + sy * (oh - 1) + 1:sy, :group * groups] for ky in range(kh)])   # (kh, C, OH, G*M)
    strips = rows.reshape(kh, c, oh, groups, group).transpose(0, 4, 1, 2, 3)                   # (kh, G, C, OH, M)
    return strips.reshape(kh * group * c, oh, groups)


def _layout(desc: TensorDesc) -> ActLayout:
    p = desc.params
    return ActLayout(p.channels, p.height, p.width, p.pad, p.native_dim, 0, pitch=p.vectors)


def _model_array(desc: TensorDesc, array: np.ndarray) -> np.ndarray:
    """A model input as binary32 in its model shape (a leading batch dimension of 1 dropped)."""
    x = np.asarray(array, np.float32)
    want = tuple(desc.shape)
    if x.shape == (1, *want):
        x = x[0]
    if x.shape != want:
        raise ValueError(f"input {desc.name!r}: expected shape {list(want)} (or [1, {', '.join(map(str, want))}]), "
                         f"got {list(np.shape(array))}")
    return x


def input_tensor(desc: TensorDesc, array: np.ndarray) -> np.ndarray:
    """The C x H x W tensor the NPU reads for a model input (after strip or im2col packing, if the program uses it)."""
    x = _model_array(desc, array)
    p = desc.params
    if p.order == "hwc":
        x = np.ascontiguousarray(x.transpose(2, 0, 1))
    else:                      # the program file guarantees the element count (TensorDesc.check)
        x = x.reshape(p.image_shape if p.packing else (p.channels, p.height, p.width))
    if p.packing == "im2col":
        x = im2col(x, p.kernel, p.stride, p.pads)
    elif p.packing == "strip":
        x = strip_windows(x, p.kernel, p.stride, p.pads, p.group, (p.height, p.width))
    return x


def _vector_image(desc: TensorDesc, array: np.ndarray) -> np.ndarray:
    """The flat vector image (binary32) of a model input: :func:`input_tensor` in its layout's vectors."""
    return _layout(desc).to_vectors(input_tensor(desc, array)).reshape(-1)


#: Largest vector image (elements) of an input packed through an element map (:func:`_element_map`): 16 MB
#: of map each, at most four kept.
MAP_MAX_ELEMENTS = 1 << 22


@lru_cache(maxsize=4)
def _element_map(desc: TensorDesc) -> np.ndarray | None:
    """For each element of the input's vector image (:func:`input_tensor`, then its layout's vectors), 1 + the
    flat index of the input element it holds, or 0 for a zero (border, padding); None for images above
    :data:`MAP_MAX_ELEMENTS` elements."""
    lay = _layout(desc)
    size = int(np.prod(desc.shape))
    if lay.size * lay.native_dim > MAP_MAX_ELEMENTS or size >= 1 << 24:
        return None
    ordinals = np.arange(1, size + 1, dtype=np.float32).reshape(desc.shape)          # exact below 2**24
    out = _vector_image(desc, ordinals).astype(np.uint32)         # unsigned: the gather vectorises
    out.flags.writeable = False
    return out


@numba.njit(cache=True, nogil=True)
def _gather(src, index, out):
    """``out[i] = src[index[i]]``."""
    for i in range(index.shape[0]):
        out[i] = src[index[i]]


def pack_input(desc: TensorDesc, array: np.ndarray) -> bytes:
    """The DRAM image of one model input (border and padding channels zero, in the MFU format): the vectors of
    :func:`input_tensor`, each element rounded to the format (``mfu.to_format``) as its bits."""
    bits_type = np.uint32 if mfu.mfu_format(desc.dtype).bits == 32 else np.uint16
    code = mfu_kernels.format_code(desc.dtype)
    index = _element_map(desc)
    if index is None:
        vectors = _vector_image(desc, array)
        bits = np.empty(vectors.size, bits_type)
        mfu_kernels.encode_values(vectors, code, bits)
    else:
        x = _model_array(desc, array)
        src = np.empty(x.size + 1, np.float32)                      # element 0: the zero of borders and padding
        src[0] = 0.0
        src[1:] = x.reshape(-1)
        elements = np.empty(src.size, bits_type)
        mfu_kernels.encode_values(src, code, elements)
        bits = np.empty(index.size, bits_type)
        _gather(elements, index, bits)
    img = bits.astype(bits.dtype.newbyteorder("<"), copy=False).tobytes()
    if len(img) != desc.nbytes:
        raise ValueError(f"input {desc.name!r}: image of {len(img)} bytes, the program expects {desc.nbytes}")
    return img


def unpack_output(desc: TensorDesc, data: bytes) -> np.ndarray:
    """The output array (its model shape, float32) from the output's DRAM image."""
    lay = _layout(desc)
    vectors = unpack_floats(data, desc.dtype, lay.size * lay.native_dim).astype(np.float32)
    vectors = vectors.reshape(lay.size, lay.native_dim)
    off = desc.params.channel_offset
    full = ActLayout(lay.stride * lay.native_dim, lay.height, lay.width, lay.pad, lay.native_dim)
    chw = full.from_vectors(vectors)[off:off + lay.channels]
    if desc.params.order == "hwc":
        return np.ascontiguousarray(chw.reshape(lay.channels, lay.height, lay.width).transpose(1, 2, 0))
    return chw.reshape(desc.shape)


def dram_with_inputs(program, feeds: dict[str, np.ndarray]):
    """The program's DRAM image with every input written at its address, as a ``npu.sim.dram.DramImage``: the
    program's own (immutable) image and the inputs over it, so that runs share the unchanged weights."""
    from npu.sim.dram import DramImage

    names = {d.name for d in program.inputs}
    unknown = set(feeds) - names
    if unknown:
        raise ValueError(f"unknown input(s) {', '.join(sorted(unknown))}; the program takes {', '.join(sorted(names))}")
    writes = []
    for desc in program.inputs:
        if desc.name not in feeds:
            raise ValueError(f"input {desc.name!r} is missing")
        writes.append((desc.daddr, pack_input(desc, feeds[desc.name])))
    return DramImage(bytes(program.dram), tuple(writes))


def dram_image_with_inputs(program, feeds: dict[str, np.ndarray]) -> bytearray:
    """The program's DRAM image with every input written at its address, as one mutable buffer."""
    image = dram_with_inputs(program, feeds)
    out = bytearray(image.base)
    for addr, data in image.writes:
        end = addr + len(data)
        if len(out) < end:
            out += bytes(end - len(out))
        out[addr:end] = data
    return out


def run_on_simulator(program, feeds: dict[str, np.ndarray], mode: str = "full"):
    """Simulate ``program`` on ``feeds``; returns ({output name: array}, SimResult)."""
    from npu.sim import simulate

    result = simulate(program, program.config, dram=dram_with_inputs(program, feeds), mode=mode)
    outs = {}
    if result.machine is not None:
        for desc in program.outputs:
            outs[desc.name] = unpack_output(desc, result.dram(desc.daddr, desc.nbytes))
    return outs, result


def run_warm(program, feeds: dict[str, np.ndarray], cold_result, mode: str = "full"):
    """Run the warm program (no weight loads) on a machine whose MRF holds ``cold_result``'s weights."""
    from npu.sim import simulate

    warm = program.warm()
    if warm is None:
        raise ValueError("the program has no warm variant (its weights do not all fit in the MRF)")
    result = simulate(warm, program.config, dram=dram_with_inputs(program, feeds), mode=mode,
                      mrf_from=cold_result)
    outs = {}
    if result.machine is not None:
        for desc in program.outputs:
            outs[desc.name] = unpack_output(desc, result.dram(desc.daddr, desc.nbytes))
    return outs, result
