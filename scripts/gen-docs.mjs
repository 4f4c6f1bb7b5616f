#!/usr/bin/env node
// Generates docs/configuration.md, the reference of every CRD field and every chart value, from their
// single sources of truth:
//   crds/*.yaml                              → one section per kind (spec and status fields, validation rules)
//   charts/virtualio/values.schema.json      → the chart values table (type, allowed values, description)
//   charts/virtualio/values.yaml             → each value's default
// With --check it renders in memory and fails when the committed file differs (CI drift check).
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const OUT = 'docs/configuration.md';
const check = process.argv.includes('--check');

/** Escapes text for a Markdown table cell. */
function cell(text) {
  return String(text ?? '').replace(/\s+/g, ' ').replace(/\|/g, '\\|').trim();
}

function code(value) {
  const s = typeof value === 'string' && value !== '' ? value : JSON.stringify(value);
  return s.includes('`') ? `\`\` ${s} \`\`` : `\`${s}\``;
}

/** "string", "[]string", "object"... from a schema node. */
function typeOf(node) {
  if (!node) return '';
  if (node['x-kubernetes-int-or-string']) return 'int or string';
  if (node.anyOf) return node.anyOf.map(typeOf).join(' or ');
  if (node.enum && !node.type) return 'string';
  if (node.type === 'array') return `[]${typeOf(node.items)}`;
  if (node.type === 'object' && node.additionalProperties && typeof node.additionalProperties === 'object' && !node.properties) {
    return `map[string]${typeOf(node.additionalProperties)}`;
  }
  return node.type ?? 'any';
}

/** Allowed values and limits of a schema node, as short text. */
function constraints(node) {
  const out = [];
  const n = node.type === 'array' && node.items && !node.items.properties ? { ...node.items, maxItems: node.maxItems, minItems: node.minItems } : node;
  if (n.enum) out.push(`one of ${n.enum.map(code).join(', ')}`);
  if (n.pattern) out.push(`pattern ${code(n.pattern)}`);
  if (n.minimum !== undefined) out.push(`≥ ${n.minimum}`);
  if (n.maximum !== undefined) out.push(`≤ ${n.maximum}`);
  if (n.minLength !== undefined) out.push(`min length ${n.minLength}`);
  if (n.maxLength !== undefined) out.push(`max length ${n.maxLength}`);
  if (n.minItems !== undefined) out.push(`min ${n.minItems} items`);
  if (n.maxItems !== undefined) out.push(`max ${n.maxItems} items`);
  if (node.minProperties !== undefined) out.push(`min ${node.minProperties} fields`);
  if (node.default !== undefined) out.push(`default ${code(node.default)}`);
  if (node['x-kubernetes-list-type'] === 'map') out.push(`list keyed by ${node['x-kubernetes-list-map-keys'].map(code).join(', ')}`);
  return out.join('; ');
}

/** Rows of a CRD schema below `path`, depth first, with the CEL rules of each object. */
function crdRows(node, path, required, rows, rules) {
  for (const v of node['x-kubernetes-validations'] ?? []) rules.push({ path: path || '(object)', message: v.message ?? v.messageExpression, rule: v.rule });
  const props = node.properties ?? (node.type === 'array' ? node.items?.properties : undefined);
  if (node.type === 'array' && node.items) {
    for (const v of node.items['x-kubernetes-validations'] ?? []) rules.push({ path: `${path}[]`, message: v.message ?? v.messageExpression, rule: v.rule });
  }
  if (!props) return;
  const req = new Set(node.type === 'array' ? node.items?.required ?? [] : node.required ?? []);
  for (const [name, child] of Object.entries(props)) {
    const p = `${path}${node.type === 'array' ? '[]' : ''}.${name}`.replace(/^\./, '');
    rows.push({ path: p, type: typeOf(child), required: req.has(name), constraints: constraints(child), description: child.description ?? '' });
    crdRows(child, p, req, rows, rules);
  }
  void required;
}

