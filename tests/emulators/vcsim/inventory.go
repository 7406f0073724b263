// SPDX-License-Identifier: MIT
// The inventory the tests see: the model's VMs given disks of a few MiB
// (flat files of full size, mostly holes), a folder, a template, mixed power
// states; and the read-only view of it the control endpoint reports.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

const MiB = 1 << 20

// vmPlan is what one model VM is turned into.
type vmPlan struct {
	DiskMiB   []int64 // one disk per entry, in order
	PoweredOn bool
	Template  bool
	Folder    string // a folder under the datacenter's vm folder, "" for none
	CBT       bool   // config.changeTrackingEnabled
	Created   bool   // config.createDate set (else only runtime.bootTime)
}

// plans, by the VM's rank in name order (the models' names sort stably:
// DC0_C0_RP0_VM0..2, then DC0_H0_VM0..2).
var plans = []vmPlan{
	{DiskMiB: []int64{4}, PoweredOn: true, Created: true},
	{DiskMiB: []int64{2, 3}, PoweredOn: false, Created: true},
	{DiskMiB: []int64{4}, PoweredOn: false, CBT: true, Created: true},
	{DiskMiB: []int64{3}, PoweredOn: true, Folder: "Prod", Created: true},
	{DiskMiB: []int64{2}, PoweredOn: false, Template: true, Created: true},
	{DiskMiB: []int64{4}, PoweredOn: true, CBT: true},
}

// vmTimes are the times the inventory reports: config.createDate (VMs
// whose plan says Created) and runtime.bootTime (every VM), one second
// apart by rank so that a test can tell them apart.
var (
	createBase = time.Date(2023, 4, 5, 6, 7, 8, 0, time.UTC)
	bootBase   = time.Date(2024, 9, 10, 11, 12, 13, 0, time.UTC)
)

func (e *emulator) shapeInventory(ctx context.Context) error {
	finder := find.NewFinder(e.client, true)
	dc, err := finder.DefaultDatacenter(ctx)
	if err != nil {
		return err
	}
	finder.SetDatacenter(dc)
	vms, err := finder.VirtualMachineList(ctx, "*")
	if err != nil {
		return err
	}
	sort.Slice(vms, func(i, j int) bool { return vms[i].Name() < vms[j].Name() })
	folders, err := dc.Folders(ctx)
	if err != nil {
		return err
	}

	for i, vm := range vms {
		if i >= len(plans) {
			break
		}
		plan := plans[i]
		if i == 2 && e.cbtMiB > 0 {
			plan.DiskMiB = []int64{e.cbtMiB}
		}
		if err := e.shapeVM(ctx, folders, vm, plan); err != nil {
			return fmt.Errorf("%s: %w", vm.Name(), err)
		}
		setTimes(vm.Reference(), plan, i)
		e.initial[vm.Name()] = plan
	}
	return nil
}

func setTimes(ref types.ManagedObjectReference, plan vmPlan, rank int) {
	obj := simulator.Map.Get(ref).(*simulator.VirtualMachine)
	boot := bootBase.Add(time.Duration(rank) * time.Second)
	simulator.Map.WithLock(obj, func() {
		obj.Runtime.BootTime = &boot
		if plan.Created {
			created := createBase.Add(time.Duration(rank) * time.Second)
			obj.Config.CreateDate = &created
		} else {
			obj.Config.CreateDate = nil
		}
	})
}

func waitTask(t *object.Task, err error) error {
	if err != nil {
		return err
	}
	return t.Wait(context.Background())
}

