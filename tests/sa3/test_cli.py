"""The command line runs generate() end to end and reports bad input without a traceback."""

import wave

from sa3.cli import main
from tests.conftest import require_fixtures


def test_cli_generates_a_batch(tmp_path, capsys):
    model = require_fixtures() / "tiny-small"
    out = tmp_path / "clip.wav"
    rc = main(["generate", "--model", str(model), "-p", "kick", "snare", "--duration", "0.5", "0.75",
               "--steps", "2", "--seed", "5", "-o", str(out)])
    assert rc == 0
    for i in range(2):
        with wave.open(str(tmp_path / f"clip_{i}.wav")) as f:
            assert f.getnchannels() == 2 and f.getframerate() == 44100 and f.getnframes() > 0
    err = capsys.readouterr().err
    assert "sampling" in err and "2/2" in err and "decoding" in err and "seed: 5" in err  # tqdm bars


def test_cli_inpaint_round_trip(tmp_path):
    """A FLAC written by the CLI is read back as inpaint audio."""
    model = require_fixtures() / "tiny-small"
    src = tmp_path / "src.flac"
    assert main(["generate", "--model", str(model), "-p", "pad", "--duration", "0.5", "--steps", "1", "--seed", "1",
                 "-o", str(src)]) == 0
    out = tmp_path / "out.wav"
    assert main(["generate", "--model", str(model), "-p", "pad", "--duration", "1", "--steps", "1", "--seed", "1",
                 "--inpaint-audio", str(src), "--inpaint-start", "0.5", "--inpaint-end", "1", "--low-memory",
                 "-o", str(out)]) == 0
    with wave.open(str(out)) as f:
        assert f.getnframes() == 44100


def test_cli_bad_duration_is_a_clean_error(tmp_path, capsys):
    model = require_fixtures() / "tiny-small"
    rc = main(["generate", "--model", str(model), "-p", "x", "--duration", "500", "-o", str(tmp_path / "x.wav")])
    assert rc == 2
    assert "duration must be a number above 0 and at most 120 seconds (got 500)" in capsys.readouterr().err


def test_cli_controls_equal_generate(tmp_path):
    """--cfg-interval, --cfg-rescale, --cfg-norm-threshold, --dist-shift and --duration-padding give
    generate()'s audio with the same controls (as the official app's)."""
    import torch

    from sa3 import audio as audio_utils
    from tests.conftest import load_model

    root = require_fixtures()
    out = tmp_path / "c.wav"
    assert main(["generate", "--model", str(root / "tiny-small"), "-p", "pad", "--negative-prompt", "hiss",
                 "--duration", "0.5", "--steps", "3", "--seed", "9", "--cfg-scale", "5", "--cfg-interval", "0.3", "0.9",
                 "--cfg-rescale", "0.5", "--cfg-norm-threshold", "2", "--dist-shift", "flux alpha_min=3, alpha_max=3",
                 "--duration-padding", "2", "--padding-mode", "reference", "--dtype", "fp32", "-o", str(out)]) == 0
    expected = load_model("tiny-small").generate(
        prompt="pad", negative_prompt="hiss", duration=0.5, steps=3, seed=9, cfg_scale=5.0, cfg_interval=(0.3, 0.9),
        scale_phi=0.5, cfg_norm_threshold=2.0, dist_shift={"type": "flux", "alpha_min": 3.0, "alpha_max": 3.0},
        duration_padding_sec=2.0)
    rate, written = audio_utils.read_audio(out)
    assert rate == 44100 and written.shape == expected[0].shape
    assert torch.allclose(written, expected[0], atol=1e-4)  # 16-bit WAV rounding
    plain = load_model("tiny-small").generate(prompt="pad", negative_prompt="hiss", duration=0.5, steps=3, seed=9,
                                              cfg_scale=5.0)
    assert not torch.allclose(written, plain[0], atol=1e-3)  # the controls reached generate()


def test_cli_bad_shift_is_a_clean_error(tmp_path, capsys):
    model = require_fixtures() / "tiny-small"
    rc = main(["generate", "--model", str(model), "-p", "x", "--duration", "1", "--dist-shift", "flux alpha=3",
               "-o", str(tmp_path / "x.wav")])
    assert rc == 2
    assert ("each --dist-shift parameter of a 'flux' shift must be one of 'min_length', 'max_length', 'alpha_min', "
            "'alpha_max' (got 'alpha')") in capsys.readouterr().err
    assert not (tmp_path / "x.wav").exists()
