"""read_checkpoint through safetensors.safe_open: tensors kept in their dtype are memory-mapped views
of the file (what low_memory's release relies on), converted ones are plain copies in the new dtype,
read a chunk of handles at a time; order and values as stored."""

from __future__ import annotations

import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sa3 import loading

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/maps is Linux-only")


def _in_file_mapping(t: torch.Tensor) -> bool:
    begin = t.data_ptr()
    return any(start <= begin < end for start, end in loading._private_file_mappings())


@pytest.fixture
def checkpoint(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {f"model.model.w{i}": torch.randn(64, 256, generator=g) for i in range(6)}
    tensors["conditioner.emb"] = torch.randn(32, 256, generator=g)
    tensors["pretransform.model.steps"] = torch.arange(10, dtype=torch.int64)  # not floating: never converted
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path))
    return path, tensors


@linux_only
@pytest.mark.parametrize("chunk", [loading.CONVERT_CHUNK_BYTES, 64 * 256 * 4 + 1])  # one handle / a handle per 2
def test_kept_tensors_are_mapped_and_converted_ones_are_copies(checkpoint, monkeypatch, chunk):
    path, stored = checkpoint
    monkeypatch.setattr(loading, "CONVERT_CHUNK_BYTES", chunk)
    out = loading.read_checkpoint(path, dtype_by_prefix={"model.model.": torch.bfloat16})
    with safe_open(str(path), framework="pt") as f:
        assert list(out) == list(f.keys())  # the file's order
    for key, tensor in out.items():
        if key.startswith("model.model."):
            assert tensor.dtype == torch.bfloat16 and torch.equal(tensor, stored[key].to(torch.bfloat16))
            assert not _in_file_mapping(tensor)  # a converted copy: the fp32 pages were not kept
        else:
            assert tensor.dtype == stored[key].dtype and torch.equal(tensor, stored[key])
            assert _in_file_mapping(tensor)  # zero-copy view of the file


def test_one_dtype_for_all_floating_tensors(checkpoint):
    path, stored = checkpoint
    out = loading.read_checkpoint(path, dtype=torch.float16)
    assert {k: v.dtype for k, v in out.items()} == {k: torch.int64 if k.endswith("steps") else torch.float16
                                                   for k in stored}


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(RuntimeError, match=r"checkpoint '.*nope\.safetensors' does not exist"):
        loading.read_checkpoint(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(RuntimeError, match=r"cannot read checkpoint '.*bad\.safetensors'"):
        loading.read_checkpoint(bad)
