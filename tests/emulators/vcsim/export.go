// SPDX-License-Identifier: MIT
// VirtualMachine.ExportVm and the HttpNfcLease it returns: the lease is a
// managed object in the simulator's map (so PropertyCollector sees state,
// info and error change), each disk is served under /nfc/<ticket>/disk-N.vmdk
// as a streamOptimized VMDK made from the flat extent when the lease opens.
package main

import (
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// vmProxyType: a VM's calls that the simulator lacks (ExportVm here,
// QueryChangedDiskAreas in cbt.go) go to a vmProxy whose moref is the
// VM's value under this type; the front handler only retypes _this.
const vmProxyType = "CfsVmProxy"

type vmProxy struct {
	mo.ManagedEntity
	emu *emulator
}

func (p *vmProxy) Reference() types.ManagedObjectReference { return p.Self }

func (e *emulator) ensureVmProxy(vm string) {
	ref := types.ManagedObjectReference{Type: vmProxyType, Value: vm}
	if simulator.Map.Get(ref) != nil {
		return
	}
	p := &vmProxy{emu: e}
	p.Self = ref
	simulator.Map.Put(p)
}

// vm is the VM a proxied call is for, or the fault the real server
// answers: NotAuthenticated without a session, ManagedObjectNotFound for
// a VM that is gone.
func (p *vmProxy) vm(ctx *simulator.Context, this types.ManagedObjectReference) (*simulator.VirtualMachine, types.ManagedObjectReference, *soap.Fault) {
	vmRef := types.ManagedObjectReference{Type: "VirtualMachine", Value: this.Value}
	if ctx.Session == nil {
		return nil, vmRef, faultBody("", notAuthenticated(vmRef))
	}
	vm, ok := simulator.Map.Get(vmRef).(*simulator.VirtualMachine)
	if !ok {
		return nil, vmRef, faultBody("The object has already been deleted or has not been completely created",
			&types.ManagedObjectNotFound{Obj: vmRef})
	}
	return vm, vmRef, nil
}

func faultBody(msg string, f types.BaseMethodFault) *soap.Fault {
	return simulator.Fault(msg, f)
}

func namedFault(name string) types.BaseMethodFault {
	switch name {
	case "TaskInProgress":
		return &types.TaskInProgress{}
	case "InvalidState":
		return &types.InvalidState{}
	case "FileFault":
		return &types.FileFault{}
	case "NoPermission":
		return &types.NoPermission{PrivilegeId: "VApp.Export"}
	default:
		return &types.SystemError{Reason: name}
	}
}

func (p *vmProxy) ExportVm(ctx *simulator.Context, req *types.ExportVm) soap.HasFault {
	e := p.emu
	body := &methods.ExportVmBody{}
	vm, vmRef, fault := p.vm(ctx, req.This)
	if fault != nil {
		body.Fault_ = fault
		return body
	}
	f := e.snapshotFaults()
	if f.ExportFault != "" {
		e.count("fault.ExportVm", 1)
		body.Fault_ = faultBody("injected fault", namedFault(f.ExportFault))
		return body
	}
	var power types.VirtualMachinePowerState
	simulator.Map.WithLock(vm, func() { power = vm.Runtime.PowerState })
	if power != types.VirtualMachinePowerStatePoweredOff {
		body.Fault_ = faultBody("The attempted operation cannot be performed in the current state (Powered on).",
			&types.InvalidPowerState{
				RequestedState: types.VirtualMachinePowerStatePoweredOff,
				ExistingState:  power,
			})
		return body
	}
	lease := e.openLease(vmRef, f)
	body.Res = &types.ExportVmResponse{Returnval: lease.Self}
	return body
}

// nfcLease is an HttpNfcLease; mo.HttpNfcLease must stay the first field
// (the simulator's PropertyCollector reads it by reflection).
type nfcLease struct {
	mo.HttpNfcLease

	emu     *emulator
	ticket  string
	dir     string
	timeout time.Duration

	// Lock order: the simulator's lock on the lease, then mu.
	mu     sync.Mutex // protects the fields below
	state  types.HttpNfcLeaseState
	errMsg string
	errFlt types.BaseMethodFault
	files  map[string]*nfcFile // by targetId
	timer  *time.Timer
	closed bool
}

type nfcFile struct {
	path string
	size int64
	sha1 string
	disk diskInfo
}

func newTicket() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	h := hex.EncodeToString(b)
	return fmt.Sprintf("52%s-%s-%s-%s-%s", h[2:8], h[8:12], h[12:16], h[16:20], h[20:32])
}

