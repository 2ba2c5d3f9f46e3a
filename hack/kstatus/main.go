// Command kstatus prints the kstatus result (sigs.k8s.io/cli-utils/pkg/kstatus/status) of
// every Kubernetes object given as JSON, one object per line on stdin:
//
//	{"status":"Current","message":"Resource is current"}
//
// It is the status library Flux, kpt and `kubectl wait`-style tools use to decide whether an
// object has finished reconciling; the tests feed it every status the controller writes.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Status  string `json:"status"`
	Message string `json:"message"`
	Error   string `json:"error,omitempty"`
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 16<<20)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(in.Bytes()); err != nil {
			fmt.Fprintf(os.Stderr, "kstatus: not a Kubernetes object: %v\n", err)
			os.Exit(2)
		}
		res, err := status.Compute(obj)
		r := result{}
		if err != nil {
			r.Error = err.Error()
		} else {
			r.Status = res.Status.String()
			r.Message = res.Message
		}
		if err := out.Encode(r); err != nil {
			os.Exit(2)
		}
	}
	if err := in.Err(); err != nil {
		fmt.Fprintf(os.Stderr, "kstatus: reading stdin: %v\n", err)
		os.Exit(2)
	}
}
