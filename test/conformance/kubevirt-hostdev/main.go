// Command kubevirt-hostdev runs virt-launcher's own host-device code
// (kubevirt.io/kubevirt/pkg/virt-launcher/virtwrap/device/hostdevice/{gpu,generic}) on a VMI and a
// container environment, and prints the host devices KubeVirt would put into the libvirt domain,
// or KubeVirt's exact error.
//
// Input on stdin, one JSON object per line (a case):
//
//	{"vmi": <VirtualMachineInstance, or just its spec>, "env": {"PCI_RESOURCE_...": "0000:81:00.0", ...},
//	 "draBasePath": <optional: the folder virt-launcher reads DRA device metadata files from>}
//
// For each case the process environment is cleared and set to exactly "env" before KubeVirt's code
// reads it, as the compute container's environment would be. Output, one JSON object per line:
//
//	{"ok": bool, "error": <first error in virt-launcher's order: hostDevices, then gpus>,
//	 "hostDevices": {"devices": [...]} | {"error": ...},
//	 "gpus":        {"devices": [...]} | {"error": ...},
//	 "warnings": [KubeVirt log lines, e.g. "PCI_RESOURCE_X not set for resource x"]}
//
// With "draBasePath", virt-launcher's DRA builders (.../hostdevice/dra: CreateDRAGPUHostDevices,
// CreateDRAHostDevices) also run on the VMI's claim-based gpus[] and hostDevices[], reading the
// KEP-5304 metadata files under that folder, and the output adds
// "dra": {"gpus": {"devices"|"error"}, "hostDevices": {"devices"|"error"}}.
//
// Each device: {"type","managed","mode","model","alias","display","ramfb","pciAddress","mdevUUID",
// "usb","xml"} where "xml" is the <hostdev> element KubeVirt's domain schema marshals.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"os"
	"strconv"
	"strings"

	v1 "kubevirt.io/api/core/v1"
	"kubevirt.io/client-go/log"

	"kubevirt.io/kubevirt/pkg/virt-launcher/virtwrap/api"
	"kubevirt.io/kubevirt/pkg/virt-launcher/virtwrap/device/hostdevice/dra"
	"kubevirt.io/kubevirt/pkg/virt-launcher/virtwrap/device/hostdevice/generic"
	"kubevirt.io/kubevirt/pkg/virt-launcher/virtwrap/device/hostdevice/gpu"
)

type input struct {
	VMI         json.RawMessage   `json:"vmi"`
	Env         map[string]string `json:"env"`
	DRABasePath string            `json:"draBasePath"`
}

// hexNum renders a libvirt "0x.." attribute as a zero-padded hex number of the given width.
func hexNum(s string, width int) string {
	n, err := strconv.ParseUint(strings.TrimPrefix(s, "0x"), 16, 32)
	if err != nil {
		return s
	}
	return fmt.Sprintf("%0*x", width, n)
}

func describe(d api.HostDevice) map[string]any {
	m := map[string]any{"type": d.Type, "managed": d.Managed, "mode": d.Mode, "model": d.Model, "display": d.Display, "ramfb": d.RamFB}
	if d.Alias != nil {
		m["alias"] = d.Alias.GetName()
	}
	if a := d.Source.Address; a != nil {
		switch d.Type {
		case "pci":
			m["pciAddress"] = hexNum(a.Domain, 4) + ":" + hexNum(a.Bus, 2) + ":" + hexNum(a.Slot, 2) + "." + hexNum(a.Function, 1)
		case "mdev":
			m["mdevUUID"] = a.UUID
		case "usb":
			m["usb"] = map[string]string{"bus": a.Bus, "device": a.Device}
		}
	}
	if raw, err := xml.Marshal(d); err == nil {
		m["xml"] = string(raw)
	}
	return m
}

func result(devs []api.HostDevice, err error) map[string]any {
	if err != nil {
		return map[string]any{"error": err.Error()}
	}
	list := make([]map[string]any, 0, len(devs))
	for _, d := range devs {
		list = append(list, describe(d))
	}
	return map[string]any{"devices": list}
}

func decodeVMI(raw json.RawMessage) (*v1.VirtualMachineInstance, error) {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(raw, &probe); err != nil {
		return nil, fmt.Errorf("vmi: %w", err)
	}
	vmi := &v1.VirtualMachineInstance{}
	if _, ok := probe["spec"]; ok {
		if err := json.Unmarshal(raw, vmi); err != nil {
			return nil, fmt.Errorf("vmi: %w", err)
		}
	} else if err := json.Unmarshal(raw, &vmi.Spec); err != nil {
		return nil, fmt.Errorf("vmi spec: %w", err)
	}
	return vmi, nil
}

// warnings extracts the "msg" of every KubeVirt JSON log line written during a case.
func warnings(buf *bytes.Buffer) []string {
	res := []string{}
	for _, line := range strings.Split(buf.String(), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var entry map[string]any
		if json.Unmarshal([]byte(line), &entry) == nil {
			if msg, ok := entry["msg"].(string); ok {
				res = append(res, msg)
				continue
			}
		}
		res = append(res, line)
	}
	return res
}

func run(line []byte, logs *bytes.Buffer) map[string]any {
	var in input
	if err := json.Unmarshal(line, &in); err != nil {
		return map[string]any{"ok": false, "error": "bad input: " + err.Error()}
	}
	vmi, err := decodeVMI(in.VMI)
	if err != nil {
		return map[string]any{"ok": false, "error": "bad input: " + err.Error()}
	}
	os.Clearenv()
	for k, v := range in.Env {
		if err := os.Setenv(k, v); err != nil {
			return map[string]any{"ok": false, "error": "bad input: env " + k + ": " + err.Error()}
		}
	}
	logs.Reset()
	// The same calls, in the same order, as virt-launcher's generateConverterContext / getGPUDevices.
	hostDevs, hostErr := generic.CreateHostDevices(vmi.Spec.Domain.Devices.HostDevices)
	gpuDevs, gpuErr := gpu.CreateHostDevices(vmi.Spec.Domain.Devices.GPUs)
	res := map[string]any{
		"ok":          hostErr == nil && gpuErr == nil,
		"hostDevices": result(hostDevs, hostErr),
		"gpus":        result(gpuDevs, gpuErr),
		"warnings":    warnings(logs),
	}
	if in.DRABasePath != "" {
		draGPUs, draGPUErr := dra.CreateDRAGPUHostDevices(vmi, in.DRABasePath)
		draHost, draHostErr := dra.CreateDRAHostDevices(vmi, in.DRABasePath)
		res["dra"] = map[string]any{"gpus": result(draGPUs, draGPUErr), "hostDevices": result(draHost, draHostErr)}
		res["warnings"] = warnings(logs)
	}
	if hostErr != nil {
		res["error"] = hostErr.Error()
	} else if gpuErr != nil {
		res["error"] = gpuErr.Error()
	}
	return res
}

func main() {
	logs := &bytes.Buffer{}
	log.Log.SetIOWriter(logs)
	enc := json.NewEncoder(os.Stdout)
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 1<<26)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		if err := enc.Encode(run(line, logs)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
