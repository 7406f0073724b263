// SPDX-License-Identifier: MIT
/*
 * The OVF 1.x descriptor of a VM, written here rather than asked of the
 * server (OvfManager.CreateDescriptor names the files its own way): the
 * disks as the OVA holds them ("<vm>-disk1.vmdk", streamOptimized), with
 * their capacities and, where the allocation map is known when listing,
 * the size of each VMDK; CPUs, memory and one SCSI controller per 15
 * disks.
 */
#include <string.h>

#include "providers/vsphere/vsphere-private.h"

#define OVF_DISKS_PER_CONTROLLER 15

static void attr(GString *s, const char *name, const char *value)
{
	g_string_append_printf(s, " %s=\"", name);
	cfs_xml_escape(s, value);
	g_string_append_c(s, '"');
}

static void item(GString *s, guint id, guint type, const char *name,
		 const char *extra)
{
	g_string_append(s, "      <Item>\n        <rasd:ElementName>");
	cfs_xml_escape(s, name);
	g_string_append_printf(
	    s,
	    "</rasd:ElementName>\n"
	    "        <rasd:InstanceID>%u</rasd:InstanceID>\n"
	    "        <rasd:ResourceType>%u</rasd:ResourceType>"
	    "\n%s      </Item>\n",
	    id, type, extra);
}

/* Units of @unit bytes that hold data in @map. */
static guint64 units_used(const CfsExtentMap *map, guint64 unit)
{
	guint64 n = 0, prev = G_MAXUINT64;

	for (guint i = 0; i < map->n; i++) {
		guint64 first = map->ext[i].offset / unit;
		guint64 last =
		    (map->ext[i].offset + map->ext[i].length - 1) / unit;

		n += last - first + 1 - (first == prev ? 1 : 0);
		prev = last;
	}
	return n;
}

/*
 * The size of the streamOptimized VMDK the engine makes of @map (the
 * layout README.md describes: 128 sectors of header and descriptor; each
 * 64 KiB grain that holds data as a marker and a zlib stream of stored
 * blocks, 129 sectors; each grain table that maps data as a marker and 4
 * sectors; the grain directory's marker and sectors; footer marker,
 * footer, end-of-stream marker). 0 when no such view can be made.
 */
static guint64 vmdk_view_size(const CfsExtentMap *map)
{
	const guint64 grain = 64 << 10, gtes = 512;
	guint64 sectors = (map->size + 511) / 512;
	guint64 gds = (sectors + 128 * gtes - 1) / (128 * gtes);
	guint64 trailer = 128 + units_used(map, grain) * 129 +
			  units_used(map, grain * gtes) * 5;

	if (trailer > G_MAXUINT32)
		return 0;
	return (trailer + 1 + (gds * 4 + 511) / 512 + 3) * 512;
}

static void references(GString *s, const VsOvfVm *vm)
{
	g_string_append(s, "  <References>\n");
	for (guint i = 0; i < vm->disks->len; i++) {
		const CfsDisk *disk = vm->disks->pdata[i];
		g_autofree char *id = g_strdup_printf("file%u", i + 1);
		guint64 size = 0;

		/* Known for a view of a map the listing gave. */
		if (disk->map && g_strcmp0(disk->present, "vmdk") == 0)
			size = vmdk_view_size(disk->map);
		g_string_append(s, "    <File");
		attr(s, "ovf:href", vm->files->pdata[i]);
		attr(s, "ovf:id", id);
		if (size)
			g_string_append_printf(
			    s, " ovf:size=\"%" G_GUINT64_FORMAT "\"", size);
		g_string_append(s, "/>\n");
	}
	g_string_append(s, "  </References>\n");
}

static void disk_section(GString *s, const VsOvfVm *vm)
{
	g_string_append(s, "  <DiskSection>\n    <Info>Virtual disks</Info>\n");
	for (guint i = 0; i < vm->disks->len; i++) {
		const CfsDisk *disk = vm->disks->pdata[i];
		const VsDisk *d = disk->priv;

		g_string_append_printf(
		    s,
		    "    <Disk ovf:capacity=\"%" G_GUINT64_FORMAT "\" "
		    "ovf:capacityAllocationUnits=\"byte\" "
		    "ovf:diskId=\"vmdisk%u\" ovf:fileRef=\"file%u\" "
		    "ovf:format=\"http://www.vmware.com/interfaces/"
		    "specifications/vmdk.html#streamOptimized\"/>\n",
		    d->capacity, i + 1, i + 1);
	}
	g_string_append(s, "  </DiskSection>\n");
}