function crdSection(file) {
  const crd = YAML.parse(readFileSync(join(root, 'crds', file), 'utf8'));
  const version = crd.spec.versions.find((v) => v.storage);
  const schema = version.schema.openAPIV3Schema;
  const lines = [
    `## ${crd.spec.names.kind} (\`${crd.spec.group}/${version.name}\`)`,
    '',
    `${cell(schema.description)}`,
    '',
    `Scope: ${crd.spec.scope}. Short names: ${crd.spec.names.shortNames.map(code).join(', ')}. Source: [\`crds/${file}\`](../crds/${file}).`,
    '',
  ];
  for (const part of ['spec', 'status']) {
    const node = schema.properties[part];
    if (!node) continue;
    const rows = [];
    const rules = [];
    crdRows(node, part, new Set(), rows, rules);
    lines.push(`### ${part}${part === 'spec' ? '' : ' (written by virtualio)'}`, '');
    if (node.description) lines.push(cell(node.description), '');
    lines.push('| field | type | required | constraints | description |', '| --- | --- | --- | --- | --- |');
    for (const r of rows) lines.push(`| \`${r.path}\` | ${cell(r.type)} | ${r.required ? 'yes' : ''} | ${cell(r.constraints)} | ${cell(r.description)} |`);
    lines.push('');
    if (rules.length) {
      lines.push(`Validation rules (CEL, checked by the API server at admission):`, '');
      lines.push('| on | message |', '| --- | --- |');
      for (const r of rules) lines.push(`| \`${r.path}\` | ${cell(r.message)} |`);
      lines.push('');
    }
  }
  return lines;
}

function valueRows(node, path, defaults, rows) {
  for (const [name, child] of Object.entries(node.properties ?? {})) {
    if (name === 'global') continue;
    const key = path ? `${path}.${name}` : name;
    const def = defaults?.[name];
    const leaf = !(child.type === 'object' && child.properties && Object.keys(child.properties).length > 0 && !OPAQUE.has(key));
    if (leaf) {
      rows.push({ key, type: typeOf(child), def: def === undefined ? '' : code(def), allowed: constraints(child), description: child.description ?? '' });
    } else {
      rows.push({ key, type: 'object', def: '', allowed: '', description: child.description ?? '', group: true });
      valueRows(child, key, def, rows);
    }
  }
}

/** Values whose fields are Kubernetes or KubeVirt structures rather than chart settings: one row each. */
const OPAQUE = new Set(['operator.resources', 'agent.resources', 'agent.seLinuxOptions', 'agent.appArmorProfile', 'kubevirt.extraPermittedHostDevices']);

function valuesSection() {
  const schema = JSON.parse(readFileSync(join(root, 'charts/virtualio/values.schema.json'), 'utf8'));
  const defaults = YAML.parse(readFileSync(join(root, 'charts/virtualio/values.yaml'), 'utf8'));
  const rows = [];
  valueRows(schema, '', defaults, rows);
  const lines = [
    '## Helm chart values (`charts/virtualio`)',
    '',
    'Set with `--set key=value` or a values file. `helm install` and `helm upgrade` check every value against',
    '[`values.schema.json`](../charts/virtualio/values.schema.json) and stop with a message naming the key.',
    '',
    '| key | type | default | allowed | description |',
    '| --- | --- | --- | --- | --- |',
  ];
  for (const r of rows) {
    lines.push(`| \`${r.key}\` | ${cell(r.type)} | ${r.group ? '' : cell(r.def)} | ${cell(r.allowed)} | ${cell(r.description)} |`);
  }
  lines.push('');
  return lines;
}

export function render() {
  const crdFiles = readdirSync(join(root, 'crds')).filter((f) => f.endsWith('.yaml')).sort();
  const lines = [
    '<!-- Generated by scripts/gen-docs.mjs from crds/*.yaml and charts/virtualio/values.schema.json + values.yaml.',
    '     Do not edit: change the source and run `node scripts/gen-docs.mjs` (CI runs it with --check). -->',
    '',
    '# Configuration reference',
    '',
    'Every chart value and every field of the two custom resources. Command-line flags of the two',
    'programs are in [flags.md](flags.md).',
    '',
    ...valuesSection(),
    ...crdFiles.flatMap(crdSection),
  ];
  return `${lines.join('\n').replace(/\n{3,}/g, '\n\n').trimEnd()}\n`;
}

const text = render();
if (check) {
  let have;
  try {
    have = readFileSync(join(root, OUT), 'utf8');
  } catch {
    have = '';
  }
  if (have !== text) {
    console.error(`${OUT} is out of date with crds/*.yaml or the chart's values; run \`node scripts/gen-docs.mjs\` and commit it`);
    process.exit(1);
  }
  console.log(`${OUT} matches its sources`);
} else {
  writeFileSync(join(root, OUT), text);
  console.log(`wrote ${OUT}`);
}
