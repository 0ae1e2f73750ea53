"""Multi-resolution pooled STFT pyramid (numba kernels).

Level 0 holds, per block of ``frames_per_block`` consecutive STFT frames (frame ``j`` centred on
sample ``j*hop``, as in :mod:`.stft`), the maximum power of every FFT bin, quantised to one byte
on a log scale through a lookup table (``lut``, indexed by the top 16 bits of the float32 power,
which orders like the power itself). Level ``L+1`` is the element-wise maximum of ``factor``
consecutive level-``L`` blocks; bytes order like powers, so that maximum is exact.

An image column takes the maximum of the blocks whose centre lies among its frames, then maps
bins to rows with the STFT's own ``bins_to_rows`` (the same row bands, interpolation and Hann peak
refinement), so a view cut from the pyramid matches :func:`.stft.stft_pooled_image` up to the
quantisation step and to frames within half a block of a column edge.
"""

from __future__ import annotations

import math

import numpy as np

from ._jit import jit, jit_callee, jit_parallel, prange
from .stft import _fill_frames

BUILD_TASKS = 64  # parallel tasks per build call (contiguous runs of blocks)
FFT_BLOCKS = 4  # blocks transformed per FFT call while building level 0 (8 frames at 50 % overlap)


@jit_callee
def _keep_column(acc, col, t, first_col, last_col, ref_power, ref_edge):
    """Pool one task's part of reference column ``col`` (see build_base)."""
    if col < 0:
        return
    if col == first_col:
        dst = ref_edge[t, 0]
    elif col == last_col:
        dst = ref_edge[t, 1]
    else:  # every frame of this column is in this task: no other task writes it
        dst = ref_power[col]
    for k in range(acc.shape[0]):
        if acc[k] > dst[k]:
            dst[k] = acc[k]


