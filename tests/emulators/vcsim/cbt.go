// SPDX-License-Identifier: MIT
// VirtualMachine.QueryChangedDiskAreas, which the simulator lacks: with
// change id "*" it answers the allocated areas of a disk, worked out from
// the flat extent's bytes (64 KiB blocks that are not all zeros), in parts
// of at most cbt_span bytes of the disk, so that a client asks again from
// startOffset+length until the disk is covered. Only for VMs whose
// config.changeTrackingEnabled is set (else a FileFault, as vSphere says);
// with a snapshot argument, for the disk the snapshot froze. Fault switches
// make it lie: an area past the end, no progress, endless tiny parts,
// overlapping areas.
package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// The 64 KiB blocks a changed-area answer is made of.
const cbtBlock = 64 << 10

// cbtDisk finds the disk @key among @devices: its file and capacity.
func cbtDisk(devices []types.BaseVirtualDevice, key int32) (string, int64, bool) {
	for _, dev := range devices {
		disk, ok := dev.(*types.VirtualDisk)
		if !ok || disk.Key != key {
			continue
		}
		fb, ok := disk.Backing.(types.BaseVirtualDeviceFileBackingInfo)
		if !ok {
			return "", 0, false
		}
		capacity := disk.CapacityInBytes
		if capacity == 0 {
			capacity = disk.CapacityInKB * 1024
		}
		return fb.GetVirtualDeviceFileBackingInfo().FileName, capacity, true
	}
	return "", 0, false
}

// flatPath is the local path of the flat extent of "[ds] dir/disk.vmdk".
func flatPath(fileName string) (string, bool) {
	var p object.DatastorePath
	if !p.FromString(fileName) {
		return "", false
	}
	root := datastoreURL(p.Datastore)
	if root == "" {
		return "", false
	}
	return filepath.Join(root, strings.TrimSuffix(p.Path, ".vmdk")+"-flat.vmdk"), true
}

// allocated lists the 64 KiB blocks of [start, end) of @path that hold a
// byte other than zero, adjacent ones merged.
func allocated(path string, start, end int64) ([]types.DiskChangeExtent, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []types.DiskChangeExtent
	buf := make([]byte, cbtBlock)
	zero := make([]byte, cbtBlock)
	for pos := start; pos < end; {
		n := int64(cbtBlock) - pos%cbtBlock
		if end-pos < n {
			n = end - pos
		}
		got, err := f.ReadAt(buf[:n], pos)
		if err != nil && err != io.EOF {
			return nil, err
		}
		if got > 0 && !bytes.Equal(buf[:got], zero[:got]) {
			last := len(out) - 1
			if last >= 0 && out[last].Start+out[last].Length == pos {
				out[last].Length += n
			} else {
				out = append(out, types.DiskChangeExtent{Start: pos, Length: n})
			}
		}
		pos += n
	}
	return out, nil
}

func (p *vmProxy) QueryChangedDiskAreas(ctx *simulator.Context, req *types.QueryChangedDiskAreas) soap.HasFault {
	e := p.emu
	body := &methods.QueryChangedDiskAreasBody{}
	vm, _, fault := p.vm(ctx, req.This)
	if fault != nil {
		body.Fault_ = fault
		return body
	}
	var tracked bool
	var power types.VirtualMachinePowerState
	var devices []types.BaseVirtualDevice
	simulator.Map.WithLock(vm, func() {
		tracked = vm.Config.ChangeTrackingEnabled != nil && *vm.Config.ChangeTrackingEnabled
		power = vm.Runtime.PowerState
		devices = vm.Config.Hardware.Device
	})
	if req.Snapshot != nil {
		snap, ok := simulator.Map.Get(*req.Snapshot).(*simulator.VirtualMachineSnapshot)
		if !ok {
			body.Fault_ = faultBody("The object has already been deleted or has not been completely created",
				&types.ManagedObjectNotFound{Obj: *req.Snapshot})
			return body
		}
		simulator.Map.WithLock(snap, func() { devices = snap.Config.Hardware.Device })
		e.count("cbt.snapshot", 1)
	} else if power != types.VirtualMachinePowerStatePoweredOff {
		body.Fault_ = faultBody("The current state of a running virtual machine's disk has no change information: name a snapshot",
			&types.InvalidState{})
		return body
	}
	fileName, capacity, ok := cbtDisk(devices, req.DeviceKey)
	if !ok {
		body.Fault_ = faultBody(fmt.Sprintf("A specified parameter was not correct: deviceKey %d", req.DeviceKey),
			&types.InvalidArgument{InvalidProperty: "deviceKey"})
		return body
	}
	f := e.snapshotFaults()
	if !tracked || f.CbtOff || req.ChangeId != "*" {
		e.count("cbt.faults", 1)
		body.Fault_ = faultBody(fmt.Sprintf("Error caused by file %s: change tracking is not enabled or the change id is unknown", fileName),
			&types.FileFault{File: fileName})
		return body
	}
	if req.StartOffset < 0 || req.StartOffset >= capacity {
		body.Fault_ = faultBody(fmt.Sprintf("A specified parameter was not correct: startOffset %d", req.StartOffset),
			&types.InvalidArgument{InvalidProperty: "startOffset"})
		return body
	}
	path, ok := flatPath(fileName)
	if !ok {
		body.Fault_ = faultBody("no flat file", &types.FileNotFound{FileFault: types.FileFault{File: fileName}})
		return body
	}
	span := f.CbtSpan
	if span <= 0 {
		span = capacity
	}
	start := req.StartOffset
	end := start + span
	if end > capacity {
		end = capacity
	}
	areas, err := allocated(path, start, end)
	if err != nil {
		body.Fault_ = faultBody(err.Error(), &types.FileFault{File: fileName})
		return body
	}
	info := types.DiskChangeInfo{StartOffset: start, Length: end - start, ChangedArea: areas}
	lie(&info, f.CbtLie, capacity)
	e.count("cbt.answers", 1)
	e.count("cbt.areas", int64(len(info.ChangedArea)))
	body.Res = &types.QueryChangedDiskAreasResponse{Returnval: info}
	return body
}

// lie bends an honest answer as the switch says.
func lie(info *types.DiskChangeInfo, how string, capacity int64) {
	start := info.StartOffset
	switch how {
	case "past_end":
		if start+info.Length == capacity {
			info.ChangedArea = append(info.ChangedArea,
				types.DiskChangeExtent{Start: capacity - 4096, Length: 1 << 20})
		}
	case "repeat":
		// After the first part, no progress: the client asks the same
		// offset again and again.
		if start > 0 {
			info.Length = 0
			info.ChangedArea = nil
		}
	case "endless":
		info.Length = 4096
		info.ChangedArea = nil
	case "overlap":
		info.ChangedArea = append(info.ChangedArea,
			types.DiskChangeExtent{Start: start, Length: 8192},
			types.DiskChangeExtent{Start: start + 4096, Length: 8192})
	}
}