func (e *emulator) shapeVM(ctx context.Context, folders *object.DatacenterFolders,
	vm *object.VirtualMachine, plan vmPlan) error {
	devices, err := vm.Device(ctx)
	if err != nil {
		return err
	}
	disks := devices.SelectByType((*types.VirtualDisk)(nil))
	if len(disks) == 0 {
		return fmt.Errorf("no disk")
	}
	first := disks[0].(*types.VirtualDisk)
	var changes []types.BaseVirtualDeviceConfigSpec
	first.CapacityInKB = plan.DiskMiB[0] * 1024
	first.CapacityInBytes = plan.DiskMiB[0] * MiB
	changes = append(changes, &types.VirtualDeviceConfigSpec{
		Operation: types.VirtualDeviceConfigSpecOperationEdit, Device: first})

	base := first.Backing.(types.BaseVirtualDeviceFileBackingInfo).GetVirtualDeviceFileBackingInfo()
	dir := strings.TrimSuffix(base.FileName, "disk1.vmdk")
	for n, size := range plan.DiskMiB[1:] {
		ctrl, err := devices.FindDiskController("scsi")
		if err != nil {
			return err
		}
		disk := devices.CreateDisk(ctrl, *base.Datastore,
			fmt.Sprintf("%sdisk%d.vmdk", dir, n+2))
		disk.CapacityInKB = size * 1024
		disk.CapacityInBytes = size * MiB
		devices.AssignController(disk, ctrl)
		unit := int32(n + 1)
		disk.UnitNumber = &unit
		disk.Key = int32(-100 - n)
		changes = append(changes, &types.VirtualDeviceConfigSpec{
			Operation:     types.VirtualDeviceConfigSpecOperationAdd,
			FileOperation: types.VirtualDeviceConfigSpecFileOperationCreate,
			Device:        disk})
	}
	spec := types.VirtualMachineConfigSpec{DeviceChange: changes}
	if plan.CBT {
		on := true
		spec.ChangeTrackingEnabled = &on
	}
	if err := waitTask(vm.Reconfigure(ctx, spec)); err != nil {
		return fmt.Errorf("reconfigure: %w", err)
	}

	for _, d := range e.vmDisks(vm.Reference()) {
		if err := writeDiskFiles(d); err != nil {
			return err
		}
	}

	state, err := vm.PowerState(ctx)
	if err != nil {
		return err
	}
	if !plan.PoweredOn && state == types.VirtualMachinePowerStatePoweredOn {
		if err := waitTask(vm.PowerOff(ctx)); err != nil {
			return err
		}
	}
	if plan.Template {
		if err := vm.MarkAsTemplate(ctx); err != nil {
			return err
		}
	}
	if plan.Folder != "" {
		f, err := folders.VmFolder.CreateFolder(ctx, plan.Folder)
		if err != nil {
			return err
		}
		if err := waitTask(f.MoveInto(ctx, []types.ManagedObjectReference{vm.Reference()})); err != nil {
			return err
		}
	}
	return nil
}

// diskInfo is one virtual disk as the tests and the exporter see it.
type diskInfo struct {
	Key        int32  `json:"key"`
	Label      string `json:"label"`
	FileName   string `json:"file_name"` // "[LocalDS_0] DC0_H0_VM0/disk1.vmdk"
	Descriptor string `json:"descriptor_path"`
	FlatPath   string `json:"flat_path"`      // the flat extent on this machine
	FlatName   string `json:"flat_name"`      // "DC0_H0_VM0/disk1-flat.vmdk" inside the datastore
	Datastore  string `json:"datastore"`      // "LocalDS_0"
	Capacity   int64  `json:"capacity"`       // bytes
	DeviceKey  string `json:"device_url_key"` // "/vm-42/ParaVirtualSCSIController0:0"
}

func datastoreURL(name string) string {
	for _, ent := range simulator.Map.All("Datastore") {
		ds := ent.(*simulator.Datastore)
		if ds.Name == name {
			return ds.Info.GetDatastoreInfo().Url
		}
	}
	return ""
}

func (e *emulator) datastoreDir() string {
	for _, ent := range simulator.Map.All("Datastore") {
		return ent.(*simulator.Datastore).Info.GetDatastoreInfo().Url
	}
	return ""
}

// vmDisks lists a VM's disks in device order; nil when the VM is gone.
func (e *emulator) vmDisks(ref types.ManagedObjectReference) []diskInfo {
	obj, ok := simulator.Map.Get(ref).(*simulator.VirtualMachine)
	if !ok {
		return nil
	}
	var out []diskInfo
	simulator.Map.WithLock(obj, func() {
		devices := object.VirtualDeviceList(obj.Config.Hardware.Device)
		for _, dev := range devices.SelectByType((*types.VirtualDisk)(nil)) {
			disk := dev.(*types.VirtualDisk)
			fb, ok := disk.Backing.(types.BaseVirtualDeviceFileBackingInfo)
			if !ok {
				continue
			}
			var p object.DatastorePath
			if !p.FromString(fb.GetVirtualDeviceFileBackingInfo().FileName) {
				continue
			}
			root := datastoreURL(p.Datastore)
			flat := strings.TrimSuffix(p.Path, ".vmdk") + "-flat.vmdk"
			capacity := disk.CapacityInBytes
			if capacity == 0 {
				capacity = disk.CapacityInKB * 1024
			}
			ctrl := devices.FindByKey(disk.ControllerKey)
			key := ""
			if ctrl != nil {
				name := fmt.Sprintf("%T", ctrl)
				name = name[strings.LastIndex(name, ".")+1:]
				bus := int32(0)
				if c, ok := ctrl.(types.BaseVirtualController); ok {
					bus = c.GetVirtualController().BusNumber
				}
				unit := int32(0)
				if disk.UnitNumber != nil {
					unit = *disk.UnitNumber
				}
				key = fmt.Sprintf("/%s/%s%d:%d", ref.Value, name, bus, unit)
			}
			label := ""
			if disk.DeviceInfo != nil {
				label = disk.DeviceInfo.GetDescription().Label
			}
			out = append(out, diskInfo{
				Key: disk.Key, Label: label,
				FileName:   fb.GetVirtualDeviceFileBackingInfo().FileName,
				Descriptor: filepath.Join(root, p.Path),
				FlatPath:   filepath.Join(root, flat),
				FlatName:   flat, Datastore: p.Datastore,
				Capacity: capacity, DeviceKey: key,
			})
		}
	})
	return out
}

