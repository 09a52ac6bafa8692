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
