"""The official bf16 run's two numerics that ours reproduces (issue 25, bench/RESULTS.md):
the prompt states as the official bf16-mixed step computes them (T5Gemma under bf16 autocast,
the learned padding rounded to bf16), kept apart from fp32 states by the encoded-dataset cache
and refused when they do not match the options; and DoRA/BoRA -XS adapters summed and
normalised in bf16 with bf16 bases. The references here are written out from the official
formulas (no official code needed)."""

from __future__ import annotations

import pytest
import torch

from sa3 import training, training_data
from sa3.lora import LayerAdapter, adapt_weight
from tests.conftest import load_model
from tests.sa3.test_training import TINY, make_dataset, opts

CAPTIONS = ("a sine tone at 220 hz", "warm pads and a slow bass line")


@pytest.fixture(scope="module")
def model():
    return load_model(TINY)


def test_options_choose_the_prompt_precision():
    assert opts(base_precision="bf16").prompt_precision() == "bf16"
    assert opts(base_precision="fp32").prompt_precision() == "fp32"
    assert opts(base_precision="fp16").prompt_precision() == "fp32"  # no autocast there: states as stored


def test_bf16_prompt_states_are_an_autocast_encode_with_the_padding_rounded(model):
    fp32 = training_data.encode_captions(model.text_encoder, model.conditioner, CAPTIONS)
    bf16 = training_data.encode_captions(model.text_encoder, model.conditioner, CAPTIONS, "bf16")
    pad = model.conditioner.conditioners["prompt"].padding_embedding.detach()
    for caption, a, b in zip(CAPTIONS, fp32, bf16, strict=True):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            hidden, mask = model.text_encoder([caption])  # (1, P, E), (1, P)
        want = torch.where(mask[0, :, None], hidden[0], pad.to(torch.bfloat16)[None]).float()  # (P, E)
        assert b.dtype == torch.float32 and torch.equal(b, want)
        assert not torch.equal(a, b)  # fp32 states are another encoding
        assert torch.equal(b[~mask[0]], pad.to(torch.bfloat16).float().expand_as(b[~mask[0]]))
        with torch.no_grad():
            hidden32, _ = model.text_encoder([caption])
        assert torch.equal(a, torch.where(mask[0, :, None], hidden32[0], pad[None]).float())  # fp32 as before


def test_the_model_is_left_unchanged_by_a_bf16_encode(model):
    pad = model.conditioner.conditioners["prompt"].padding_embedding
    before = pad.detach().clone()
    training_data.encode_captions(model.text_encoder, model.conditioner, CAPTIONS[:1], "bf16")
    assert pad.dtype == torch.float32 and torch.equal(pad.detach(), before)


def test_unknown_prompt_precision_is_refused(model):
    with pytest.raises(ValueError, match="prompt precision 'fp16' is unknown"):
        training_data.encode_captions(model.text_encoder, model.conditioner, CAPTIONS, "fp16")


def test_cache_keys_differ_by_prompt_precision(model, tmp_path):
    folder = make_dataset(tmp_path / "clips", n=2)
    pairs = training_data.find_clips(folder)
    keys = {p: training_data.cache_key(model, pairs, 32, 7, p) for p in training_data.PROMPT_PRECISIONS}
    assert keys["fp32"] != keys["bf16"]
    assert training_data.cache_key(model, pairs, 32, 7) == keys["fp32"]
    clips = training_data.load_training_folder(folder)
    ckeys = {p: training_data.clips_cache_key(model, clips, 32, 7, p) for p in training_data.PROMPT_PRECISIONS}
    assert ckeys["fp32"] != ckeys["bf16"]


def test_the_cache_records_the_precision_and_bf16_runs_encode_apart(model, tmp_path, monkeypatch):
    folder, cache = make_dataset(tmp_path / "clips", n=2), tmp_path / "cache"
    seen = []
    real = training_data.encode_captions

    def recording(text_encoder, conditioner, captions, precision="fp32"):
        seen.append(precision)
        return real(text_encoder, conditioner, captions, precision)

    monkeypatch.setattr(training_data, "encode_captions", recording)
    data = {p: training.encoded_folder(model, folder, opts(base_precision=p, batch_size=1), cache)
            for p in ("fp32", "bf16")}
    assert seen == ["fp32", "bf16"] and len(list(cache.iterdir())) == 2
    assert data["fp32"].prompt_precision == "fp32" and data["bf16"].prompt_precision == "bf16"
    again = training.encoded_folder(model, folder, opts(base_precision="bf16", batch_size=1), cache)
    assert seen == ["fp32", "bf16"]  # a hit: nothing encoded
    assert again.prompt_precision == "bf16"
    assert all(torch.equal(a.prompt, b.prompt) for a, b in zip(again.clips, data["bf16"].clips, strict=True))
    for entry in cache.iterdir():  # an entry written before the choice existed reads as fp32
        index = entry / training_data.CACHE_INDEX
        text = index.read_text().replace('"prompt_precision": "bf16", ', "").replace('"prompt_precision": "fp32", ', "")
        index.write_text(text)
        assert training_data.load_cached(entry).prompt_precision == "fp32"


