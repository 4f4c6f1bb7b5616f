// Prints "<compressed bytes> <unpacked bytes>" of the single image in an OCI archive (a tar holding an
// OCI image layout, as `buildctl --output type=oci` writes it): compressed = manifest + config + layer
// blobs, unpacked = the layers' uncompressed tar streams. No dependencies: it reads the tar itself.
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';

const file = process.argv[2];
if (!file) {
  console.error('usage: node image-size.mjs <image.oci.tar>');
  process.exit(2);
}
const tar = readFileSync(file);
/** name → [offset, size] of every regular file in the tar. */
const entries = new Map();
for (let off = 0; off + 512 <= tar.length;) {
  const header = tar.subarray(off, off + 512);
  if (header.every((b) => b === 0)) break;
  const name = header.subarray(0, 100).toString('utf8').replace(/\0.*$/s, '');
  const prefix = header.subarray(345, 500).toString('utf8').replace(/\0.*$/s, '');
  const size = parseInt(header.subarray(124, 136).toString('utf8').replace(/\0.*$/s, '').trim() || '0', 8);
  const type = String.fromCharCode(header[156] || 48);
  const full = (prefix ? `${prefix}/${name}` : name).replace(/^\.\//, '');
  if (type === '0') entries.set(full, [off + 512, size]);
  off += 512 + Math.ceil(size / 512) * 512;
}
const read = (name) => {
  const e = entries.get(name);
  if (!e) throw new Error(`${file}: no ${name} in the archive`);
  return tar.subarray(e[0], e[0] + e[1]);
};
const blob = (digest) => read(`blobs/${digest.replace(':', '/')}`);
const index = JSON.parse(read('index.json').toString('utf8'));
let desc = index.manifests?.[0];
if (!desc) throw new Error(`${file}: index.json lists no manifest`);
let manifest = JSON.parse(blob(desc.digest).toString('utf8'));
if (manifest.manifests) { // an index: take the linux/amd64 (or only) manifest
  desc = manifest.manifests.find((m) => m.platform?.architecture === 'amd64') ?? manifest.manifests[0];
  manifest = JSON.parse(blob(desc.digest).toString('utf8'));
}
let compressed = desc.size + manifest.config.size;
let unpacked = 0;
for (const layer of manifest.layers) {
  compressed += layer.size;
  const data = blob(layer.digest);
  unpacked += layer.mediaType.endsWith('gzip') ? gunzipSync(data).length : data.length;
}
process.stdout.write(`${compressed} ${unpacked}\n`);
