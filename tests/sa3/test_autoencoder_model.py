"""AutoencoderModel: SAME alone, from a full SA3 folder or a standalone SAME folder."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from sa3 import AutoencoderModel
from tests.conftest import require_fixtures


def test_encode_decode_from_full_model_folder():
    ae = AutoencoderModel.from_pretrained(require_fixtures() / "tiny-small", device="cpu")
    tone = torch.sin(torch.arange(48000) * 2 * torch.pi * 440 / 48000)[None]  # mono 1 s at 48 kHz
    latents = ae.encode(tone, 48000)
    assert latents.shape == (1, 32, 12)  # 44100 samples -> 45056 (multiple of 4096) -> 11 -> even 12 for SAME-S
    audio = ae.decode(latents, generator=torch.Generator().manual_seed(0))
    assert audio.shape == (1, 2, 12 * 4096) and audio.dtype == torch.float32
    batch = ae.encode([tone, tone[:, :24000]], [48000, 48000])
    assert batch.shape[0] == 2


def test_standalone_same_folder_with_bare_keys(tmp_path):
    src = require_fixtures() / "tiny-small"
    full_cfg = json.loads((src / "model_config.json").read_text())
    pre = full_cfg["model"]["pretransform"]["config"]
    legacy = {"model_type": "autoencoder", "sample_rate": 44100, "audio_channels": 2,
              "model": {k: pre[k] for k in ("encoder", "decoder", "bottleneck", "pretransform", "latent_dim",
                                             "downsampling_ratio", "io_channels")}}
    (tmp_path / "model_config.json").write_text(json.dumps(legacy))
    state = load_file(src / "model.safetensors")
    save_file({k[len("pretransform.model."):]: v for k, v in state.items() if k.startswith("pretransform.model.")},
              tmp_path / "model.safetensors")
    ae = AutoencoderModel.from_pretrained(tmp_path, device="cpu")
    ref = AutoencoderModel.from_pretrained(src, device="cpu")
    x = torch.randn(2, 8192) * 0.1
    assert torch.equal(ae.encode(x, 44100), ref.encode(x, 44100))


def test_unknown_autoencoder_name():
    with pytest.raises(ValueError, match=r"unknown autoencoder 'same-xl'"):
        AutoencoderModel.from_pretrained("same-xl", device="cpu")


def test_decode_rejects_bad_shape():
    ae = AutoencoderModel.from_pretrained(require_fixtures() / "tiny-small", device="cpu")
    with pytest.raises(ValueError, match=r"latents must be \(batch, channels, frames\)"):
        ae.decode(torch.zeros(32, 4))


def test_bf16_mixed_standalone_autoencoder_packs_and_matches_unpacked(monkeypatch):
    """Its linear layers keep prepacked bf16 weights where this CPU's oneDNN packs bf16, as in
    StableAudioModel (every layer qualifies here, the size threshold set to 0), and none
    elsewhere (an AVX2 CPU: the fp32 GEMM on upcast operands); either way it decodes as the
    unpacked layers do within bf16 rounding."""
    from sa3 import cpu_gemm, layers
    from sa3.cpu_gemm import cpu_routes

    monkeypatch.setattr(cpu_gemm, "ONEDNN_MIN_WEIGHTS", 0)
    ae = AutoencoderModel.from_pretrained(require_fixtures() / "tiny-small", device="cpu", dtype="bf16-mixed")
    linears = [m for m in ae.autoencoder.modules() if isinstance(m, layers.Linear)]
    assert linears and all(m.pack_weight for m in linears)
    z = torch.randn(1, ae.autoencoder.config.latent_dim, 8, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        packed = ae.decode(z, generator=torch.Generator().manual_seed(1))
        assert any("_packed" in m.__dict__ for m in linears) == cpu_routes().packed_bf16
        cpu_gemm.set_weight_packing(ae.autoencoder, False)
        plain = ae.decode(z, generator=torch.Generator().manual_seed(1))
    assert ((packed - plain).norm() / plain.norm()).item() < 2e-2
