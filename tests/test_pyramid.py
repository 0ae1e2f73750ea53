"""The pooled STFT pyramid: views agree with stft_image, transients survive, levels, bad input."""

from __future__ import annotations

import numpy as np
import pytest

import soma_shm
from soma_shm.errors import ParameterError
from soma_shm.pyramid import Pyramid, PyramidLayout, build_pyramid

from .conftest import make_audio


def _db(a, b):
    return np.abs(20 * np.log10(np.maximum(a, 1e-20) / np.maximum(b, 1e-20)))


@pytest.fixture(scope="module")
def steady():
    """Three steady partials over a -75 dB noise floor: 200 s at 16 kHz."""
    fs = 16_000
    return make_audio(200.0, fs, freqs=(97.3, 440.0, 3017.0), amp=0.2, noise=1e-4, seed=3), fs


@pytest.fixture(scope="module")
def steady_pyramid(steady):
    x, fs = steady
    return build_pyramid(x, fs)


def _aligned_span(pyr: Pyramid, width: int, frames_per_column: int) -> float:
    lay = pyr.layout
    return width * frames_per_column * lay.hop / lay.sample_rate


@pytest.mark.parametrize("width, frames_per_column", [(400, 2), (300, 16), (100, 64), (24, 512)])
def test_views_whose_columns_hold_whole_blocks_match_stft_image(steady, steady_pyramid, width, frames_per_column):
    x, fs = steady
    pyr = steady_pyramid
    t1 = _aligned_span(pyr, width, frames_per_column)
    assert pyr.layout.level_for(frames_per_column) == {2: 0, 16: 0, 64: 1, 512: 2}[frames_per_column]
    direct = soma_shm.stft_image(x, fs, 0.0, t1, 40.0, 7_000.0, width, 300)
    cut = pyr.image(0.0, t1, 40.0, 7_000.0, width, 300)
    assert cut.shape == direct.shape and cut.dtype == np.float32
    ref = soma_shm.render.reference_level(x, fs)
    level = 20 * np.log10(np.maximum(direct, 1e-20) / ref)
    err = _db(cut, direct)
    strong = level > -40
    # Bytes are 0.5 dB steps: a partial's pixels are within the half step, plus what the Hann
    # peak refinement makes of two quantised neighbours.
    assert np.percentile(err[strong], 99) <= 0.35 and err[strong].max() <= 1.0
    # The tone-mapped picture is the same to a level or two: everywhere above the faintest
    # quarter of the scale, and mostly in the noise near the floor too (where a maximum of
    # noise moves with a quantised neighbour).
    a, b = soma_shm.tone_map(direct, ref), soma_shm.tone_map(cut, ref)
    close = np.abs(a.astype(int) - b.astype(int)) <= 2
    assert close[a >= 64].mean() >= 0.995 and close.mean() >= 0.95


@pytest.mark.parametrize("t0, t1, width", [(3.3, 61.7, 1333), (0.0, 200.0, 2048), (17.0, 48.0, 1600), (0.0, 200.0, 97)])
def test_any_wide_view_of_steady_partials_matches_stft_image(steady, steady_pyramid, t0, t1, width):
    x, fs = steady
    direct = soma_shm.stft_image(x, fs, t0, t1, 30.0, 8_000.0, width, 400)
    cut = steady_pyramid.image(t0, t1, 30.0, 8_000.0, width, 400)
    ref = soma_shm.render.reference_level(x, fs)
    strong = direct > ref * 10 ** (-40 / 20)
    assert strong.sum() > 3 * width  # the three partials are in the picture
    err = _db(cut, direct)[strong]
    assert np.percentile(err, 99) <= 0.5 and err.max() <= 1.5


def test_a_click_is_never_lost_at_any_width_or_offset():
    fs = 8_000
    x = make_audio(300.0, fs, freqs=(), noise=1e-4, seed=5)
    at = 123.4567
    x[int(at * fs)] = 0.9
    pyr = build_pyramid(x, fs)
    rng = np.random.default_rng(0)
    for _ in range(12):
        span = rng.uniform(31.0, 300.0)
        t0 = rng.uniform(max(0.0, at - span + 1.0), min(at - 1.0, 300.0 - span))
        width = int(rng.integers(64, 2049))
        direct = soma_shm.stft_image(x, fs, t0, t0 + span, 100.0, 3_000.0, width, 64)
        cut = pyr.image(t0, t0 + span, 100.0, 3_000.0, width, 64)
        col = int((at - t0) / span * width)
        lo, hi = max(col - 2, 0), min(col + 3, width)
        # The click is where it is in the direct image, at its level, and nowhere far from it.
        # (Its flat spectrum is within 2 dB: the Hann peak refinement lifts the direct image's
        # ripples by up to 1.4 dB where the pyramid's bytes are level.)
        assert _db(cut[:, lo:hi].max(), direct[:, lo:hi].max()) <= 2.0
        far = np.ones(width, bool)
        far[max(col - 4, 0) : col + 5] = False
        assert cut[:, far].max() < 0.05 * cut[:, lo:hi].max()