@pytest.mark.parametrize("encoded, wanted", [("fp32", "bf16"), ("bf16", "fp32")])
def test_a_mismatched_encoded_dataset_is_refused_before_any_work(model, tmp_path, monkeypatch, encoded, wanted):
    clips = training_data.load_training_folder(make_dataset(tmp_path / "clips", n=2))
    options = opts(batch_size=1, steps=1)
    data = training_data.encode_dataset(model, clips, options.crop_latents(), None, prompt_precision=encoded)
    assert data.prompt_precision == encoded
    monkeypatch.setattr(training, "_run", lambda *a, **k: pytest.fail("training started"))
    with pytest.raises(training.TrainingError, match=f"encoded in {encoded}.*expected '{wanted}'"):
        training.train_lora(model, data, tmp_path / "x.safetensors", opts(batch_size=1, steps=1,
                                                                           base_precision=wanted))
    assert not (tmp_path / "x.safetensors").exists()


def test_a_bf16_run_trains_on_bf16_prompt_states(model, tmp_path, monkeypatch):
    clips = training_data.load_training_folder(make_dataset(tmp_path / "clips", n=2))
    seen = []
    real = training._run

    def recording(model, data, *args, **kwargs):
        seen.append(data)
        return real(model, data, *args, **kwargs)

    monkeypatch.setattr(training, "_run", recording)
    training.train_lora(model, clips, tmp_path / "x.safetensors", opts(batch_size=1, steps=1, base_precision="bf16"))
    (data,) = seen
    want = training_data.encode_captions(model.text_encoder, model.conditioner, [c.caption for c in clips], "bf16")
    assert data.prompt_precision == "bf16"
    assert all(torch.equal(c.prompt, w) for c, w in zip(data.clips, want, strict=True))


# --- -XS adapters in bf16 -----------------------------------------------------------------------


def _xs_layer(o: int, i: int, r: int, norm: str | None, g: torch.Generator) -> tuple[torch.Tensor, LayerAdapter]:
    """A bf16 weight and an -XS adapter with bf16 bases (as the official bf16 cast leaves them)
    and fp32 trainable tensors."""
    w = torch.randn(o, i, generator=g).to(torch.bfloat16)
    u = torch.linalg.qr(torch.randn(o, r, generator=g))[0].to(torch.bfloat16)
    v = torch.linalg.qr(torch.randn(i, r, generator=g))[0].to(torch.bfloat16)
    m = 0.3 * torch.randn(r, r, generator=g)
    mags = {}
    if norm in ("rows", "cols"):
        mags["magnitude"] = w.float().norm(dim=1 if norm == "rows" else 0) * 1.01
    elif norm == "both":
        mags["magnitude_r"], mags["magnitude_c"] = w.float().norm(dim=1) * 1.01, w.float().norm(dim=0) * 0.99
    return w, LayerAdapter(M=m, U=u, V=v, **mags)


def _official_bf16(w: torch.Tensor, layer: LayerAdapter, norm: str | None, scaling: float) -> torch.Tensor:
    """The official -XS forwards after the bf16 cast, written out: every buffer bf16 (bases,
    strength), M rounded to them, the sum and the first norm in bf16, fp32 magnitudes promoting."""
    bf = torch.bfloat16
    s = scaling * torch.tensor(1.0, dtype=bf)  # the strength buffer, cast with the model
    delta = layer.U @ layer.M.to(bf) @ layer.V.T
    if norm is None:
        return w + (s * delta).to(w.dtype)
    v = w.to(bf) + s * delta
    if norm == "rows":
        return (v / (v.norm(dim=1, keepdim=True) + 1e-12) * layer.magnitude.unsqueeze(1)).to(w.dtype)
    if norm == "cols":
        return (v / (v.norm(dim=0, keepdim=True) + 1e-12) * layer.magnitude.unsqueeze(0)).to(w.dtype)
    rows = layer.magnitude_r.unsqueeze(1) * (v / (v.norm(dim=1, keepdim=True) + 1e-12))
    return (rows / (rows.norm(dim=0, keepdim=True) + 1e-12) * layer.magnitude_c.unsqueeze(0)).to(w.dtype)


