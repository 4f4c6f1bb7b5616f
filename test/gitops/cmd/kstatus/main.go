// Command kstatus computes the kstatus status (sigs.k8s.io/cli-utils/pkg/kstatus/status, the code
// Flux's health checks and `kubectl wait --for=...`-style tools use) of every object it reads: a
// JSON object, a JSON list (items) or a stream of them on stdin. It prints one JSON line per object:
// {"kind", "name", "status", "message"}. Built by the jest suite into the cache, never committed.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Kind    string `json:"kind"`
	Name    string `json:"name"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	dec := json.NewDecoder(os.Stdin)
	enc := json.NewEncoder(os.Stdout)
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err == io.EOF {
			return
		} else if err != nil {
			fail(2, err)
		}
		var list struct {
			Items []json.RawMessage `json:"items"`
		}
		if err := json.Unmarshal(raw, &list); err != nil {
			fail(2, err)
		}
		items := list.Items
		if items == nil {
			items = []json.RawMessage{raw}
		}
		for _, it := range items {
			// The unstructured JSON decoder keeps integers as int64, as client-go hands objects to kstatus.
			u := &unstructured.Unstructured{}
			if err := u.UnmarshalJSON(it); err != nil {
				fail(2, err)
			}
			res, err := status.Compute(u)
			if err != nil {
				fail(1, fmt.Errorf("%s: %w", u.GetName(), err))
			}
			if err := enc.Encode(result{Kind: u.GetKind(), Name: u.GetName(), Status: res.Status.String(), Message: res.Message}); err != nil {
				fail(1, err)
			}
		}
	}
}

func fail(code int, err error) {
	fmt.Fprintln(os.Stderr, "kstatus:", err)
	os.Exit(code)
}
