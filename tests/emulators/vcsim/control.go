// SPDX-License-Identifier: MIT
// The control endpoint (plain HTTP, its own port): state and counters,
// fault switches, and inventory changes a test needs (power, delete,
// expire sessions, reset).
//
//	GET  /_control/state            {"vms": [...], "leases": [...], "counters": {...}, "faults": {...}}
//	PUT  /_control/faults           merge a JSON object into the switches; answers the switches
//	POST /_control/reset            default switches, counters zeroed, leases ended,
//	                                snapshots removed, power states restored
//	POST /_control/expire-sessions  every session ends (NotAuthenticated / 401 next)
//	POST /_control/power            {"vm": name, "state": "poweredOn"|"poweredOff"}
//	POST /_control/delete-vm        {"vm": name}   (not undone by reset)
package main

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

func (e *emulator) registerObjects() {
	content := simulator.Map.Get(types.ManagedObjectReference{Type: "ServiceInstance", Value: "ServiceInstance"}).(*simulator.ServiceInstance).Content
	p := &pager{emu: e, pc: content.PropertyCollector, pages: map[string]rest{}}
	p.Self = types.ManagedObjectReference{Type: pagerType, Value: content.PropertyCollector.Value}
	simulator.Map.Put(p)
	e.pager = p
	if content.OvfManager != nil {
		o := &ovfProxy{emu: e}
		o.Self = types.ManagedObjectReference{Type: ovfProxyType, Value: content.OvfManager.Value}
		simulator.Map.Put(o)
	}
}

func (e *emulator) shutdown() {
	e.abortAll()
}

func writeJSON(w http.ResponseWriter, v interface{}) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func (e *emulator) state() map[string]interface{} {
	e.mu.Lock()
	counters := map[string]int64{}
	for k, v := range e.counters {
		counters[k] = v
	}
	faults := e.faults
	e.mu.Unlock()
	return map[string]interface{}{"vms": e.vms(), "leases": e.leaseViews(),
		"counters": counters, "faults": faults,
		"datastore": e.datastoreDir()}
}

func (e *emulator) setPower(ctx context.Context, name, state string) error {
	vm := e.findVM(name)
	if vm == nil {
		return errNotFound
	}
	o := object.NewVirtualMachine(e.client, vm.Self)
	current, err := o.PowerState(ctx)
	if err != nil {
		return err
	}
	if string(current) == state {
		return nil
	}
	switch types.VirtualMachinePowerState(state) {
	case types.VirtualMachinePowerStatePoweredOn:
		return waitTask(o.PowerOn(ctx))
	case types.VirtualMachinePowerStatePoweredOff:
		return waitTask(o.PowerOff(ctx))
	}
	return errBadRequest
}

type ctlError string

func (c ctlError) Error() string { return string(c) }

const (
	errNotFound   = ctlError("no such vm")
	errBadRequest = ctlError("bad request")
)

func (e *emulator) reset(ctx context.Context) error {
	e.abortAll()
	e.pager.reset()
	e.mu.Lock()
	e.faults = e.defaults
	e.counters = map[string]int64{}
	e.mu.Unlock()
	for _, v := range e.vms() {
		o := object.NewVirtualMachine(e.client, types.ManagedObjectReference{Type: "VirtualMachine", Value: v.Moref})
		if v.Snapshots > 0 {
			if err := waitTask(o.RemoveAllSnapshot(ctx, nil)); err != nil {
				return err
			}
		}
		plan, ok := e.initial[v.Name]
		if !ok || plan.Template {
			continue
		}
		want := types.VirtualMachinePowerStatePoweredOff
		if plan.PoweredOn {
			want = types.VirtualMachinePowerStatePoweredOn
		}
		if err := e.setPower(ctx, v.Name, string(want)); err != nil {
			return err
		}
	}
	return nil
}

func (e *emulator) controlHandler() http.Handler {
	mux := http.NewServeMux()
	ctx := context.Background()
	fail := func(w http.ResponseWriter, err error) {
		code := http.StatusInternalServerError
		switch err {
		case errNotFound:
			code = http.StatusNotFound
		case errBadRequest:
			code = http.StatusBadRequest
		}
		http.Error(w, err.Error(), code)
	}
	mux.HandleFunc("/_control/state", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, e.state())
	})
	mux.HandleFunc("/_control/faults", func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut || r.Method == http.MethodPost {
			e.mu.Lock()
			f := e.faults
			err := json.NewDecoder(r.Body).Decode(&f)
			if err == nil {
				e.faults = f
			}
			e.mu.Unlock()
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
		}
		writeJSON(w, e.snapshotFaults())
	})
	mux.HandleFunc("/_control/reset", func(w http.ResponseWriter, r *http.Request) {
		if err := e.reset(ctx); err != nil {
			fail(w, err)
			return
		}
		writeJSON(w, map[string]bool{"ok": true})
	})
	mux.HandleFunc("/_control/expire-sessions", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]int{"expired": e.expireSessions()})
	})
	var req struct {
		VM    string `json:"vm"`
		State string `json:"state"`
	}
	mux.HandleFunc("/_control/power", func(w http.ResponseWriter, r *http.Request) {
		q := req
		if err := json.NewDecoder(r.Body).Decode(&q); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if err := e.setPower(ctx, q.VM, q.State); err != nil {
			fail(w, err)
			return
		}
		writeJSON(w, map[string]bool{"ok": true})
	})
	mux.HandleFunc("/_control/delete-vm", func(w http.ResponseWriter, r *http.Request) {
		q := req
		if err := json.NewDecoder(r.Body).Decode(&q); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		vm := e.findVM(q.VM)
		if vm == nil {
			fail(w, errNotFound)
			return
		}
		_ = e.setPower(ctx, q.VM, string(types.VirtualMachinePowerStatePoweredOff))
		o := object.NewVirtualMachine(e.client, vm.Self)
		if err := waitTask(o.Destroy(ctx)); err != nil {
			fail(w, err)
			return
		}
		writeJSON(w, map[string]bool{"ok": true})
	})
	return mux
}