static void hardware(GString *s, const VsOvfVm *vm)
{
	g_autofree char *cpu = g_strdup_printf(
	    "        <rasd:VirtualQuantity>%u</rasd:VirtualQuantity>\n",
	    vm->cpus);
	g_autofree char *mem = g_strdup_printf(
	    "        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>"
	    "\n        <rasd:VirtualQuantity>%u</rasd:VirtualQuantity>\n",
	    vm->memory_mb);
	guint id = 3, ctrl = 0;

	g_string_append(s, "    <VirtualHardwareSection>\n"
			   "      <Info>Virtual hardware requirements</Info>\n"
			   "      <System>\n"
			   "        <vssd:ElementName>Virtual Hardware Family"
			   "</vssd:ElementName>\n"
			   "        <vssd:InstanceID>0</vssd:InstanceID>\n"
			   "        <vssd:VirtualSystemIdentifier>");
	cfs_xml_escape(s, vm->name);
	g_string_append(s, "</vssd:VirtualSystemIdentifier>\n"
			   "        <vssd:VirtualSystemType>vmx-13"
			   "</vssd:VirtualSystemType>\n      </System>\n");
	item(s, 1, 3, "virtual CPUs", cpu);
	item(s, 2, 4, "memory", mem);
	for (guint i = 0; i < vm->disks->len; i++) {
		g_autofree char *extra = NULL, *name = NULL;

		if (i % OVF_DISKS_PER_CONTROLLER == 0) {
			g_autofree char *c = g_strdup_printf(
			    "        <rasd:Address>%u</rasd:Address>\n"
			    "        <rasd:ResourceSubType>lsilogic"
			    "</rasd:ResourceSubType>\n",
			    i / OVF_DISKS_PER_CONTROLLER);
			g_autofree char *cn = g_strdup_printf(
			    "SCSI Controller %u", i / OVF_DISKS_PER_CONTROLLER);

			ctrl = id++;
			item(s, ctrl, 6, cn, c);
		}
		extra = g_strdup_printf(
		    "        <rasd:AddressOnParent>%u</rasd:AddressOnParent>\n"
		    "        <rasd:HostResource>ovf:/disk/vmdisk%u"
		    "</rasd:HostResource>\n"
		    "        <rasd:Parent>%u</rasd:Parent>\n",
		    i % OVF_DISKS_PER_CONTROLLER, i + 1, ctrl);
		name = g_strdup_printf("Hard disk %u", i + 1);
		item(s, id++, 17, name, extra);
	}
	g_string_append(s, "    </VirtualHardwareSection>\n");
}

GBytes *vs_ovf_build(const VsOvfVm *vm)
{
	GString *s = g_string_new(
	    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
	    "<Envelope xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\" "
	    "xmlns:ovf=\"http://schemas.dmtf.org/ovf/envelope/1\" "
	    "xmlns:rasd=\"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/"
	    "2/CIM_ResourceAllocationSettingData\" "
	    "xmlns:vssd=\"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/"
	    "2/CIM_VirtualSystemSettingData\" "
	    "xmlns:vmw=\"http://www.vmware.com/schema/ovf\" "
	    "xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\n");
	gsize len;

	references(s, vm);
	disk_section(s, vm);
	g_string_append(s, "  <VirtualSystem");
	attr(s, "ovf:id", vm->name);
	g_string_append(s, ">\n    <Info>A virtual machine</Info>\n"
			   "    <Name>");
	cfs_xml_escape(s, vm->name);
	g_string_append(s, "</Name>\n    <OperatingSystemSection ovf:id=\"1\"");
	if (vm->guest && *vm->guest)
		attr(s, "vmw:osType", vm->guest);
	g_string_append(s, ">\n      <Info>The guest operating system</Info>\n"
			   "    </OperatingSystemSection>\n");
	hardware(s, vm);
	g_string_append(s, "  </VirtualSystem>\n</Envelope>\n");
	len = s->len;
	return g_bytes_new_take(g_string_free(s, FALSE), len);
}