@pytest.fixture(scope="module")
def music():
    """Two minutes at 16 kHz of what a recording holds: harmonic notes with vibrato changing every
    4 s, a glide, a noise floor and a click every second (broadband transients)."""
    fs = 16_000
    rng = np.random.default_rng(11)
    t = np.arange(120 * fs) / fs
    f0 = rng.uniform(80.0, 700.0, 30)[(t // 4).astype(int)]
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.01 * np.sin(2 * np.pi * 5 * t))) / fs
    x = sum((0.3 / h) * np.sin(h * phase) for h in range(1, 9))
    x += 0.05 * np.sin(2 * np.pi * (200 * t + 100 * (t % 7) ** 2))
    x += 0.003 * rng.standard_normal(t.size)
    clicks = (np.arange(120) + rng.uniform(0, 1, 120)) * fs
    x[clicks.astype(int)] += rng.uniform(-0.5, 0.5, 120)
    x = x.astype(np.float32)
    return x, fs, build_pyramid(x, fs)


MUSIC_VIEWS = [(0.0, 120.0, 2048, 512), (0.0, 120.0, 97, 300), (13.0, 113.0, 1600, 600), (0.0, 40.0, 1600, 600),
               (3.3, 101.7, 1333, 400)]


def _neighbourhood_max(img: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Per pixel, the largest value within ``rows`` rows and ``cols`` columns of it."""
    p = np.pad(img, ((rows, rows), (cols, cols)), mode="edge")
    H, W = img.shape
    return np.max([p[i : i + H, j : j + W] for i in range(2 * rows + 1) for j in range(2 * cols + 1)], axis=0)


def _over(a: np.ndarray, b: np.ndarray, reference: float, rows: int, cols: int, floor_db: float = -80.0) -> float:
    """Largest dB by which a pixel of ``a`` above the floor (not in the top or bottom row, where a
    refined peak may leave the picture) exceeds ``b`` around it."""
    loud = a > reference * 10 ** (floor_db / 20)
    loud[0] = loud[-1] = False
    return float(_db(a, np.minimum(a, _neighbourhood_max(b, rows, cols)))[loud].max())


@pytest.mark.parametrize("view", MUSIC_VIEWS)
def test_a_view_is_stft_image_of_the_frames_it_gives_each_column(music, view):
    """The real bound (docs/design.md, "Numerical contract"): against stft_image of the same
    frames per column, a pixel is its bytes' 0.5 dB step away (+-0.25 dB), but a spectral peak
    refined from two quantised neighbours may land one row over (at the top or bottom row, out
    of the picture) and gain up to 1.42 dB less or more."""
    from soma_shm.kernels.pyramid import _block_range

    x, fs, pyr = music
    t0, t1, width, height = view
    lay = pyr.layout
    level = lay.level_for((t1 - t0) * fs / lay.hop / width)
    S = lay.frames_per_block_at(level)
    col_a, col_b = soma_shm.plans.column_bounds(t0, t1, width, fs)
    same = np.empty((height, width), np.float32)
    for c in range(width):
        lo, hi = _block_range(col_a[c], col_b[c], lay.hop, S, lay.blocks[level], lay.frames - 1, c == 0, c == width - 1)
        j0, j1 = lo * S, min((hi + 1) * S, lay.frames) - 1
        same[:, c:c + 1] = soma_shm.stft_image(x, fs, j0 * lay.hop / fs, (j1 * lay.hop + 1) / fs, 20.0, 7_900.0,
                                                1, height)
    cut = pyr.image(t0, t1, 20.0, 7_900.0, width, height)
    ref = soma_shm.render.reference_level(x, fs)
    loud = same > ref * 1e-4  # above -80 dB
    assert np.percentile(_db(cut, same)[loud], 95) <= 0.25 + 1e-3  # the half step, on most pixels
    assert _over(cut, same, ref, rows=1, cols=0) <= 0.25 + 1.42 + 0.05
    assert _over(same, cut, ref, rows=1, cols=0) <= 0.25 + 1.42 + 0.05


@pytest.mark.parametrize("view", MUSIC_VIEWS)
def test_a_view_matches_stft_image_up_to_a_frame_moved_to_the_next_column(music, view):
    """Against stft_image of the same view, a single pixel may differ by as much as a click stands
    above its surroundings (44 dB here): whole blocks go to the column holding their centre, so a
    frame within half a block of a column's edge is shown in the next column. Nothing is lost or
    made up: every pixel above the floor is matched within 5 dB (4.5 dB measured: refining the
    peaks of a column that pools frames of two) by the other image one column and one row around
    it. Every frame of the view is in it (the first and last columns take the block across the
    view's edge); those two columns may also show up to half a block beyond the view."""
    x, fs, pyr = music
    t0, t1, width, height = view
    direct = soma_shm.stft_image(x, fs, t0, t1, 20.0, 7_900.0, width, height)
    cut = pyr.image(t0, t1, 20.0, 7_900.0, width, height)
    ref = soma_shm.render.reference_level(x, fs)
    assert _over(direct, cut, ref, rows=1, cols=1) <= 5.0
    assert _over(cut[:, 1:-1], direct[:, 1:-1], ref, rows=1, cols=1) <= 5.0


@pytest.mark.parametrize("edge", ["first", "last"])
def test_a_click_in_the_first_or_last_frame_of_a_view_is_shown(edge):
    fs = 8_000
    x = make_audio(300.0, fs, freqs=(), noise=1e-4, seed=7)
    pyr = build_pyramid(x, fs)
    lay = pyr.layout
    rng = np.random.default_rng(1)
    for width in (2048, 1500, 400, 97, 40):
        span = float(rng.uniform(40.0, 150.0))
        S = lay.frames_per_block_at(lay.level_for(span * fs / lay.hop / width))
        # The frame at the view's edge whose block is centred outside the view.
        b = int(rng.uniform(140.0, 160.0) * fs / lay.hop) // S
        j = b * S + S - 1 if edge == "first" else b * S
        y = x.copy()
        y[j * lay.hop] = 0.9
        cut = build_pyramid(y, fs).image
        t0 = j * lay.hop / fs if edge == "first" else (j * lay.hop + 1) / fs - span
        view = (t0, t0 + span, 100.0, 3_000.0, width, 64)
        direct = soma_shm.stft_image(y, fs, *view)
        col = 0 if edge == "first" else width - 1
        assert direct[:, col].max() > 100 * direct[:, width // 2].max()  # the click is in the view
        assert _db(cut(*view)[:, col].max(), direct[:, col].max()) <= 2.0, (width, S)


def test_views_choose_coarser_levels_for_wider_columns(steady_pyramid):
    lay = steady_pyramid.layout
    assert lay.frames_per_block == lay.nfft // lay.hop == 2
    # The finest level with at least four blocks per column (level L: 2 * 8**L frames per block).
    assert [lay.level_for(f) for f in (0.5, 2, 63.9, 64, 511, 512, 4096)] == [0, 0, 0, 1, 1, 2, 3]
    assert lay.blocks[0] == -(-lay.frames // 2) and all(b == -(-a // 8) for a, b in zip(lay.blocks, lay.blocks[1:]))
    assert lay.blocks[-1] == 1
    # Bounded size: about 1/7 of the float32 audio, whatever the length.
    assert steady_pyramid.nbytes < 0.16 * 4 * lay.samples


def test_build_writes_into_the_callers_buffer_and_reports_progress(steady):
    x, fs = steady
    x = x[: fs * 20]
    lay = PyramidLayout.for_recording(len(x), fs, 512, 256)
    buf = np.zeros(lay.nbytes + 100, np.uint8)
    seen = []
    pyr = build_pyramid(x, fs, out=buf, progress=seen.append)
    assert pyr.buffer is buf and pyr.layout == lay and buf[: lay.nbytes].any()
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen) and len(seen) >= 10


def test_silence_and_tiny_recordings():
    fs = 8_000
    pyr = build_pyramid(np.zeros(fs * 40, np.float32), fs)
    img = pyr.image(0.0, 40.0, 50.0, 4_000.0, 100, 20)
    assert np.all(img == 0.0)
    x = make_audio(0.01, fs, freqs=(1000.0,))  # fewer frames than one block
    pyr = build_pyramid(x, fs)
    img = pyr.image(0.0, 0.01, 100.0, 4_000.0, 3, 30)
    direct = soma_shm.stft_image(x, fs, 0.0, 0.01, 100.0, 4_000.0, 3, 30)
    assert img.max() == pytest.approx(direct.max(), rel=0.06)


def test_bad_input_is_a_named_error(steady, steady_pyramid):
    x, fs = steady
    pyr = steady_pyramid
    other = soma_shm.AnalysisSettings(stft_window_ms=100.0)
    with pytest.raises(ParameterError, match="512-point frames at hop 256.*2048-point.*build a pyramid with these settings"):
        pyr.image(0, 100, 50, 4000, 100, 50, settings=other)
    with pytest.raises(ParameterError, match="outside the file"):
        pyr.image(0, 300, 50, 4000, 100, 50)
    with pytest.raises(ParameterError, match=r"out has shape \(50, 100\) and dtype float64; expected \(50, 100\) float32"):
        pyr.image(0, 100, 50, 4000, 100, 50, out=np.empty((50, 100), np.float64))
    with pytest.raises(ParameterError, match="reference=-1"):
        build_pyramid(x[:1000], fs, reference=-1.0)
    with pytest.raises(ParameterError, match="at least"):
        build_pyramid(x[:fs * 10], fs, out=np.empty(10, np.uint8))
    out = np.empty((50, 100), np.float32)
    assert pyr.image(0, 100, 50, 4000, 100, 50, out=out) is out


def _pcm16(seconds: float, fs: int) -> np.ndarray:
    x = make_audio(seconds, fs, freqs=(440.0, 1500.0), amp=0.2, noise=0.01)
    x[int(0.4 * x.size)] = 0.9  # a click
    return (np.round(x * 32768) / 32768).astype(np.float32)  # what a 16-bit file holds


@pytest.mark.parametrize("fs, seconds", [(8_000, 30.0), (44_100, 61.3)])
def test_built_while_decoding_equals_the_build_after_it(fs, seconds):
    from soma_shm.pyramid import HEADROOM_DB, ProgressiveBuild
    from soma_shm.render import reference_level

    x = _pcm16(seconds, fs)
    settings = soma_shm.AnalysisSettings()
    layout = PyramidLayout.for_recording(x.size, fs, settings.stft_nfft(fs), settings.stft_hop(fs))
    build = ProgressiveBuild(x, fs, settings, np.zeros(layout.nbytes, np.uint8), full_scale=2.0)
    # Three decoders, each growing its own range chunk by chunk, seams at odd samples.
    edges = [0, 70_001, 150_007, x.size]
    fractions = []
    for stop in range(5_000, edges[-1] - edges[-2] + 5_000, (edges[-1] - edges[-2]) // 24):
        for k in range(3):
            build.add(k, edges[k], min(edges[k] + stop, edges[k + 1]))
        build.step()
        fractions.append(build.fraction)
    assert 0 < fractions[0] < fractions[5] < 1.0 == fractions[-1] and fractions == sorted(fractions)
    pyr = build.finish()
    # The file's 0 dB level, pooled from the same transforms, is the one computed from the audio
    # after decoding, bit for bit (the engine, the batch pipeline and the export agree on it).
    assert build.reference() == reference_level(x, fs)
    # Byte 255 stays at full scale, and every byte is the one a build after decoding writes
    # with that top: the same views.
    assert pyr.top == 2.0
    after = build_pyramid(x, fs, settings, reference=pyr.top / 10 ** (HEADROOM_DB / 20))
    for got, level in zip(pyr.levels, after.levels):
        np.testing.assert_array_equal(got, level)
    np.testing.assert_allclose(pyr.image(0, seconds, 50, 3000, 300, 60), after.image(0, seconds, 50, 3000, 300, 60),
                               rtol=1e-6)


def test_the_level_of_a_recording_too_short_for_its_columns_is_left_to_the_audio():
    from soma_shm.pyramid import ProgressiveBuild

    fs = 8_000
    x = _pcm16(0.5, fs)  # fewer frames than the 0 dB level's image has columns
    settings = soma_shm.AnalysisSettings()
    layout = PyramidLayout.for_recording(x.size, fs, settings.stft_nfft(fs), settings.stft_hop(fs))
    assert layout.frames < 256
    build = ProgressiveBuild(x, fs, settings, np.zeros(layout.nbytes, np.uint8))
    build.add(0, 0, x.size)
    build.finish()
    assert build.reference() is None


def test_a_partial_build_shows_what_is_decoded_and_silence_elsewhere():
    from soma_shm.pyramid import ProgressiveBuild

    fs = 8_000
    x = _pcm16(20.0, fs)
    settings = soma_shm.AnalysisSettings()
    layout = PyramidLayout.for_recording(x.size, fs, settings.stft_nfft(fs), settings.stft_hop(fs))
    build = ProgressiveBuild(x, fs, settings, np.zeros(layout.nbytes, np.uint8), full_scale=2.0)
    build.add(0, 0, 5 * fs)  # the first quarter
    build.add(1, 10 * fs, 15 * fs)  # and the third
    build.step()
    img = build.pyramid.image(0.0, 20.0, 50, 3000, 200, 40)
    loud = img.max(axis=0) > 0.01
    assert loud[5:45].all() and loud[105:145].all()  # columns inside the decoded parts
    assert not loud[55:95].any() and not loud[155:].any()  # nothing made up elsewhere
    with pytest.raises(soma_shm.AudioFormatError, match="parts of the file were never decoded"):
        build.finish()
    assert build.reference() is None  # nor a 0 dB level before every block is built
