"""libFLAC's per-frame callbacks, compiled to C: each decoded frame mixed to mono float32 straight
into the caller's buffer, and decoding errors counted.

libFLAC calls ``write_frame`` from inside ``FLAC__stream_decoder_process_single`` (see
:mod:`soma_shm._flac`) with one frame of planar 32-bit integer samples. Being compiled C, the
callback needs no GIL: decoders in several threads run truly in parallel, and no sample passes
through Python or an intermediate interleaved buffer.

The per-decoder state is an int64 array the caller owns (``client_data``), indices ``ST_*``.
Mixing equals reading integers and scaling them (soma_shm.audio): the channels' integer sum
times ``2**-(bits-1) / channels`` in float64, rounded once to float32 (exact for 16-bit audio
and power-of-two channel counts).
"""

from __future__ import annotations

import numpy as np
from numba import types
from numba.extending import intrinsic

from ._jit import jit_cfunc

ST_OUT = 0  # address of the float32 destination (sample k of the file at index k)
ST_START = 1  # first sample of this decoder's range
ST_STOP = 2  # end of the range (exclusive)
ST_DONE = 3  # samples start..done are written
ST_ERRORS = 4  # errors libFLAC reported
ST_STATUS = 5  # the last error's FLAC__StreamDecoderErrorStatus
ST_SIZE = 6

WRITE_CONTINUE = 0  # FLAC__STREAM_DECODER_WRITE_STATUS_CONTINUE
WRITE_ABORT = 1  # FLAC__STREAM_DECODER_WRITE_STATUS_ABORT: the range is complete

# FLAC__FrameHeader as 32-bit words: blocksize, sample_rate, channels, channel_assignment,
# bits_per_sample, number_type, (padding), then the 64-bit sample number at byte 24 (libFLAC
# always hands its write callback a sample number, converting frame numbers itself).
_H_BLOCKSIZE, _H_CHANNELS, _H_BITS, _H_NUMBER_LO, _H_NUMBER_HI = 0, 2, 4, 6, 7


@intrinsic
def _float32_at(typingctx, address):
    """The int64 ``address`` as a float32 pointer (the state array holds the destination's address)."""
    sig = types.CPointer(types.float32)(types.int64)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

    return sig, codegen


@jit_cfunc(types.int32(types.voidptr, types.CPointer(types.uint32),
                       types.CPointer(types.CPointer(types.int32)), types.CPointer(types.int64)))
def write_frame(decoder, header, channels, state):
    n = np.int64(header[_H_BLOCKSIZE])
    nch = np.int64(header[_H_CHANNELS])
    first = np.int64(header[_H_NUMBER_LO]) | (np.int64(header[_H_NUMBER_HI]) << 32)
    lo = max(first, state[ST_START])
    hi = min(first + n, state[ST_STOP])
    if hi > lo:
        out = _float32_at(state[ST_OUT])
        factor = 1.0 / (2.0 ** (np.int64(header[_H_BITS]) - 1)) / nch
        if nch == 1:
            a = channels[0]
            for k in range(lo, hi):
                out[k] = np.float32(a[k - first] * factor)
        elif nch == 2:
            a = channels[0]
            b = channels[1]
            for k in range(lo, hi):
                out[k] = np.float32((np.int64(a[k - first]) + b[k - first]) * factor)
        else:
            for k in range(lo, hi):
                s = np.int64(0)
                for c in range(nch):
                    s += channels[c][k - first]
                out[k] = np.float32(s * factor)
        state[ST_DONE] = hi
    return WRITE_ABORT if first + n >= state[ST_STOP] else WRITE_CONTINUE


@jit_cfunc(types.void(types.voidptr, types.int32, types.CPointer(types.int64)))
def count_error(decoder, status, state):
    state[ST_ERRORS] += 1
    state[ST_STATUS] = status