@pytest.mark.parametrize("adapter_type, norm", [("dora-rows-xs", "rows"), ("dora-cols-xs", "cols"),
                                                ("bora-xs", "both"), ("lora-xs", None)])
@pytest.mark.parametrize("autocast", [False, True])
def test_xs_bf16_update_is_computed_in_bf16(adapter_type, norm, autocast):
    g = torch.Generator().manual_seed(3)
    w, layer = _xs_layer(48, 40, 4, norm, g)
    fields = [getattr(layer, f) for f in training.ADAPTER_FIELDS]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        got = training._adapted(adapter_type, 0.5, w, *fields).to(w.dtype)
        want = _official_bf16(w, layer, norm, 0.5)
        fp32_bases = LayerAdapter(**{f: (t.float() if f in ("U", "V") and t is not None else t)
                                     for f, t in zip(training.ADAPTER_FIELDS, fields, strict=True)})
        fp32_way = adapt_weight(w.float(), fp32_bases, adapter_type, 0.5, 1.0).to(w.dtype)
    assert got.dtype == torch.bfloat16 and torch.equal(got, want)
    if norm is not None:
        assert not torch.equal(got, fp32_way)  # in fp32 the sum and its norms round otherwise


def test_xs_bases_are_bf16_in_the_bf16_run_only(model):
    targets = training._targets(model.dit, model.conditioner, training.check_options(opts(), 1e9))[:3]
    for precision, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32), ("fp16", torch.float32)):
        options = training.check_options(opts(adapter_type="dora-rows-xs", base_precision=precision), 1e9)
        lora = training._TrainableLoRA(targets, options, torch.Generator().manual_seed(0), torch.device("cpu"),
                                       init_dtype=torch.bfloat16 if precision == "bf16" else None)
        for u, v in lora.bases.values():
            assert u.dtype == dtype and v.dtype == dtype
        assert all(p.dtype == torch.float32 for p in lora.params.values())  # trained tensors stay fp32


def test_cli_pre_encode_only_passes_the_precision(tmp_path, monkeypatch):
    from sa3.cli import main
    from tests.conftest import require_fixtures

    seen = []
    real = training_data.encode_dataset

    def recording(*args, **kwargs):
        seen.append(kwargs.get("prompt_precision", args[5] if len(args) > 5 else "fp32"))
        return real(*args, **kwargs)

    monkeypatch.setattr(training_data, "encode_dataset", recording)
    clips, cache = make_dataset(tmp_path / "clips", n=2), tmp_path / "cache"
    base = ["train", "--model", str(require_fixtures() / TINY), "--data-dir", str(clips), "--steps", "1",
            "--rank", "4", "--clip-seconds", "2", "--batch-size", "1", "--encoded-dir", str(cache)]
    assert main([*base, "--base-precision", "bf16", "--pre-encode-only"]) == 0 and seen == ["bf16"]
    (entry,) = cache.iterdir()
    assert training_data.load_cached(entry).prompt_precision == "bf16"
    assert main([*base, "--base-precision", "bf16", "-o", str(tmp_path / "a.safetensors")]) == 0
    assert seen == ["bf16"]  # the pre-encoded entry was used
    assert main([*base, "--base-precision", "fp32", "-o", str(tmp_path / "b.safetensors")]) == 0
    assert seen == ["bf16", "fp32"] and len(list(cache.iterdir())) == 2


def test_resume_fingerprint_tells_the_prompt_precision_apart():
    clip = training_data.EncodedClip(name="a.wav", latents=torch.zeros(4, 8), prompt=torch.zeros(2, 3),
                                     seconds_total=1)
    fp32 = training_data.EncodedDataset(clips=[clip], silence=torch.zeros(4, 2))
    bf16 = training_data.EncodedDataset(clips=[clip], silence=torch.zeros(4, 2), prompt_precision="bf16")
    assert training._fingerprint(fp32) != training._fingerprint(bf16)
