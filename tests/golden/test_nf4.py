"""rigtune's NF4 against bitsandbytes (pinned in requirements.txt), on CPU.

bitsandbytes' CPU implementation is the oracle: packed bytes, absmax (float32
and nested uint8), nested absmax, maps, offset and the quant_state JSON must be
identical, and dequantized tensors equal. The C++ side runs through
nf4_golden_tool (path in RIGTUNE_NF4_GOLDEN_TOOL).

Two facts about the oracle this test relies on:
* LibTorch sums absmax (for the nested offset) in an order that depends on the
  number of threads for large tensors; one thread pins the order rigtune
  reproduces (Note [absmax mean order] in kernels/nf4_cpu.cc).
* bitsandbytes 0.50.2's AVX-512 CPU dequantize indexes absmax per row, which
  is wrong for 2-D weights whose last dimension is a multiple of 16 but not of
  64 (its own quantizer uses flattened blocks). We compare against it on the
  flattened 1-D view, where it uses the flattened blocks of the format.
"""

import json
import os
import subprocess

import numpy as np
import pytest
import torch

torch.set_num_threads(1)
torch._dynamo.config.disable = True  # bitsandbytes' fallbacks would compile per shape

import bitsandbytes as bnb  # noqa: E402
import bitsandbytes.functional as F  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

TOOL = os.environ.get("RIGTUNE_NF4_GOLDEN_TOOL", "nf4_golden_tool")
DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def _normal(shape, seed, scale=0.02):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * scale


def _heavy_tailed(shape, seed):
    rng = np.random.default_rng(seed)
    return torch.from_numpy((rng.standard_t(1.5, size=shape) * 0.01).astype(np.float32))


def _with_zero_blocks(shape, seed):
    x = _normal(shape, seed).reshape(-1)
    x[:128] = 0.0  # two whole blocks
    x[64 * 7 : 64 * 7 + 64] = 0.0
    x[-(x.numel() % 64 or 64) :] = 0.0  # the final (partial) block
    return x.reshape(shape)


def _constant_absmax(shape, seed):
    # Every block has the same absmax, so absmax - mean is all zero: the
    # nested scale is 0 and every nested code is 0.
    x = _normal(shape, seed).clamp(-0.4, 0.4).reshape(-1)
    x[::64] = 0.5
    return x.reshape(shape)


CASES = {
    "square": ((64, 64), _normal),
    "odd_rows_80": ((3, 80), _normal),  # not a multiple of 64 per row
    "odd_numel": ((7, 33), _normal),  # odd element count, partial block
    "single": ((1, 1), _normal),
    "vector": ((1000,), _normal),
    "nested_partial": ((300, 257), _normal),  # 1205 blocks: not a multiple of 256
    "heavy_tailed": ((128, 200), _heavy_tailed),
    "zero_blocks": ((33, 70), _with_zero_blocks),
    "constant_absmax": ((40, 128), _constant_absmax),
    "large": ((1024, 2048), _normal),  # 32768 blocks: every level of the mean cascade
}


def _inputs():
    out = {}
    for i, (name, (shape, make)) in enumerate(sorted(CASES.items())):
        base = make(shape, 100 + i)
        for tag, dtype in DTYPES.items():
            out[f"{name}.{tag}"] = base.to(dtype).contiguous()
    return out


@pytest.fixture(scope="module")
def rigtune_outputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nf4")
    inputs = _inputs()
    save_file(inputs, tmp / "in.safetensors")
    subprocess.run([TOOL, "quantize", str(tmp / "in.safetensors"), str(tmp / "out.safetensors")],
                   check=True)
    return inputs, load_file(tmp / "out.safetensors")


def _bnb_dequantize(packed, state):
    """bitsandbytes' dequantize on the flattened view (see the module doc)."""
    shape = state.shape
    state.shape = torch.Size([shape.numel()])
    try:
        return F.dequantize_4bit(packed, state).reshape(shape)
    finally:
        state.shape = shape


def _assert_identical(ours, theirs, what):
    assert ours.dtype == theirs.dtype, f"{what}: dtype {ours.dtype} vs {theirs.dtype}"
    assert tuple(ours.shape) == tuple(theirs.shape), f"{what}: shape {ours.shape} vs {theirs.shape}"
    if ours.dtype.is_floating_point:
        a, b = ours.contiguous().view(torch.uint8), theirs.contiguous().view(torch.uint8)
    else:
        a, b = ours, theirs
    if not torch.equal(a, b):
        diff = (a != b).nonzero()
        pytest.fail(f"{what}: {diff.shape[0]} of {a.numel()} bytes differ, first at {diff[0].tolist()}")


