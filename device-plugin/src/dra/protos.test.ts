// The DRA and plugin-watcher protos load with the runtime options and give the gRPC method paths the
// kubelet calls (the package names are part of the wire contract).
import { loadDraV1Api, loadDraV1beta1Api, loadPluginRegistrationApi } from '../../../proto/load.js';

test('method paths match what the kubelet dials', () => {
  const v1 = loadDraV1Api().k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin.service;
  const v1beta1 = loadDraV1beta1Api().k8s.io.kubelet.pkg.apis.dra.v1beta1.DRAPlugin.service;
  const reg = loadPluginRegistrationApi().pluginregistration.Registration.service;
  expect(v1.NodePrepareResources.path).toBe('/k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin/NodePrepareResources');
  expect(v1.NodeUnprepareResources.path).toBe('/k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin/NodeUnprepareResources');
  expect(v1beta1.NodePrepareResources.path).toBe('/k8s.io.kubelet.pkg.apis.dra.v1beta1.DRAPlugin/NodePrepareResources');
  expect(reg.GetInfo.path).toBe('/pluginregistration.Registration/GetInfo');
  expect(reg.NotifyRegistrationStatus.path).toBe('/pluginregistration.Registration/NotifyRegistrationStatus');
});

test('v1 carries share_id, v1beta1 does not', () => {
  const v1 = loadDraV1Api().k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin.service.NodePrepareResources;
  const v1beta1 = loadDraV1beta1Api().k8s.io.kubelet.pkg.apis.dra.v1beta1.DRAPlugin.service.NodePrepareResources;
  const resp = { claims: { u1: { devices: [{ requestNames: ['gpu'], poolName: 'n1/p', deviceName: 'd', cdiDeviceIds: ['virtualio.dev/vfio=d'], shareId: 'x' }], error: '' } } };
  const back1 = v1.responseDeserialize(v1.responseSerialize(resp as never)) as typeof resp;
  const backB = v1beta1.responseDeserialize(v1beta1.responseSerialize(resp as never)) as typeof resp;
  expect(back1.claims.u1!.devices[0]!.shareId).toBe('x');
  expect(backB.claims.u1!.devices[0]!.cdiDeviceIds).toEqual(['virtualio.dev/vfio=d']);
  expect(backB.claims.u1!.devices[0]!.shareId).toBeUndefined();
});
