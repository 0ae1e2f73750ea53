"""MP3 (MPEG audio) framing: where the recording's samples are in what libsndfile decodes.

An MP3 decodes to more than the recording it was made from: the encoder's and the decoder's delay
before it, the last frame's padding after it. :func:`mpeg_layout` reads the file's first frame (a
Xing/Info header and its LAME extension) or, in a file without one, counts the frames, and says
which of the decoder's samples are the recording's; :mod:`soma_shm.audio` decodes just those.

Written by hand: the header's fields are a few bytes at fixed offsets, and the tag library that
reads them (mutagen) exposes the delay only through private classes and does not count a
headerless file's frames, which is what that file's length needs.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass

from .errors import AudioFormatError

# An MP3 encoder starts its first frame before the recording's first sample (LAME: 576 samples of
# encoder delay) and fills its last frame past the recording's end (padding); the decoder's
# synthesis filterbank adds 529 samples of delay of its own. LAME (and ffmpeg, in the same layout)
# records the encoder delay and the padding in the LAME extension of a Xing/Info header (a first
# frame that holds no audio). Measured with libsndfile 1.2.2 (mpg123 with MPG123_GAPLESS) on
# files from LAME 3.100 at 8 to 48 kHz:
# - with the extension, libsndfile removes all of it: its first sample is the recording's first
#   and its frame count the recording's;
# - with a Xing/Info frame count but no extension, it removes the decoder's 529 samples only;
# - without a Xing/Info header (sox writes none; `lame -t`) it decodes everything: the recording
#   starts 1105 = 576 + 529 samples in, and its frame count is an estimate from the file size,
#   above the frames there are at 44.1 kHz (whose frames differ in size by a byte: such a file
#   was refused as truncated) and below them when the bitrate varies (where it stops reading).
MPEG_DECODER_DELAY = 529  # samples: the Layer III decoder's own delay (polyphase + IMDCT overlap)
LAME_ENCODER_DELAY = 576  # samples: LAME's encoder delay, the same at every rate and bitrate

# Bitrates (kbit/s) by index 1..14, per (MPEG-1?, layer); MPEG-2/2.5 Layers II and III share one.
_BITRATES = {
    (True, 1): (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_BITRATES[(False, 3)] = _BITRATES[(False, 2)]
_RATES = {3: (44_100, 48_000, 32_000), 2: (22_050, 24_000, 16_000), 0: (11_025, 12_000, 8_000)}
_STREAM_BITS = 0xFFFE0C00  # sync, version, layer and sample rate: the same in every frame of a stream


@dataclass(frozen=True)
class _MpegStream:
    """The first frame of an MPEG audio stream and what it says about the whole."""

    start: int  # byte offset of the first frame
    key: int  # its header's _STREAM_BITS
    layer: int
    samples_per_frame: int
    sizes: tuple  # frame size in bytes by header bits 15..9 (bitrate, rate, padding); 0: invalid
    info: bool  # the first frame is a Xing/Info header, not audio
    info_frames: int | None  # audio frames the Xing/Info header counts (None: no header or no count)
    delay: int | None  # the LAME extension's encoder delay and padding (None: no extension)
    padding: int | None


def _frame_sizes(header: int) -> tuple[int, int, tuple] | None:
    """(layer, samples per frame, sizes by header bits 15..9) of a stream whose frames have the
    version, layer and sample rate of ``header``; None when those are reserved values."""
    version, layer_bits, rate_index = (header >> 19) & 3, (header >> 17) & 3, (header >> 10) & 3
    if version == 1 or layer_bits == 0 or rate_index == 3:
        return None
    layer = 4 - layer_bits
    mpeg1 = version == 3
    rate = _RATES[version][rate_index]
    spf = 384 if layer == 1 else 1152 if (layer == 2 or mpeg1) else 576
    sizes = []
    for bits in range(128):
        index, pad = bits >> 3, bits & 1
        if (bits >> 1) & 3 != rate_index or not 1 <= index <= 14:
            sizes.append(0)
            continue
        kbps = _BITRATES[(mpeg1, layer)][index - 1]
        sizes.append((12_000 * kbps // rate + pad) * 4 if layer == 1 else spf // 8 * 1000 * kbps // rate + pad)
    return layer, spf, tuple(sizes)


def _mpeg_stream(mm) -> _MpegStream | None:
    """Find the first frame (after any ID3v2 tags) and read its Xing/Info/LAME header."""
    pos, n = 0, len(mm)
    while mm[pos : pos + 3] == b"ID3" and pos + 10 <= n:  # ID3v2: a syncsafe size, maybe a footer
        size = 0
        for b in mm[pos + 6 : pos + 10]:
            size = (size << 7) | (b & 0x7F)
        pos += 10 + size + (10 if mm[pos + 5] & 0x10 else 0)
    while True:
        pos = mm.find(b"\xff", pos)
        if pos < 0 or pos + 4 > n:
            return None
        header = int.from_bytes(mm[pos : pos + 4], "big")
        layout = _frame_sizes(header) if header & 0xFFE00000 == 0xFFE00000 else None
        size = layout[2][(header >> 9) & 0x7F] if layout else 0
        # A frame is taken as the stream's first when the next one follows it (or the file ends).
        if size and (pos + size + 4 > n or int.from_bytes(mm[pos + size : pos + size + 4], "big")
                     & _STREAM_BITS == header & _STREAM_BITS):
            break
        pos += 1
    layer, spf, sizes = layout
    mpeg1, mono = (header >> 19) & 3 == 3, (header >> 6) & 3 == 3
    side_info = (17 if mono else 32) if mpeg1 else (9 if mono else 17)
    at = pos + 4 + (0 if header & 0x10000 else 2) + side_info
    info_frames = delay = padding = None
    info = layer == 3 and mm[at : at + 4] in (b"Xing", b"Info")
    if info:
        flags = int.from_bytes(mm[at + 4 : at + 8], "big")
        field = at + 8
        if flags & 1:
            info_frames = int.from_bytes(mm[field : field + 4], "big")
            field += 4
        field += (4 if flags & 2 else 0) + (100 if flags & 4 else 0) + (4 if flags & 8 else 0)
        # The LAME extension: a 9-byte encoder name ("LAME3.100", "Lavc59.37"), then 12 bytes of
        # settings and gains, then the encoder delay and the padding, 12 bits each.
        name = bytes(mm[field : field + 4])
        if len(name) == 4 and all(32 < b < 127 for b in name) and field + 24 <= min(n, pos + sizes[(header >> 9) & 0x7F]):
            both = int.from_bytes(mm[field + 21 : field + 24], "big")
            delay, padding = both >> 12, both & 0xFFF
    return _MpegStream(pos, header & _STREAM_BITS, layer, spf, sizes, info, info_frames, delay, padding)


def _count_frames(mm, stream: _MpegStream) -> tuple[int, bool]:
    """(audio frames in the stream, whether LAME signed it), walking frame headers from the first
    frame; a Xing/Info frame is not audio. Junk between frames is skipped as a decoder does (to
    the next header of the same stream whose successor follows it); the walk ends at the last frame
    (trailing ID3v1/APE tags are not frames)."""
    n, key, sizes = len(mm), stream.key, stream.sizes
    pos, count = stream.start, 0
    while pos + 4 <= n:
        header = int.from_bytes(mm[pos : pos + 4], "big")
        size = sizes[(header >> 9) & 0x7F] if header & _STREAM_BITS == key else 0
        if size and pos + size <= n:
            count += 1
            pos += size
            continue
        nxt = mm.find(b"\xff", pos + 1)
        while nxt >= 0 and nxt + 4 <= n:
            header = int.from_bytes(mm[nxt : nxt + 4], "big")
            size = sizes[(header >> 9) & 0x7F] if header & _STREAM_BITS == key else 0
            if size and (nxt + size == n or int.from_bytes(mm[nxt + size : nxt + size + 4], "big") & _STREAM_BITS == key):
                break
            nxt = mm.find(b"\xff", nxt + 1)
        else:
            break
        pos = nxt
    return count - stream.info, _lame_signed(mm)


def _lame_signed(mm) -> bool:
    """Whether LAME encoded the stream: it writes its name and version into the bits a frame
    leaves over (in the padded last frames at least), so a headerless file from lame, sox or
    ffmpeg carries it in its data."""
    return re.search(rb"LAME\d\.\d", mm) is not None


def mpeg_layout(path: str | os.PathLike, decoded: int) -> tuple[int, int] | None:
    """``(lead, frames)`` of an MPEG audio file whose libsndfile decoder reports ``decoded``
    frames: the recording's first sample is sample ``lead`` of the decoder's output and it has
    ``frames`` samples. None when the file's frames cannot be parsed (libsndfile's word stands).

    Raises
    ------
    AudioFormatError
        A headerless variable-bitrate file that libsndfile would cut short (it stops reading at
        its estimate of the length).
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    # A headerless file's frames are counted (0.1 s for an hour): once per version of the file,
    # not again when decode_into follows audio_info.
    return _mpeg_layout_of(str(path), st.st_mtime_ns, st.st_size, decoded)


