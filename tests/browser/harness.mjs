// Shared by the browser tests: a real `segany serve` on a loopback port, Debian's Chromium
// through playwright-core, and an independent decoder of COCO compressed RLE.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { chromium } from 'playwright-core';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const FIXTURES = path.join(ROOT, 'tests/fixtures');
const BIN = process.env.SEGANY_BIN ?? path.join(ROOT, 'target/release/segany');

export const CHROMIUM_FLAGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync',
];

/** Starts `segany serve` with a random test checkpoint (`fixture`: `tiny`, a small ViT, or
 * `tiny_vit_t`, a small TinyViT); resolves to { url, stop, log }. */
export function startServer(extraArgs = [], fixture = 'tiny') {
  return serve([
    '--checkpoint', path.join(FIXTURES, fixture, 'checkpoint.pth'),
    '--config', path.join(FIXTURES, fixture, 'sam_config.json'), ...extraArgs,
  ]);
}

/** Starts `bin serve ARGS` on a free loopback port; resolves to { url, stop, log } once it listens. */
export async function serve(args, bin = BIN) {
  const child = spawn(bin, ['serve', '--addr', '127.0.0.1:0', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`segany serve did not start:\n${log}`)), 60_000);
    const onData = (chunk) => {
      log += chunk;
      const m = log.match(/listening on (http:\/\/\S+)/);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`segany serve exited (${code}):\n${log}`)); });
  });
  const stop = () => new Promise((resolve) => {
    if (child.exitCode !== null) return resolve();
    child.removeAllListeners('exit');
    child.on('exit', resolve);
    child.kill('SIGTERM');
  });
  return { url, stop, log: () => log };
}

export async function launch(extraFlags = []) {
  return chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args: [...CHROMIUM_FLAGS, ...extraFlags] });
}

/** Decodes a COCO RLE ({size:[h,w], counts: string|number[]}) into a row-major h×w Uint8Array.
 * Written from the pycocotools format description: counts alternate 0-runs and 1-runs in
 * column-major order; compressed strings hold 5-bit groups offset by 48, with a continuation bit
 * (0x20), a sign bit on the last group, and each run after the second stored relative to the run
 * two before it. */
export function decodeRle({ size: [h, w], counts }) {
  let runs = counts;
  if (typeof counts === 'string') {
    runs = [];
    let p = 0;
    while (p < counts.length) {
      let x = 0, k = 0, more = true, c = 0;
      while (more) {
        c = counts.charCodeAt(p) - 48;
        x |= (c & 0x1f) << (5 * k);
        more = (c & 0x20) !== 0;
        p++; k++;
        if (!more && (c & 0x10)) x |= -1 << (5 * k);
      }
      if (runs.length > 2) x += runs[runs.length - 2];
      runs.push(x);
    }
  }
  const columnMajor = new Uint8Array(h * w);
  let at = 0, value = 0;
  for (const r of runs) {
    if (value) columnMajor.fill(1, at, at + r);
    at += r;
    value ^= 1;
  }
  if (at !== h * w) throw new Error(`RLE covers ${at} pixels, the image has ${h * w}`);
  const mask = new Uint8Array(h * w);
  for (let x = 0; x < w; x++) for (let y = 0; y < h; y++) mask[y * w + x] = columnMajor[x * h + y];
  return mask;
}

/** Row-major run lengths (starting with a run of 0s) of the pixels a canvas layer of the app has
 * painted (alpha > 0). `widget`: the id of a <segany-segmenter> whose shadow root holds the app,
 * or null for the page. */
export function paintedLayer(page, layer, widget = null) {
  return page.evaluate(([layer, widget]) => {
    const root = widget ? document.getElementById(widget).shadowRoot : document;
    const c = root.querySelector(`canvas[data-sg="${layer}"]`);
    const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    const runs = [];
    let value = 0, run = 0;
    for (let i = 3; i < data.length; i += 4) {
      const v = data[i] > 0 ? 1 : 0;
      if (v !== value) { runs.push(run); run = 0; value = v; }
      run++;
    }
    runs.push(run);
    return { width: c.width, height: c.height, runs };
  }, [layer, widget]);
}

/** Row-major run lengths of a 0/1 mask, as paintedLayer gives them. */
export function runsOf(mask) {
  const runs = [];
  let value = 0, run = 0;
  for (const v of mask) {
    if (v !== value) { runs.push(run); run = 0; value = v; }
    run++;
  }
  runs.push(run);
  return runs;
}

/** Pixels set, from run lengths. */
export const areaOf = (runs) => runs.reduce((a, r, i) => a + (i % 2 ? r : 0), 0);

/** An embedding in segany's wire format (SEGANYE1: magic, u32 header length, JSON header, zero
 * padding to a multiple of 8, little-endian f16/f32 values): { header, values: Float32Array }. */
export function decodeWire(bytes) {
  const b = Buffer.from(bytes);
  if (b.subarray(0, 8).toString('latin1') !== 'SEGANYE1') throw new Error('not a SEGANYE1 embedding');
  const len = b.readUInt32LE(8);
  const header = JSON.parse(b.subarray(12, 12 + len).toString('utf8'));
  const offset = Math.ceil((12 + len) / 8) * 8;
  const n = header.shape.reduce((a, d) => a * d, 1);
  if (header.dtype !== 'f32') throw new Error(`decodeWire reads f32, not ${header.dtype}`);
  const values = new Float32Array(n);
  for (let i = 0; i < n; i++) values[i] = b.readFloatLE(offset + 4 * i);
  return { header, values };
}
