// `helm test` check for a virtualio release, run with the chart's own image (node, no other tools).
// Passes when every virtualio CRD is Established and the operator answers /readyz with 200; retries
// for a while because `helm test` may run right after an install. Exit code 0 = pass, 1 = fail.
//
// Environment (the chart sets it; tests may override it):
//   VIO_CRDS           comma-separated CRD names
//   VIO_READYZ_URL     the operator Service's /readyz URL
//   VIO_API_SERVER     default https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT
//   VIO_TOKEN_FILE     default /var/run/secrets/kubernetes.io/serviceaccount/token
//   VIO_CA_FILE        default /var/run/secrets/kubernetes.io/serviceaccount/ca.crt
//   VIO_ATTEMPTS       default 60;  VIO_DELAY_MS default 2000
import { readFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { request as httpRequest } from 'node:http';

const env = process.env;
const sa = '/var/run/secrets/kubernetes.io/serviceaccount';
const apiServer = env.VIO_API_SERVER ?? `https://${env.KUBERNETES_SERVICE_HOST}:${env.KUBERNETES_SERVICE_PORT}`;
const crds = (env.VIO_CRDS ?? '').split(',').map((s) => s.trim()).filter(Boolean);
const readyz = env.VIO_READYZ_URL ?? '';
const attempts = Number(env.VIO_ATTEMPTS ?? 60);
const delayMs = Number(env.VIO_DELAY_MS ?? 2000);

function get(url, options) {
  return new Promise((resolve, reject) => {
    const req = (url.startsWith('https:') ? httpsRequest : httpRequest)(url, { ...options, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`timed out: ${url}`)));
    req.on('error', reject);
    req.end();
  });
}

async function crdProblem(name) {
  const token = readFileSync(env.VIO_TOKEN_FILE ?? `${sa}/token`, 'utf8').trim();
  const ca = readFileSync(env.VIO_CA_FILE ?? `${sa}/ca.crt`);
  const res = await get(`${apiServer}/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${name}`, {
    ca, headers: { Authorization: `Bearer ${token}`, Accept: 'application/json' },
  });
  if (res.status !== 200) return `CRD ${name}: HTTP ${res.status} ${res.body.slice(0, 200)}`;
  const conditions = JSON.parse(res.body).status?.conditions ?? [];
  const established = conditions.find((c) => c.type === 'Established');
  return established?.status === 'True' ? undefined : `CRD ${name} is not Established (${established?.message ?? 'no condition yet'})`;
}

async function readyzProblem() {
  const res = await get(readyz, {});
  return res.status === 200 ? undefined : `operator ${readyz}: HTTP ${res.status} ${res.body.slice(0, 200)}`;
}

async function problems() {
  const found = [];
  if (crds.length === 0) found.push('VIO_CRDS is empty');
  if (!readyz) found.push('VIO_READYZ_URL is empty');
  for (const name of crds) {
    found.push(await crdProblem(name).catch((err) => `CRD ${name}: ${err.message}`));
  }
  if (readyz) found.push(await readyzProblem().catch((err) => `operator ${readyz}: ${err.message}`));
  return found.filter(Boolean);
}

let last = [];
for (let i = 1; i <= attempts; i++) {
  last = await problems();
  if (last.length === 0) {
    process.stdout.write(`ok: ${crds.join(', ')} Established; operator ready\n`);
    process.exit(0);
  }
  if (i < attempts) await new Promise((r) => setTimeout(r, delayMs));
}
console.error(`virtualio is not ready after ${attempts} attempts:\n  ${last.join('\n  ')}`);
process.exit(1);