func (e *emulator) openLease(vm types.ManagedObjectReference, f Faults) *nfcLease {
	e.mu.Lock()
	e.nextID++
	id := e.nextID
	e.mu.Unlock()

	l := &nfcLease{emu: e, ticket: newTicket(), files: map[string]*nfcFile{},
		timeout: time.Duration(f.LeaseTimeout) * time.Second,
		state:   types.HttpNfcLeaseStateInitializing}
	l.Self = types.ManagedObjectReference{Type: "HttpNfcLease", Value: fmt.Sprintf("session[cfs]lease-%d", id)}
	l.State = types.HttpNfcLeaseStateInitializing
	l.InitializeProgress = 0
	l.dir = filepath.Join(e.workDir, l.ticket)
	simulator.Map.Put(l)

	e.mu.Lock()
	e.leases = append(e.leases, l)
	e.mu.Unlock()
	e.count("lease.opened", 1)

	go l.prepare(vm, f)
	return l
}

// prepare makes the streams, then turns the lease ready (or error).
func (l *nfcLease) prepare(vm types.ManagedObjectReference, f Faults) {
	disks := l.emu.vmDisks(vm)
	info := &types.HttpNfcLeaseInfo{Lease: l.Self, Entity: vm,
		LeaseTimeout: int32(l.timeout / time.Second)}
	err := os.MkdirAll(l.dir, 0o755)
	host := "*"
	if !f.NfcHostStar {
		host = simulator.Map.SessionManager().ServiceHostName
	}
	for i, d := range disks {
		if err != nil {
			break
		}
		target := fmt.Sprintf("disk-%d.vmdk", i)
		out := filepath.Join(l.dir, target)
		cmd := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "vmdk",
			"-o", "subformat=streamOptimized", d.FlatPath, out)
		if msg, cerr := cmd.CombinedOutput(); cerr != nil {
			err = fmt.Errorf("qemu-img convert %s: %v: %s", d.FlatPath, cerr, msg)
			break
		}
		var st os.FileInfo
		if st, err = os.Stat(out); err != nil {
			break
		}
		sum, herr := sha1File(out)
		if herr != nil {
			err = herr
			break
		}
		l.mu.Lock()
		l.files[target] = &nfcFile{path: out, size: st.Size(), sha1: sum, disk: d}
		l.mu.Unlock()
		size := int64(0)
		if f.NfcFileSize {
			size = st.Size()
		}
		info.DeviceUrl = append(info.DeviceUrl, types.HttpNfcLeaseDeviceUrl{
			Key:       d.DeviceKey,
			ImportKey: d.DeviceKey,
			Url:       fmt.Sprintf("%s://%s/nfc/%s/%s", l.emu.scheme, host, l.ticket, target),
			Disk:      types.NewBool(true),
			TargetId:  target,
			FileSize:  size,
		})
		info.TotalDiskCapacityInKB += d.Capacity / 1024
	}
	if f.LeaseInitMs > 0 {
		time.Sleep(time.Duration(f.LeaseInitMs) * time.Millisecond)
	}

	simulator.Map.WithLock(l, func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.state != types.HttpNfcLeaseStateInitializing {
			return // aborted while initializing
		}
		if err != nil {
			l.fail(&types.SystemError{Reason: err.Error()}, err.Error())
			return
		}
		l.state = types.HttpNfcLeaseStateReady
		simulator.Map.Update(l, []types.PropertyChange{
			{Name: "info", Val: info},
			{Name: "initializeProgress", Val: int32(100)},
			{Name: "state", Val: types.HttpNfcLeaseStateReady},
		})
		l.timer = time.AfterFunc(l.timeout, l.expire)
	})
}

func sha1File(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha1.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// fail moves the lease to state error. Caller holds the simulator's lock
// on the lease and l.mu.
func (l *nfcLease) fail(fault types.BaseMethodFault, msg string) {
	l.state = types.HttpNfcLeaseStateError
	l.errFlt, l.errMsg = fault, msg
	if l.timer != nil {
		l.timer.Stop()
	}
	simulator.Map.Update(l, []types.PropertyChange{
		{Name: "error", Val: &types.LocalizedMethodFault{Fault: fault, LocalizedMessage: msg}},
		{Name: "state", Val: types.HttpNfcLeaseStateError},
	})
	l.release()
}

// release drops the streams. Caller holds l.mu.
func (l *nfcLease) release() {
	l.closed = true
	_ = os.RemoveAll(l.dir)
}

func (l *nfcLease) expire() {
	simulator.Map.WithLock(l, func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.state != types.HttpNfcLeaseStateReady {
			return
		}
		l.emu.count("lease.timedout", 1)
		l.fail(&types.Timedout{}, "Operation timed out.")
	})
}

// stateFault is what a call on a lease that is no longer ready gets.
// Caller holds l.mu.
func (l *nfcLease) stateFault() *soap.Fault {
	switch l.state {
	case types.HttpNfcLeaseStateReady:
		return nil
	case types.HttpNfcLeaseStateError:
		if _, ok := l.errFlt.(*types.Timedout); ok {
			return faultBody(l.errMsg, &types.Timedout{})
		}
	}
	return faultBody("The operation is not allowed in the current state.", &types.InvalidState{})
}

// The SOAP methods run with the simulator's lock on the lease held, so
// they update properties with Map.Update directly.

