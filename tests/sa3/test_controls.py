"""The official app's generation controls in the library: CFG interval and schedule shift override
(their numbers are pinned by the ``ctl_*`` golden cases; these tests pin how they act)."""

import pytest
import torch

from sa3.config import ShiftConfig, shift_config
from sa3.request import check_request
from sa3.sampling import CFG_INTERVAL, build_schedule, guided_at, make_shift
from tests.conftest import case_id, cases, generate_kwargs, load_model

INTERVAL_CASES = [c for c in cases() if "cfg_interval" in c["generate_kwargs"]]


@pytest.mark.skipif(not INTERVAL_CASES, reason="golden fixtures not found")
@pytest.mark.parametrize("case", INTERVAL_CASES, ids=case_id)
def test_guidance_runs_in_the_calls_the_reference_guided(case, monkeypatch):
    """Each DiT call runs the 2B guidance batch exactly where the official code did
    (``cfg_applied_per_dit_call``: observed in the reference, not derived)."""
    model = load_model(case["model"])
    batch = case["generate_kwargs"].get("batch_size", 1)
    sizes = []
    forward = type(model.dit).forward

    def spy(self, x, t, cond, cache=None):
        sizes.append(x.shape[0])
        return forward(self, x, t, cond, cache=cache)

    monkeypatch.setattr(type(model.dit), "forward", spy)
    model.generate(**generate_kwargs(case))
    assert [s == 2 * batch for s in sizes] == case["cfg_applied_per_dit_call"]


def test_the_full_interval_never_looks_at_t():
    """The default interval decides without reading t: no host sync per DiT call on a GPU."""
    meta = torch.empty(2, device="meta")  # reading a meta tensor's value raises
    assert guided_at(meta, CFG_INTERVAL) and guided_at(meta, (0.0, 1.0))
    with pytest.raises((RuntimeError, NotImplementedError)):
        guided_at(meta, (0.0, 0.5))


def test_item_zero_decides_in_float32():
    t = torch.tensor([0.3, 0.9])  # float32 0.3 is 0.30000001192...
    assert guided_at(t, (0.3, 0.3))  # bounds rounded to float32 as t is: both ends inclusive
    assert guided_at(t, (0.0, 0.5))  # item 1 (0.9) is outside, item 0 decides for the batch
    assert not guided_at(t.flip(0), (0.0, 0.5))


def test_a_shift_spec_equal_to_the_models_own_gives_the_same_audio():
    model = load_model("tiny-small")
    kw = dict(prompt="pad", duration=0.5, steps=3, seed=5, return_latents=True)
    own = model.generate(**kw)
    assert torch.equal(model.generate(**kw, dist_shift=model.config.shift.spec()), own)
    assert torch.equal(model.generate(**kw, dist_shift=model.config.shift), own)
    assert torch.equal(model.generate(**kw, cfg_interval=(0.0, 1.0), cfg_scale=3.0),
                       model.generate(**kw, cfg_scale=3.0))
    assert not torch.equal(model.generate(**kw, dist_shift={"type": "none"}), own)


def test_an_interval_outside_every_step_is_plain_sampling():
    """No DiT call inside the interval: guidance never runs, as with cfg_scale 1."""
    model = load_model("tiny-small")
    kw = dict(prompt="pad", negative_prompt="noise", duration=0.5, steps=3, seed=5, return_latents=True,
              sampler_type="euler", dist_shift={"type": "none"})  # DiT calls at 1, 2/3 and 1/3
    unguided = model.generate(**kw, cfg_scale=1.0)
    assert torch.equal(model.generate(**kw, cfg_scale=7.0, cfg_interval=(0.8, 0.9)), unguided)
    assert not torch.equal(model.generate(**kw, cfg_scale=7.0, cfg_interval=(0.6, 0.7)), unguided)


def test_shift_specs_build_the_official_schedules():
    lengths = torch.tensor([11.0, 22.0])
    none = build_schedule(4, 1.0, make_shift({"type": "none"}), lengths)
    assert torch.equal(none, torch.linspace(1, 0, 5).expand(2, -1))
    flux = build_schedule(4, 1.0, make_shift({"type": "flux", "min_length": 8, "max_length": 64, "alpha_min": 1.0,
                                              "alpha_max": 4.0}), lengths)
    assert flux.shape == (2, 5) and not torch.equal(flux[0], flux[1])  # one schedule per item length
    assert torch.all(flux[:, 1:-1] > none[:, 1:-1])  # alpha > 1 above min_length: towards noise
    # a spec without a type is the official factory's default, "full"
    assert shift_config({"min_length": 8, "max_length": 64}) == ShiftConfig("full", {"min_length": 8,
                                                                                      "max_length": 64})


def test_shift_config_round_trips_through_its_spec():
    for spec in ({"type": "none"}, {"type": "logsnr", "anchor_length": 16, "anchor_logsnr": -4.0, "rate": 0.5,
                                    "logsnr_end": 3.0}, {"type": "full", "base_shift": 1.0, "use_sine": True}):
        assert shift_config(spec).spec() == spec
    assert shift_config(ShiftConfig()) == ShiftConfig()


def test_check_request_refuses_bad_controls_before_any_work():
    cfg = load_model("tiny-small").config
    with pytest.raises(ValueError, match=r"^Stable Audio 3: cfg_interval must run from a lower to a higher noise "
                                         r"level \(got from 0.7, to 0.2\)\. Swap the two values\.$"):
        check_request(cfg, prompt="x", duration=1.0, cfg_interval=[0.7, 0.2])
    with pytest.raises(ValueError, match=r"^Stable Audio 3: dist_shift.type must be one of 'logsnr', 'full', 'flux', "
                                         r"'none' \(got 'karras'\)\.$"):
        check_request(cfg, prompt="x", duration=1.0, dist_shift={"type": "karras"})