@functools.lru_cache(maxsize=16)
def _mpeg_layout_of(path: str, mtime_ns: int, size: int, decoded: int) -> tuple[int, int] | None:
    import mmap

    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            stream = _mpeg_stream(mm)
            if stream is None:
                return None
            spf = stream.samples_per_frame
            lame = bool(stream.delay or stream.padding)  # 0 and 0 (or none): no extension
            if stream.info_frames is not None:
                count = stream.info_frames
                signed = lame or (stream.layer == 3 and _lame_signed(mm))
            else:
                count, signed = _count_frames(mm, stream)
    except (OSError, ValueError):
        return None
    whole = count * spf
    if stream.layer != 3:  # no encoder delay to read or assume: only the length is mended
        return 0, min(whole, decoded)
    # Where the recording starts in the decoder's whole output: the encoder's delay (the LAME
    # extension's; LAME's own when LAME signed a file without one; otherwise unknown, so none:
    # no guess moves the content early) plus the decoder's.
    begins = (stream.delay if lame else LAME_ENCODER_DELAY if signed else 0) + MPEG_DECODER_DELAY
    if stream.info_frames is None:
        # No frame count, no trimming by libsndfile, and its length is an estimate.
        if whole > decoded + spf:
            raise AudioFormatError(
                f"{str(path)!r} is an MP3 without a Xing/Info header whose bitrate varies: libsndfile "
                f"would decode only its first {decoded} of {whole} samples; convert it "
                "(e.g. `sox in.mp3 out.flac`) or re-encode it with a header (`lame -V2 in.wav out.mp3`)"
            )
        stop = min(whole, decoded)  # an estimate short by part of a frame cuts padding only
        return begins, max(0, stop - begins)
    # With a frame count, mpg123 skips its decoder delay (and the extension's encoder delay) and
    # stops at the padding itself: what it skipped shows in the frames it reports.
    skipped = {whole: 0, whole - MPEG_DECODER_DELAY: MPEG_DECODER_DELAY}
    if lame:
        skipped[whole - stream.delay - stream.padding] = stream.delay + MPEG_DECODER_DELAY
    if decoded not in skipped:
        return 0, decoded  # some other decoder behaviour: its word stands
    lead = max(0, begins - skipped[decoded])
    frames = decoded - lead
    if lame:
        frames = min(frames, whole - stream.delay - stream.padding)
    return lead, max(0, frames)