func (l *nfcLease) HttpNfcLeaseProgress(ctx *simulator.Context, req *types.HttpNfcLeaseProgress) soap.HasFault {
	body := &methods.HttpNfcLeaseProgressBody{}
	l.emu.count("lease.progress", 1)
	if ctx.Session == nil {
		body.Fault_ = faultBody("", notAuthenticated(l.Self))
		return body
	}
	if req.Percent < 0 || req.Percent > 100 {
		body.Fault_ = faultBody("A specified parameter was not correct: percent",
			&types.InvalidArgument{InvalidProperty: "percent"})
		return body
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if f := l.stateFault(); f != nil {
		body.Fault_ = f
		return body
	}
	l.timer.Reset(l.timeout)
	simulator.Map.Update(l, []types.PropertyChange{{Name: "transferProgress", Val: req.Percent}})
	body.Res = &types.HttpNfcLeaseProgressResponse{}
	return body
}

func (l *nfcLease) HttpNfcLeaseComplete(ctx *simulator.Context, req *types.HttpNfcLeaseComplete) soap.HasFault {
	body := &methods.HttpNfcLeaseCompleteBody{}
	l.emu.count("lease.complete", 1)
	if ctx.Session == nil {
		body.Fault_ = faultBody("", notAuthenticated(l.Self))
		return body
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if f := l.stateFault(); f != nil {
		body.Fault_ = f
		return body
	}
	l.state = types.HttpNfcLeaseStateDone
	l.timer.Stop()
	simulator.Map.Update(l, []types.PropertyChange{
		{Name: "transferProgress", Val: int32(100)},
		{Name: "state", Val: types.HttpNfcLeaseStateDone},
	})
	l.release()
	body.Res = &types.HttpNfcLeaseCompleteResponse{}
	return body
}

func (l *nfcLease) HttpNfcLeaseAbort(ctx *simulator.Context, req *types.HttpNfcLeaseAbort) soap.HasFault {
	body := &methods.HttpNfcLeaseAbortBody{}
	l.emu.count("lease.abort", 1)
	if ctx.Session == nil {
		body.Fault_ = faultBody("", notAuthenticated(l.Self))
		return body
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.state == types.HttpNfcLeaseStateDone ||
		l.state == types.HttpNfcLeaseStateError {
		body.Fault_ = l.stateFault()
		return body
	}
	lf := req.Fault
	if lf == nil {
		lf = &types.LocalizedMethodFault{Fault: &types.RequestCanceled{},
			LocalizedMessage: "The task was canceled by a user."}
	}
	l.fail(lf.Fault, lf.LocalizedMessage)
	body.Res = &types.HttpNfcLeaseAbortResponse{}
	return body
}

func (l *nfcLease) HttpNfcLeaseGetManifest(ctx *simulator.Context, req *types.HttpNfcLeaseGetManifest) soap.HasFault {
	body := &methods.HttpNfcLeaseGetManifestBody{}
	if ctx.Session == nil {
		body.Fault_ = faultBody("", notAuthenticated(l.Self))
		return body
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if f := l.stateFault(); f != nil {
		body.Fault_ = f
		return body
	}
	res := &types.HttpNfcLeaseGetManifestResponse{}
	for target, f := range l.files {
		res.Returnval = append(res.Returnval, types.HttpNfcLeaseManifestEntry{
			Key: f.disk.DeviceKey, Sha1: f.sha1, Size: f.size,
			Disk: true, Capacity: f.disk.Capacity, PopulatedSize: f.size,
		})
		_ = target
	}
	body.Res = res
	return body
}

// abortAll ends every open lease (control reset and shutdown).
func (e *emulator) abortAll() {
	e.mu.Lock()
	leases := e.leases
	e.leases = nil
	e.mu.Unlock()
	for _, l := range leases {
		simulator.Map.WithLock(l, func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			if l.state == types.HttpNfcLeaseStateReady ||
				l.state == types.HttpNfcLeaseStateInitializing {
				l.fail(&types.RequestCanceled{}, "The lease was reset.")
			}
			l.release()
		})
		simulator.Map.Remove(l.Self)
	}
}

// leaseByTicket finds the lease a /nfc/ URL names.
func (e *emulator) leaseByTicket(ticket string) *nfcLease {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, l := range e.leases {
		if l.ticket == ticket {
			return l
		}
	}
	return nil
}

type leaseView struct {
	Moref    string `json:"moref"`
	Ticket   string `json:"ticket"`
	State    string `json:"state"`
	Progress int32  `json:"transfer_progress"`
}

func (e *emulator) leaseViews() []leaseView {
	e.mu.Lock()
	leases := append([]*nfcLease(nil), e.leases...)
	e.mu.Unlock()
	var out []leaseView
	for _, l := range leases {
		v := leaseView{Moref: l.Self.Value, Ticket: l.ticket}
		simulator.Map.WithLock(l, func() {
			l.mu.Lock()
			v.State = string(l.state)
			l.mu.Unlock()
			v.Progress = l.TransferProgress
		})
		out = append(out, v)
	}
	return out
}
