// Command kubevirt-crd-gen writes the CustomResourceDefinitions that KubeVirt's virt-operator
// installs, as produced by KubeVirt's own generator package
// (kubevirt.io/kubevirt/pkg/virt-operator/resource/generate/components), one YAML file per CRD
// named <crd name>.yaml, into --out. Built and run by test/conformance/build.sh; the output lives
// in the cache, never in the repository.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	extv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"

	"kubevirt.io/kubevirt/pkg/virt-operator/resource/generate/components"
)

type crdFunc func() (*extv1.CustomResourceDefinition, error)

// generators lists every CRD constructor of the components package in KubeVirt v1.8.4, the
// version test/conformance/build.sh builds this with (v1.9.0 adds NewPluginCrd, not listed here).
var generators = map[string]crdFunc{
	"kubevirt":                          components.NewKubeVirtCrd,
	"virtualmachine":                    components.NewVirtualMachineCrd,
	"virtualmachineinstance":            components.NewVirtualMachineInstanceCrd,
	"virtualmachineinstancepreset":      components.NewPresetCrd,
	"virtualmachineinstancereplicaset":  components.NewReplicaSetCrd,
	"virtualmachineinstancemigration":   components.NewVirtualMachineInstanceMigrationCrd,
	"virtualmachinepool":                components.NewVirtualMachinePoolCrd,
	"virtualmachinesnapshot":            components.NewVirtualMachineSnapshotCrd,
	"virtualmachinesnapshotcontent":     components.NewVirtualMachineSnapshotContentCrd,
	"virtualmachinerestore":             components.NewVirtualMachineRestoreCrd,
	"virtualmachineexport":              components.NewVirtualMachineExportCrd,
	"virtualmachinebackup":              components.NewVirtualMachineBackupCrd,
	"virtualmachinebackuptracker":       components.NewVirtualMachineBackupTrackerCrd,
	"virtualmachineinstancetype":        components.NewVirtualMachineInstancetypeCrd,
	"virtualmachineclusterinstancetype": components.NewVirtualMachineClusterInstancetypeCrd,
	"virtualmachinepreference":          components.NewVirtualMachinePreferenceCrd,
	"virtualmachineclusterpreference":   components.NewVirtualMachineClusterPreferenceCrd,
	"migrationpolicy":                   components.NewMigrationPolicyCrd,
	"virtualmachineclone":               components.NewVirtualMachineCloneCrd,
}

func main() {
	out := flag.String("out", "", "directory to write <crd name>.yaml files into")
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "kubevirt-crd-gen: --out is required")
		os.Exit(2)
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	keys := make([]string, 0, len(generators))
	for k := range generators {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		crd, err := generators[k]()
		if err != nil {
			fmt.Fprintf(os.Stderr, "kubevirt-crd-gen: %s: %v\n", k, err)
			os.Exit(1)
		}
		if err := write(*out, crd); err != nil {
			fmt.Fprintf(os.Stderr, "kubevirt-crd-gen: %s: %v\n", k, err)
			os.Exit(1)
		}
		fmt.Fprintf(os.Stderr, "wrote %s.yaml\n", crd.Name)
	}
}

// write stores a CRD without its status and without the empty creationTimestamp, so the file is a
// clean manifest for `kubectl apply` / server-side apply.
func write(dir string, crd *extv1.CustomResourceDefinition) error {
	raw, err := yaml.Marshal(crd)
	if err != nil {
		return err
	}
	var obj map[string]any
	if err := yaml.Unmarshal(raw, &obj); err != nil {
		return err
	}
	delete(obj, "status")
	if md, ok := obj["metadata"].(map[string]any); ok {
		delete(md, "creationTimestamp")
	}
	clean, err := yaml.Marshal(obj)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, crd.Name+".yaml"), clean, 0o644)
}
