// proto/load.ts builds the kubelet's gRPC services from the generated descriptors with protobufjs;
// @grpc/proto-loader, which the generated types come from, built them before. Both must make the
// same services (paths, streaming, names) and turn the same objects into the same bytes and back.
import { join } from 'node:path';
import * as protoLoader from '@grpc/proto-loader';
import protobuf from 'protobufjs';
import { CONVERSION, packageDefinition } from '../../proto/load.js';
import { descriptor as devicePlugin } from '../../proto/generated/deviceplugin/descriptor.js';
import { descriptor as podResources } from '../../proto/generated/podresources/descriptor.js';
import { descriptor as draV1 } from '../../proto/generated/dra-v1/descriptor.js';
import { descriptor as draV1beta1 } from '../../proto/generated/dra-v1beta1/descriptor.js';
import { descriptor as pluginRegistration } from '../../proto/generated/pluginregistration/descriptor.js';
import { descriptor as draHealth } from '../../proto/generated/dra-health/descriptor.js';
import { REPO_ROOT } from '../cluster/control-plane.js';

const APIS: [string, object][] = [
  ['deviceplugin/v1beta1/api.proto', devicePlugin], ['podresources/v1/api.proto', podResources],
  ['dra/v1/api.proto', draV1], ['dra/v1beta1/api.proto', draV1beta1],
  ['pluginregistration/v1/api.proto', pluginRegistration], ['dra-health/v1alpha1/api.proto', draHealth],
];

/** proto-loader's package definition, with the options proto/load.ts used to pass it. */
function protoLoaderDefinition(file: string): protoLoader.PackageDefinition {
  return protoLoader.loadSync(file, { ...CONVERSION, keepCase: false, includeDirs: [join(REPO_ROOT, 'proto')] });
}

/** An object with every field of `type` set (nested messages two levels deep), as a caller would fill it. */
function sample(type: protobuf.Type, depth = 0): Record<string, unknown> {
  const value = (f: protobuf.Field): unknown => {
    const t = f.resolvedType;
    if (t instanceof protobuf.Type) return depth < 2 ? sample(t, depth + 1) : {};
    if (t instanceof protobuf.Enum) return Object.keys(t.values).at(-1);
    switch (f.type) {
      case 'string': return `${f.name}-value`;
      case 'bool': return true;
      case 'bytes': return Buffer.from(f.name);
      case 'double': case 'float': return 1.5;
      default: return 7; // every integer type
    }
  };
  const out: Record<string, unknown> = {};
  for (const f of type.fieldsArray) {
    f.resolve();
    if (f instanceof protobuf.MapField) out[f.name] = { k1: value(f) };
    else out[f.name] = f.repeated ? [value(f), value(f)] : value(f);
  }
  return out;
}

describe.each(APIS)('%s: the services proto/load.ts builds are proto-loader\'s', (file, descriptor) => {
  const ours = packageDefinition(descriptor) as Record<string, Record<string, protoLoader.MethodDefinition<object, object>>>;
  const theirs = protoLoaderDefinition(file);
  const services = Object.keys(theirs).filter((k) => !('format' in theirs[k]!));
  const root = protobuf.Root.fromJSON(descriptor as protobuf.INamespace);
  root.resolveAll();

  test('the same services and methods: path, streaming, client name', () => {
    expect(services.length).toBeGreaterThan(0);
    expect(Object.keys(ours).sort()).toEqual(services.sort());
    for (const s of services) {
      const want = theirs[s] as protoLoader.ServiceDefinition;
      expect(Object.keys(ours[s]!).sort()).toEqual(Object.keys(want).sort());
      for (const [name, m] of Object.entries(want)) {
        const { path, requestStream, responseStream, originalName } = ours[s]![name]!;
        expect({ path, requestStream, responseStream, originalName }).toEqual({ path: m.path, requestStream: m.requestStream, responseStream: m.responseStream, originalName: m.originalName });
      }
    }
  });

  test('every request and response: the same bytes from a full object, the same object back (and from empty bytes)', () => {
    let checked = 0;
    for (const s of services) {
      const service = root.lookupService(s);
      for (const m of service.methodsArray) {
        const mine = ours[s]![m.name]!;
        const want = (theirs[s] as protoLoader.ServiceDefinition)[m.name]!;
        for (const [type, ser, de, wantSer, wantDe] of [
          [m.resolvedRequestType!, mine.requestSerialize, mine.requestDeserialize, want.requestSerialize, want.requestDeserialize],
          [m.resolvedResponseType!, mine.responseSerialize, mine.responseDeserialize, want.responseSerialize, want.responseDeserialize],
        ] as const) {
          const obj = sample(type);
          const bytes = ser(obj);
          if (type.fieldsArray.length > 0) expect(bytes.length).toBeGreaterThan(0); // an empty message is 0 bytes
          expect(Buffer.compare(bytes, wantSer(obj))).toBe(0);
          expect(de(bytes)).toEqual(wantDe(bytes));
          expect(de(Buffer.alloc(0))).toEqual(wantDe(Buffer.alloc(0)));
          checked++;
        }
      }
    }
    expect(checked).toBeGreaterThanOrEqual(2);
  });
});
