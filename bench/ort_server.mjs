// A static server for onnxruntime-web and one ONNX model, for the page benchmarks: the page at
// `/` loads `/ort/<script>` (from bench/web's npm onnxruntime-web), the model is `/model.onnx`.
// Cross-origin isolated (COOP/COEP), so that onnxruntime-web's wasm threads may start.
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { ROOT } from '../tests/browser/harness.mjs';

export const ORT_DIST = path.join(ROOT, 'bench/web/node_modules/onnxruntime-web/dist');

export async function ortServer(onnxBytes, script = 'ort.wasm.min.js') {
  const html = `<!doctype html><meta charset="utf-8"><script src="/ort/${script}"></script>`;
  const server = createServer(async (req, res) => {
    res.setHeader('Cross-Origin-Opener-Policy', 'same-origin');
    res.setHeader('Cross-Origin-Embedder-Policy', 'require-corp');
    try {
      if (req.url === '/') return res.end(html);
      if (req.url === '/model.onnx') return res.end(onnxBytes);
      if (req.url.startsWith('/ort/')) {
        const name = path.basename(req.url.slice(5));
        res.setHeader('Content-Type', name.endsWith('.wasm') ? 'application/wasm' : 'text/javascript');
        return res.end(await readFile(path.join(ORT_DIST, name)));
      }
    } catch { /* fall through */ }
    res.statusCode = 404;
    res.end();
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { server, url: `http://127.0.0.1:${server.address().port}/` };
}

/** The onnxruntime-web version in bench/web. */
export async function onnxruntimeWebVersion() {
  return JSON.parse(await readFile(path.join(ORT_DIST, '../package.json'), 'utf8')).version;
}