@pytest.mark.parametrize("nested", [True, False], ids=["nested", "plain"])
@pytest.mark.parametrize("name", sorted(f"{c}.{t}" for c in CASES for t in DTYPES))
def test_quantize_matches_bitsandbytes(rigtune_outputs, name, nested):
    inputs, ours = rigtune_outputs
    x = inputs[name]
    packed, state = F.quantize_4bit(x, blocksize=64, compress_statistics=nested, quant_type="nf4")
    prefix = f"{name}.{'nested' if nested else 'plain'}.weight"
    _assert_identical(ours[prefix], packed, "packed weight")
    theirs = state.as_dict(packed=True)
    ours_keys = {k[len(prefix) + 1 :] for k in ours if k.startswith(prefix + ".")}
    assert ours_keys == set(theirs), "state dict keys"
    for key, value in theirs.items():
        _assert_identical(ours[f"{prefix}.{key}"], value, key)
    qs = json.loads(bytes(theirs["quant_state.bitsandbytes__nf4"].tolist()))
    if nested:
        assert qs["nested_offset"] == state.offset.item()
    # Dequantized values: rigtune's own dequantize vs bitsandbytes'.
    deq = ours[f"{name}.{'nested' if nested else 'plain'}.deq"]
    _assert_identical(deq, _bnb_dequantize(packed, state), "dequantized")


def test_all_zero_block_uses_code_7_like_the_cpu_oracle(rigtune_outputs):
    _, ours = rigtune_outputs
    packed = ours["zero_blocks.f32.nested.weight"].reshape(-1)
    assert packed[:64].tolist() == [0x77] * 64  # two zero blocks of 64 elements = 64 bytes


def test_bitsandbytes_reads_what_rigtune_writes(rigtune_outputs):
    inputs, ours = rigtune_outputs
    for name in ("nested_partial.bf16", "odd_numel.f16", "heavy_tailed.f32"):
        prefix = f"{name}.nested.weight"
        qs_dict = {k[len(prefix) + 1 :]: v for k, v in ours.items() if k.startswith(prefix + ".")}
        state = F.QuantState.from_dict(qs_dict, device=torch.device("cpu"))
        deq = _bnb_dequantize(ours[prefix], state)
        _assert_identical(deq, ours[f"{name}.nested.deq"], f"{name} read by bitsandbytes")


class _Block(torch.nn.Module):
    def __init__(self, nested, dtype):
        super().__init__()
        self.up_proj = bnb.nn.Linear4bit(96, 80, bias=False, compute_dtype=dtype,
                                         compress_statistics=nested, quant_type="nf4")
        self.down_proj = bnb.nn.Linear4bit(80, 33, bias=False, compute_dtype=dtype,
                                           compress_statistics=nested, quant_type="nf4")


@pytest.mark.parametrize("nested", [True, False], ids=["nested", "plain"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
def test_bnb_4bit_checkpoint_loads(tmp_path, nested, dtype):
    block = _Block(nested, dtype)
    for i, lin in enumerate((block.up_proj, block.down_proj)):
        w = _heavy_tailed(tuple(lin.weight.shape), 7 + i).to(dtype)
        lin.weight = bnb.nn.Params4bit(w, requires_grad=False, compress_statistics=nested,
                                       quant_type="nf4")
    block = block.to("cpu")  # quantizes
    state_dict = {k: v.contiguous() for k, v in block.state_dict().items()}
    save_file(state_dict, tmp_path / "bnb.safetensors")
    subprocess.run([TOOL, "load", str(tmp_path / "bnb.safetensors"), str(tmp_path / "out.safetensors")],
                   check=True)
    ours = load_file(tmp_path / "out.safetensors")
    for name in ("up_proj", "down_proj"):
        param = getattr(block, name).weight
        expected = _bnb_dequantize(param.data, param.quant_state)
        _assert_identical(ours[f"{name}.deq"], expected, f"{name} dequantized")
    for key, value in state_dict.items():
        _assert_identical(ours[f"resaved.{key}"], value, f"{key} saved back")