@jit_parallel
def build_base(audio, window, hop, n_frames, frames_per_block, lut, b_start, b_stop, base,
               ref_col, ref_power, ref_edge, ref_edge_col):
    """Fill blocks ``b_start..b_stop-1`` of level 0 (``base``: (blocks, nfft//2+1) uint8).

    Frames ``j >= n_frames`` (centred beyond the last sample) are not part of the transform and
    are left out of the last block. Each task walks its share of blocks ``FFT_BLOCKS`` at a time:
    small FFT batches stay in cache (a batch of 128 frames of 2048 ran 3x slower per frame).

    From the same transforms it pools the power spectrum of another image's columns (the file's
    0 dB level is the peak of a coarse whole-file image, :func:`soma_shm.render.reference_level`):
    frame ``j`` belongs to column ``ref_col[j]`` (``ref_col`` empty: no pooling). Power is pooled
    in float64 exactly as :func:`.stft.stft_pooled_image` pools it. A column whose frames all lie
    inside one task is pooled straight into ``ref_power[col]``; the first and last column of task
    ``t`` (which a neighbouring task or a later call may share) go to ``ref_edge[t, 0 or 1]``,
    named by ``ref_edge_col[t]`` (-1: none), for the caller to fold into ``ref_power``.
    """
    nfft = window.shape[0]
    nb = base.shape[1]
    F = frames_per_block
    total = b_stop - b_start
    ntasks = max(1, min(BUILD_TASKS, total // FFT_BLOCKS))
    with_ref = ref_col.shape[0] > 0
    for t in range(ref_edge_col.shape[0]):
        ref_edge_col[t, 0] = -1
        ref_edge_col[t, 1] = -1
    for t in prange(ntasks):
        t0 = b_start + t * total // ntasks
        t1 = b_start + (t + 1) * total // ntasks
        if t1 <= t0:
            continue
        frames = np.empty((FFT_BLOCKS * F, nfft), dtype=np.float32)
        pooled = np.empty(nb, dtype=np.float32)
        bits = pooled.view(np.uint32)
        acc = np.zeros(nb if with_ref else 0, dtype=np.float64)
        # int64 throughout (not the literal -1, nor the loop's unsigned index): one compiled
        # _keep_column, not one per combination of argument types.
        first_col = last_col = cur = np.int64(-1)
        task = np.int64(t)
        if with_ref:
            first_col = ref_col[t0 * F]
            last_col = ref_col[min(t1 * F, n_frames) - 1]
            for s in range(2):
                for k in range(nb):
                    ref_edge[t, s, k] = 0.0
            ref_edge_col[t, 0] = first_col
            if last_col != first_col:
                ref_edge_col[t, 1] = last_col
        for b0 in range(t0, t1, FFT_BLOCKS):
            b1 = min(t1, b0 + FFT_BLOCKS)
            part = frames[: (b1 - b0) * F]
            _fill_frames(audio, b0 * F, hop, window, part)
            spec = np.fft.rfft(part)
            for b in range(b1 - b0):
                for k in range(nb):
                    pooled[k] = 0.0
                for f in range(F):
                    j = (b0 + b) * F + f
                    if j >= n_frames:
                        break
                    row = b * F + f
                    if with_ref and ref_col[j] != cur:
                        _keep_column(acc, cur, task, first_col, last_col, ref_power, ref_edge)
                        cur = ref_col[j]
                        for k in range(nb):
                            acc[k] = 0.0
                    for k in range(nb):
                        v = spec[row, k]
                        p = float(v.real) * float(v.real) + float(v.imag) * float(v.imag)
                        if p > pooled[k]:
                            pooled[k] = p
                        if with_ref and p > acc[k]:
                            acc[k] = p
                for k in range(nb):
                    base[b0 + b, k] = lut[bits[k] >> 16]
        if with_ref:
            _keep_column(acc, cur, task, first_col, last_col, ref_power, ref_edge)


@jit_parallel
def reduce_level(src, factor, dst):
    """``dst[i] = max(src[i*factor : (i+1)*factor])`` element-wise."""
    nsrc = src.shape[0]
    nb = src.shape[1]
    for i in prange(dst.shape[0]):
        for k in range(nb):
            dst[i, k] = 0
        for j in range(i * factor, min(nsrc, (i + 1) * factor)):
            for k in range(nb):
                if src[j, k] > dst[i, k]:
                    dst[i, k] = src[j, k]


COLUMNS_PER_TASK = 16  # columns a task makes before writing them out row by row


@jit
def _block_range(ca, cb, hop, S, nblocks, last_frame, first, last):
    """First and last block a column holding samples ``ca..cb`` takes (see pyramid_image);
    ``first``/``last``: the view's first/last column."""
    half = 0.5 * (S - 1)
    ja = (ca + hop - 1) // hop
    jb = cb // hop
    lo = int(math.ceil((ja - 0.5 - half) / S))
    hi = int(math.ceil((jb + 0.5 - half) / S)) - 1
    if jb >= last_frame:
        hi = nblocks - 1
    if ja <= jb:
        # At the view's edges, the block across the edge holds frames of the view: taken too.
        if first:
            lo = min(lo, ja // S)
        if last:
            hi = max(hi, jb // S)
    lo = max(lo, 0)
    hi = min(hi, nblocks - 1)
    if hi < lo:
        b = int(math.floor((0.5 * (ca + cb) / hop - half) / S + 0.5))
        lo = hi = min(max(b, 0), nblocks - 1)
    return lo, hi


@jit_callee
def _column_rows(q, mag_of, delta_of, gain_of, log_bin, row_k0, row_k1, k_lo, k_hi, interp_k, interp_w,
                 row_pos0, log_step, rows):
    """Rows (calibrated magnitude) of one column from its pooled bytes ``q``; see pyramid_image."""
    nb = q.shape[0]
    H = rows.shape[0]
    for r in range(H):
        m = 0
        for k in range(row_k0[r], row_k1[r]):
            m = max(m, q[k])
        rows[r] = mag_of[m]
        k = interp_k[r]
        if k >= 0:
            w = interp_w[r]
            a = (1.0 - w) * mag_of[q[k]] + w * mag_of[q[k + 1]]
            if a > rows[r]:
                rows[r] = a
    inv_step = 1.0 / log_step
    for k in range(max(k_lo, 1), min(k_hi, nb - 1)):
        q0 = q[k]
        if q0 == 0 or not (q0 > q[k - 1] and q0 >= q[k + 1]):
            continue
        # Quantising makes ties: a rising skirt can read flat between two bins. A tie with the
        # upper neighbour is a peak only if the spectrum falls beyond it too.
        if q0 == q[k + 1] and k + 2 < nb and q[k + 2] >= q0:
            continue
        side = 1.0
        qn = q[k + 1]
        if q[k - 1] > qn:
            side = -1.0
            qn = q[k - 1]
        if qn == 0:  # the neighbour is below the range: no ratio to read
            continue
        d = q0 - qn
        delta = delta_of[d]
        if delta <= 1e-6:
            continue
        # log(k + s) to second order in s/k (|s| <= 1/2): below 1e-4 rows for k >= 8.
        sk = side * delta
        if k < 8:
            log_f = math.log(k + sk)
        else:
            u = sk / k
            log_f = log_bin[k] + u - 0.5 * u * u
        r = int(math.floor((row_pos0 - log_f) * inv_step + 0.5))
        if 0 <= r < H:
            a = mag_of[q0] * gain_of[d]
            if a > rows[r]:
                rows[r] = a


@jit_parallel
def pyramid_image(
    level, frames_per_block, hop, n_frames, mag_of, delta_of, gain_of, log_bin, col_a, col_b,
    row_k0, row_k1, k_lo, k_hi, interp_k, interp_w, log_fmax, log_step, bin_hz, out,
):
    """Pooled STFT magnitude image cut from one pyramid level, written into ``out`` (H, W).

    Row ``r`` holds bins ``row_k0[r]..row_k1[r]-1`` (none where it interpolates); only bins
    ``k_lo..k_hi-1`` can be refined into a row.

    Column ``c`` holds the frames centred in samples ``col_a[c]..col_b[c]``; it takes the blocks
    whose centre frame index ``b*S + (S-1)/2`` lies in ``[ja - 1/2, jb + 1/2)`` of its first and
    last frame ``ja, jb`` (adjacent columns split the blocks between them, none is lost), the
    last column of the file also every block after it, the view's first and last column also the
    block across the view's edge (so a frame inside the view is never left out: a block centred
    outside the view still holds it), and a column that holds no block centre the block nearest
    its centre.

    Rows are made as :func:`.stft.bins_to_rows` makes them from the dequantised spectrum (but for
    ties between neighbouring bytes, see below), in the byte domain: a row's plain maximum is a byte maximum (``mag_of[q]`` is the calibrated
    magnitude of byte ``q``), and the Hann peak refinement reads the offset ``delta_of[d]`` and
    magnitude gain ``gain_of[d]`` from the byte difference ``d``
    between a peak and its larger neighbour (a fixed ratio of powers), and ``log_bin[k] = log k``,
    so no logarithm or sine is evaluated per bin. Each task makes ``COLUMNS_PER_TASK`` columns
    and writes them row by row (threads never share a cache line of ``out``).
    """
    H, W = out.shape
    nblocks = level.shape[0]
    nb = level.shape[1]
    S = frames_per_block
    row_pos0 = log_fmax - math.log(bin_hz)
    ntasks = (W + COLUMNS_PER_TASK - 1) // COLUMNS_PER_TASK
    for t in prange(ntasks):
        c0 = t * COLUMNS_PER_TASK
        c1 = min(W, c0 + COLUMNS_PER_TASK)
        q = np.empty(nb, dtype=np.uint8)
        rows = np.empty(H, dtype=np.float32)
        tile = np.empty((H, c1 - c0), dtype=np.float32)
        for c in range(c0, c1):
            lo, hi = _block_range(col_a[c], col_b[c], hop, S, nblocks, n_frames - 1, c == 0, c == W - 1)
            for k in range(nb):
                q[k] = level[lo, k]
            for b in range(lo + 1, hi + 1):
                for k in range(nb):
                    q[k] = max(q[k], level[b, k])
            _column_rows(q, mag_of, delta_of, gain_of, log_bin, row_k0, row_k1, k_lo, k_hi, interp_k, interp_w,
                         row_pos0, log_step, rows)
            for r in range(H):
                tile[r, c - c0] = rows[r]
        for r in range(H):
            for c in range(c0, c1):
                out[r, c] = tile[r, c - c0]
