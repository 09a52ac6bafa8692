"""generate() against the official implementation's outputs on the tiny fixture models.

Every non-LoRA case of the available pack runs (all 58 of both models with ../shared/fixtures, the
generation-control ``ctl_*`` cases included; the committed tiny-small subset otherwise). LoRA cases
live in tests/sa3/test_lora.py. Tolerance: ``GOLDEN_ATOL`` (tests/golden_io.py), derived from
measurements on each CPU kind: the official code's own distance from the goldens off the CPU that
made them (1.27e-5 on AVX2, 1.22e-5 on AMD Zen 4) plus ours against the official on one CPU (up to
1.63e-5, cfg 7 cases of tiny-medium), 2.9e-5 in all (x86 without AVX2: 5.7e-5). Measured worst cases
of ours: 1.19e-5 on Zen 4, 1.62e-5 on AVX2 (tiny-medium/t2a_cfg7_apg0), 3.75e-5 without AVX2
(bench/RESULTS.md).
"""

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import assert_matches_golden, case_id, cases, fixture_root, generate_kwargs, load_model

GOLDEN_CASES = [c for c in cases() if c["kind"] != "lora"]


@pytest.mark.skipif(not GOLDEN_CASES, reason="golden fixtures not found")
@pytest.mark.parametrize("case", GOLDEN_CASES, ids=case_id)
def test_generate_matches_reference(case):
    torch.set_num_threads(2)
    model = load_model(case["model"])
    result = model.generate(**generate_kwargs(case))
    assert_matches_golden(case, result)


@pytest.mark.skipif(not GOLDEN_CASES, reason="golden fixtures not found")
@pytest.mark.parametrize("case", [c for c in GOLDEN_CASES if c["model"] == "tiny-small"], ids=case_id)
def test_onednn_route_matches_reference(case, monkeypatch):
    """The tiny models' layers are below ONEDNN_MIN_WEIGHTS; route all of them through oneDNN
    (as the full-size models' large layers are) and compare with the official outputs again."""
    from sa3 import cpu_gemm
    from sa3.cpu_gemm import cpu_routes

    if not cpu_routes().onednn_fp32:
        pytest.skip(f"no oneDNN fp32 linear here: {cpu_routes()}")
    monkeypatch.setattr(cpu_gemm, "ONEDNN_MIN_WEIGHTS", 0)
    torch.set_num_threads(2)
    model = load_model(case["model"])
    assert_matches_golden(case, model.generate(**generate_kwargs(case)))


@pytest.mark.skipif(not GOLDEN_CASES, reason="golden fixtures not found")
@pytest.mark.parametrize("case", [c for c in GOLDEN_CASES if c["case"] in ("t2a_cfg7_b2_neg", "a2a_noise0.5_sr48k")],
                         ids=case_id)
def test_stages_match_trace(case):
    """Stage-level intermediates: tokens, conditioning, schedule, first noise, padding mask."""
    from sa3 import checks, rng, stages
    from sa3.sampling import build_schedule, make_shift

    trace_path = fixture_root() / case["dir"] / "trace.safetensors"
    if not trace_path.is_file():
        pytest.skip("trace not in the committed subset")
    trace = load_file(trace_path)
    model = load_model(case["model"])
    kw = case["generate_kwargs"]
    b = kw.get("batch_size", 1)
    prompts, durations = checks.per_item(kw["prompt"], "prompt", b), checks.per_item(kw["duration"], "duration", b)
    ids, mask = model.text_encoder.tokenize(prompts)
    assert torch.equal(ids, trace["t5.pos.input_ids"]) and torch.equal(mask, trace["t5.pos.attention_mask"])
    text = stages.encode_text(model.text_encoder, model.conditioner, prompts, durations)
    torch.testing.assert_close(text.global_cond, trace["cond.pos.seconds_total.emb"][:, 0], rtol=0, atol=1.5e-5)
    plan = stages.plan_latents(model.config, durations)
    assert plan.latents == case["latent_length"] and list(plan.valid) == case["valid_latents_per_item"]
    assert torch.equal(plan.padding_mask(), trace["dit.cond.padding_mask"])
    sigma_max = kw.get("init_noise_level", 1.0) if "init_audio" in kw else 1.0
    sigmas = build_schedule(kw["steps"], sigma_max, make_shift(model.config.shift),
                            torch.tensor(plan.effective, dtype=torch.float32))
    torch.testing.assert_close(sigmas, trace["sched.sigmas"], rtol=0, atol=1e-7)
    noise = rng.make_noise(b, model.config.latent_channels, plan.latents, rng.make_generator(kw["seed"]))
    assert torch.equal(noise, trace["rng.000"])
