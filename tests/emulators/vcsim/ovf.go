// SPDX-License-Identifier: MIT
// OvfManager.CreateDescriptor (absent from the simulator): an OVF 1.x
// envelope for a VM naming its disks with their capacities, and the files
// the caller lists in cdp.ovfFiles (matched by deviceId = deviceUrl key).
package main

import (
	"bytes"
	"encoding/xml"
	"fmt"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

const ovfProxyType = "CfsOvfManager"

type ovfProxy struct {
	mo.OvfManager
	emu *emulator
}

func (o *ovfProxy) Reference() types.ManagedObjectReference { return o.Self }

func esc(s string) string {
	var b bytes.Buffer
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

func (o *ovfProxy) CreateDescriptor(ctx *simulator.Context, req *types.CreateDescriptor) soap.HasFault {
	body := &methods.CreateDescriptorBody{}
	if ctx.Session == nil {
		body.Fault_ = faultBody("", notAuthenticated(req.This))
		return body
	}
	o.emu.count("ovf.descriptors", 1)
	vm, ok := simulator.Map.Get(req.Obj).(*simulator.VirtualMachine)
	if !ok {
		body.Fault_ = faultBody("The object has already been deleted or has not been completely created",
			&types.ManagedObjectNotFound{Obj: req.Obj})
		return body
	}
	var name, guest string
	var cpus, memMB int32
	simulator.Map.WithLock(vm, func() {
		name = vm.Name
		if vm.Config != nil {
			guest = vm.Config.GuestId
			cpus = vm.Config.Hardware.NumCPU
			memMB = vm.Config.Hardware.MemoryMB
		}
	})
	if req.Cdp.Name != "" {
		name = req.Cdp.Name
	}
	disks := o.emu.vmDisks(req.Obj)
	files := map[string]types.OvfFile{}
	for _, f := range req.Cdp.OvfFiles {
		files[f.DeviceId] = f
	}

	var refs, diskSec, items bytes.Buffer
	inst := 1
	fmt.Fprintf(&items, `      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:Description>Number of Virtual CPUs</rasd:Description>
        <rasd:ElementName>%d virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>%d</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>%d</rasd:VirtualQuantity>
      </Item>
`, cpus, inst, cpus)
	inst++
	fmt.Fprintf(&items, `      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:Description>Memory Size</rasd:Description>
        <rasd:ElementName>%dMB of memory</rasd:ElementName>
        <rasd:InstanceID>%d</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>%d</rasd:VirtualQuantity>
      </Item>
`, memMB, inst, memMB)
	inst++
	ctrl := inst
	fmt.Fprintf(&items, `      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Description>SCSI Controller</rasd:Description>
        <rasd:ElementName>SCSI Controller 0</rasd:ElementName>
        <rasd:InstanceID>%d</rasd:InstanceID>
        <rasd:ResourceSubType>VirtualSCSI</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
`, ctrl)
	inst++
	for i, d := range disks {
		diskID := fmt.Sprintf("vmdisk%d", i+1)
		fileRef := ""
		if f, ok := files[d.DeviceKey]; ok {
			fileID := fmt.Sprintf("file%d", i+1)
			fmt.Fprintf(&refs, "    <File ovf:href=\"%s\" ovf:id=\"%s\" ovf:size=\"%d\"/>\n",
				esc(f.Path), fileID, f.Size)
			fileRef = fmt.Sprintf(` ovf:fileRef="%s"`, fileID)
		}
		fmt.Fprintf(&diskSec, "    <Disk ovf:capacity=\"%d\" ovf:capacityAllocationUnits=\"byte\" ovf:diskId=\"%s\"%s ovf:format=\"http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized\"/>\n",
			d.Capacity, diskID, fileRef)
		fmt.Fprintf(&items, `      <Item>
        <rasd:AddressOnParent>%d</rasd:AddressOnParent>
        <rasd:ElementName>Hard disk %d</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/%s</rasd:HostResource>
        <rasd:InstanceID>%d</rasd:InstanceID>
        <rasd:Parent>%d</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
`, i, i+1, diskID, inst, ctrl)
		inst++
	}

	doc := fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<Envelope vmw:buildId="build-cfsvcsim" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
%s  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
%s  </DiskSection>
  <VirtualSystem ovf:id="%s">
    <Info>A virtual machine</Info>
    <Name>%s</Name>
    <OperatingSystemSection ovf:id="1" vmw:osType="%s">
      <Info>The kind of installed guest operating system</Info>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>%s</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-13</vssd:VirtualSystemType>
      </System>
%s    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
`, refs.String(), diskSec.String(), esc(name), esc(name), esc(guest), esc(name), items.String())

	body.Res = &types.CreateDescriptorResponse{Returnval: types.OvfCreateDescriptorResult{
		OvfDescriptor:     doc,
		IncludeImageFiles: types.NewBool(false),
	}}
	return body
}