// writeDiskFiles gives a disk a flat extent of its full size (a hole until
// a test writes into it) and a monolithicFlat descriptor naming it.
func writeDiskFiles(d diskInfo) error {
	f, err := os.OpenFile(d.FlatPath, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	if err := f.Truncate(d.Capacity); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	sectors := d.Capacity / 512
	desc := fmt.Sprintf(`# Disk DescriptorFile
version=1
encoding="UTF-8"
CID=fffffffe
parentCID=ffffffff
createType="vmfs"

# Extent description
RW %d VMFS "%s"

# The Disk Data Base
#DDB

ddb.adapterType = "lsilogic"
ddb.geometry.cylinders = "%d"
ddb.geometry.heads = "255"
ddb.geometry.sectors = "63"
ddb.virtualHWVersion = "13"
`, sectors, filepath.Base(d.FlatPath), sectors/(255*63)+1)
	return os.WriteFile(d.Descriptor, []byte(desc), 0o644)
}

// vmView is one VM as the control endpoint reports it.
type vmView struct {
	Name      string     `json:"name"`
	Moref     string     `json:"moref"`
	Power     string     `json:"power_state"`
	Template  bool       `json:"template"`
	UUID      string     `json:"uuid"`
	Path      string     `json:"path"` // inventory path, "/DC0/vm/Prod/DC0_C0_RP0_VM0"
	Disks     []diskInfo `json:"disks"`
	Snapshots int        `json:"snapshots"`
	CBT       bool       `json:"change_tracking"`
	Created   int64      `json:"create_date"` // seconds since the epoch, 0: none
	Booted    int64      `json:"boot_time"`   // seconds since the epoch, 0: none
}

func countSnapshots(list []types.VirtualMachineSnapshotTree) int {
	n := 0
	for _, s := range list {
		n += 1 + countSnapshots(s.ChildSnapshotList)
	}
	return n
}

func inventoryPath(ref types.ManagedObjectReference) string {
	var parts []string
	for {
		obj := simulator.Map.Get(ref)
		if obj == nil {
			break
		}
		ent, ok := obj.(mo.Entity)
		if !ok {
			break
		}
		me := ent.Entity()
		if me.Parent == nil {
			break
		}
		parts = append([]string{me.Name}, parts...)
		ref = *me.Parent
	}
	return "/" + strings.Join(parts, "/")
}

func (e *emulator) vms() []vmView {
	var out []vmView
	for _, ent := range simulator.Map.All("VirtualMachine") {
		vm := ent.(*simulator.VirtualMachine)
		var v vmView
		simulator.Map.WithLock(vm, func() {
			v = vmView{Name: vm.Name, Moref: vm.Self.Value,
				Power: string(vm.Runtime.PowerState)}
			if vm.Config != nil {
				v.Template = vm.Config.Template
				v.UUID = vm.Config.Uuid
				v.CBT = vm.Config.ChangeTrackingEnabled != nil &&
					*vm.Config.ChangeTrackingEnabled
				if vm.Config.CreateDate != nil {
					v.Created = vm.Config.CreateDate.Unix()
				}
			}
			if vm.Runtime.BootTime != nil {
				v.Booted = vm.Runtime.BootTime.Unix()
			}
			if vm.Snapshot != nil {
				v.Snapshots = countSnapshots(vm.Snapshot.RootSnapshotList)
			}
		})
		v.Path = inventoryPath(vm.Self)
		v.Disks = e.vmDisks(vm.Self)
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (e *emulator) findVM(name string) *simulator.VirtualMachine {
	for _, ent := range simulator.Map.All("VirtualMachine") {
		vm := ent.(*simulator.VirtualMachine)
		if vm.Name == name || vm.Self.Value == name {
			return vm
		}
	}
	return nil
}
