// The image embedding in the page on WebGPU (the encoder worker, burn's wgpu runtime) against
// onnxruntime-web running the reference's image encoder (ONNX export) on WebGPU and on wasm in the
// same headless Chromium, and against the same server's native CPU embedding, in one run.
// Headless Chromium with --enable-unsafe-webgpu has SwiftShader's WebGPU adapter (a CPU
// implementation) here; on a machine with a GPU, pass --gpu to let Chromium use it.
//
//   node bench/page_embed.mjs --checkpoint CKPT [--onnx ENCODER.onnx] [--config CFG.json] [--image IMG] [--runs 3] [--gpu]
//
// Needs target/release/segany with the page (bench/webgpu.sh builds it). For each side the
// figure is the embedding's own time: the encoder worker's (decode, preprocess, encoder, async
// readback: data-embed-ms) or the server's request round trip (cache misses: each run embeds a
// copy of the image with one pixel changed). The first WebGPU embedding also compiles the shaders
// and is reported apart. Results: stdout and bench/results/page-embed-<date>.json.
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import os from 'node:os';
import path from 'node:path';
import { launch, serve, ROOT } from '../tests/browser/harness.mjs';
import { ortServer, onnxruntimeWebVersion } from './ort_server.mjs';

const { values: opt } = parseArgs({
  options: {
    checkpoint: { type: 'string' },
    onnx: { type: 'string' },
    config: { type: 'string' },
    image: { type: 'string', default: path.join(ROOT, 'fixtures-large/vit_t/image.png') },
    runs: { type: 'string', default: '3' },
    gpu: { type: 'boolean', default: false },
    bin: { type: 'string', default: path.join(ROOT, 'target/release/segany') },
  },
});
if (!opt.checkpoint) {
  console.error('usage: node bench/page_embed.mjs --checkpoint CKPT [--config CFG.json] [--image IMG] [--runs N] [--gpu]');
  process.exit(2);
}
const RUNS = Number(opt.runs);
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };

function startSegany() {
  return serve(['--checkpoint', opt.checkpoint, ...(opt.config ? ['--config', opt.config] : [])], opt.bin);
}

/** Opens the image `runs + 1` times in the page with `?embed=WHERE`; the embedding times, in ms. */
async function pageTimes(browser, url, where, image) {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await page.goto(`${url}/?embed=${where}`);
  const times = [];
  let label = '';
  for (let i = 0; i <= RUNS; i++) {
    // A different file each time (one byte of a PNG text chunk would do, but a fresh name and
    // bytes suffice for the page; the server's cache is keyed by content, so change a pixel).
    const bytes = Buffer.from(image);
    await page.evaluate(() => { const a = document.querySelector('.sg-app'); a.removeAttribute('data-embed-ms'); });
    await page.setInputFiles('[data-sg=file]', { name: `image-${i}.png`, mimeType: 'image/png', buffer: withNoise(bytes, i) });
    await page.waitForFunction(() => {
      const a = document.querySelector('.sg-app');
      return a.dataset.embedMs && a.dataset.ready === '1' && a.dataset.pending === '0';
    }, null, { timeout: 900_000 });
    const on = await page.locator('.sg-app').getAttribute('data-embedded-on');
    if (on !== where) throw new Error(`asked for ${where}, embedded on ${on}: ${await page.locator('[data-sg=embedding]').textContent()}`);
    times.push(Number(await page.locator('.sg-app').getAttribute('data-embed-ms')));
    console.error(`page_embed: ${where} run ${i}: ${times[times.length - 1].toFixed(0)} ms`);
    label = await page.locator('[data-sg=embedding]').textContent();
  }
  await page.close();
  return { first: times[0], times: times.slice(1), label };
}

/** The PNG with a tEXt chunk naming the run: new bytes, same pixels. */
function withNoise(png, i) {
  const text = Buffer.from(`Comment\0run ${i} ${Date.now()}`);
  const chunk = Buffer.alloc(12 + text.length);
  chunk.writeUInt32BE(text.length, 0);
  chunk.write('tEXt', 4, 'latin1');
  text.copy(chunk, 8);
  chunk.writeUInt32BE(crc32(Buffer.concat([Buffer.from('tEXt'), text])), 8 + text.length);
  return Buffer.concat([png.subarray(0, 33), chunk, png.subarray(33)]); // after the IHDR chunk
}

function crc32(buf) {
  let c = ~0;
  for (const b of buf) { c ^= b; for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1)); }
  return ~c >>> 0;
}


