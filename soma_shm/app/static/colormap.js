// Colour map applied in the page (by the image worker): a 256-entry LUT of packed RGBA (little-endian ABGR words), so
// a uint8 image becomes ImageData with one table lookup per pixel.
const ANCHORS = [ // position, r, g, b: a perceptually ordered dark-to-bright ramp (magma-like)
  [0.00, 0, 0, 4], [0.13, 28, 16, 68], [0.25, 79, 18, 123], [0.38, 129, 37, 129],
  [0.50, 181, 54, 122], [0.63, 229, 80, 100], [0.75, 251, 135, 97], [0.88, 254, 194, 135], [1.00, 252, 253, 191],
];

export function makeLut(anchors = ANCHORS) {
  const lut = new Uint32Array(256);
  let k = 0;
  for (let i = 0; i < 256; i++) {
    const x = i / 255;
    while (k < anchors.length - 2 && x > anchors[k + 1][0]) k++;
    const [x0, r0, g0, b0] = anchors[k], [x1, r1, g1, b1] = anchors[k + 1];
    const u = Math.min(1, Math.max(0, (x - x0) / (x1 - x0)));
    const r = Math.round(r0 + u * (r1 - r0)), g = Math.round(g0 + u * (g1 - g0)), b = Math.round(b0 + u * (b1 - b0));
    lut[i] = (255 << 24) | (b << 16) | (g << 8) | r;
  }
  return lut;
}

export const LUT = makeLut();