/** onnxruntime-web running the encoder export on `ep` ('webgpu' or 'wasm'): ms per run (input
 * preprocessed already: the model's own work only, read back to the CPU). */
async function ortTimes(browser, url, ep) {
  const page = await browser.newPage();
  await page.goto(url);
  await page.waitForFunction(() => typeof ort !== 'undefined');
  const r = await page.evaluate(async ({ ep, runs }) => {
    ort.env.wasm.wasmPaths = '/ort/';
    ort.env.wasm.numThreads = 2;
    const session = await ort.InferenceSession.create('/model.onnx', { executionProviders: [ep], graphOptimizationLevel: 'all' });
    const input = new Float32Array(3 * 1024 * 1024);
    let s = 1;
    for (let i = 0; i < input.length; i++) { s = (s * 1103515245 + 12345) % 2147483648; input[i] = s / 2147483648 - 0.5; }
    const times = [];
    for (let i = 0; i <= runs; i++) {
      const t = performance.now();
      const out = await session.run({ image: new ort.Tensor('float32', input, [1, 3, 1024, 1024]) });
      await out.image_embeddings.getData?.();
      times.push(performance.now() - t);
    }
    return { first: times[0], times: times.slice(1), isolated: self.crossOriginIsolated };
  }, { ep, runs: RUNS });
  await page.close();
  return r;
}

const image = await readFile(opt.image);
const server = await startSegany();
const flags = opt.gpu ? ['--enable-unsafe-webgpu', '--enable-features=Vulkan', '--ignore-gpu-blocklist'] : ['--enable-unsafe-webgpu'];
const browser = await launch(flags);
try {
  const adapter = await (async () => {
    const p = await browser.newPage();
    await p.goto(server.url);
    const info = await p.evaluate(async () => {
      const a = await navigator.gpu?.requestAdapter();
      return a ? { vendor: a.info.vendor, architecture: a.info.architecture, description: a.info.description, isFallbackAdapter: a.info.isFallbackAdapter } : null;
    });
    await p.close();
    return info;
  })();
  const webgpu = await pageTimes(browser, server.url, 'webgpu', image);
  const cpu = await pageTimes(browser, server.url, 'server', image);
  let ortWebgpu = null, ortWasm = null, ortVersion = null;
  if (opt.onnx) {
    const o = await ortServer(await readFile(opt.onnx), 'ort.all.min.js');
    try {
      ortVersion = await onnxruntimeWebVersion();
      ortWebgpu = await ortTimes(browser, o.url, 'webgpu');
      ortWasm = await ortTimes(browser, o.url, 'wasm');
    } finally {
      o.server.close();
    }
  }
  const result = {
    date: new Date().toISOString(),
    checkpoint: opt.checkpoint,
    image: opt.image,
    runs: RUNS,
    chromium: browser.version(),
    adapter,
    cpu: os.cpus()[0]?.model,
    loadavg: os.loadavg(),
    webgpu_first_ms: webgpu.first,
    webgpu_ms: webgpu.times,
    webgpu_median_ms: median(webgpu.times),
    server_first_ms: cpu.first,
    server_ms: cpu.times,
    server_median_ms: median(cpu.times),
    webgpu_over_server: median(webgpu.times) / median(cpu.times),
    onnxruntime_web: ortVersion,
    ort_webgpu_first_ms: ortWebgpu?.first, ort_webgpu_ms: ortWebgpu?.times,
    ort_webgpu_median_ms: ortWebgpu && median(ortWebgpu.times),
    ort_wasm_2t_first_ms: ortWasm?.first, ort_wasm_2t_ms: ortWasm?.times,
    ort_wasm_2t_median_ms: ortWasm && median(ortWasm.times), ort_cross_origin_isolated: ortWasm?.isolated,
    webgpu_over_ort_webgpu: ortWebgpu && median(webgpu.times) / median(ortWebgpu.times),
    labels: { webgpu: webgpu.label, server: cpu.label },
  };
  console.log(JSON.stringify(result, null, 2));
  await mkdir(path.join(ROOT, 'bench/results'), { recursive: true });
  const stamp = result.date.replace(/[-:]/g, '').replace(/\..*/, '');
  await writeFile(path.join(ROOT, `bench/results/page-embed-${stamp}.json`), JSON.stringify(result, null, 2) + '\n');
} finally {
  await browser.close();
  await server.stop();
}
