/* SPDX-License-Identifier: MIT */
/*
 * The vSphere provider's private types: the instance made from a [vsphere]
 * section (vsphere.c), the vim25 SOAP client and its session (soap.c),
 * the inventory (inventory.c), OVF descriptors (ovf.c), datastore reads
 * and temporary snapshots (datastore.c), changed block tracking (cbt.c)
 * and NFC export leases (nfc.c).
 *
 * Threads: create and free on the main thread; everything that calls the
 * server on the control pool; a source's plan and authorize on the network
 * thread, from the cookie stored under VsProvider.lock.
 * Lock order: login_lock, then lock. lock is never held across I/O.
 */
#pragma once

#include <glib.h>
#include <libxml/tree.h>
#include <stdbool.h>

#include "common/cleanup.h"
#include "common/http.h"
#include "common/xml.h"
#include "providers/provider.h"

#define VS_NS "urn:vim25"
#define VS_NS_SOAPENV "http://schemas.xmlsoap.org/soap/envelope/"
#define VS_COOKIE "vmware_soap_session"
/* Temporary snapshots are named VS_SNAPSHOT_PREFIX + ownership tag. */
#define VS_SNAPSHOT_PREFIX "cloudfs-"

/* Disks over this are refused: no VMDK or datastore holds more. */
#define VS_DISK_MAX (64ULL << 40)

typedef enum {
	VS_MODE_AUTO,
	VS_MODE_DATASTORE,
	VS_MODE_NFC,
} VsMode;

/* A managed object reference. */
typedef struct {
	char *type;
	char *value;
} VsRef;

/* The morefs of ServiceContent the provider uses. */
typedef struct {
	VsRef property_collector;
	VsRef root_folder;
	VsRef view_manager;
	VsRef session_manager;
	VsRef ovf_manager; /* value NULL on a server without one */
} VsContent;

typedef struct VsLease VsLease;

typedef struct {
	CfsProvider base;

	char *sdk_url;	 /* https://host[:port]/sdk */
	char *base_url;	 /* https://host[:port] */
	char *authority; /* host[:port], for deviceUrl's '*' */
	char *username;
	char *password;	   /* a secret */
	GStrv datacenters; /* names to list, or NULL: all */
	VsMode mode;
	CfsHttpSettings *settings;

	GMutex login_lock; /* held across RetrieveServiceContent and
			    * Login: one login at a time */
	VsContent content; /* set under login_lock before the first
			    * call; constant afterwards */
	bool have_content; /* protected by login_lock */

	GMutex lock;	    /* held only to copy or swap */
	char *cookie;	    /* protected by lock; a secret; NULL: none */
	guint session_gen;  /* protected by lock: logins so far */
	GHashTable *leases; /* protected by lock: VM moref -> VsLease */
	GMutex lease_lock;  /* held while a lease is opened: one
			     * ExportVm at a time */
} VsProvider;

/* What list() found about one disk: the CfsDisk's priv. */
typedef struct {
	VsRef vm;
	char *vm_name;
	char *dc_path;	  /* inventory path of the datacenter */
	char *datastore;  /* "LocalDS_0" */
	char *file;	  /* "vm/disk1.vmdk" inside the datastore */
	int key;	  /* the device key */
	guint64 capacity; /* bytes */
	bool powered_on;  /* at listing */
	bool nfc;	  /* bytes through an NFC lease, not the
			   * datastore */
	bool chained;	  /* has a parent (the VM has snapshots): the
			   * flat file alone is not the disk */
	bool cbt;	  /* changed block tracking is on: the map comes
			   * from QueryChangedDiskAreas at export */
	char *device;	  /* "VirtualLsiLogicController0:1": how an
			   * NFC lease's deviceUrl key ends */
	guint index;	  /* among the VM's listed disks */
} VsDisk;

void vs_disk_free(VsDisk *d);
void vs_ref_clear(VsRef *ref);
void vs_ref_copy(VsRef *dst, const VsRef *src);

/* --- soap.c --- */

/* How the server's answers are retried: SOAP faults are final, a 401
 * asks for a new session. Network thread. */
CfsHttpClass vs_classify(const CfsHttpRequest *req);

/* Append <@tag>@text</@tag> (escaped) to @out. */
void vs_add(GString *out, const char *tag, const char *text);
/* Append <@tag type="…">…</@tag> for @ref. */
void vs_add_ref(GString *out, const char *tag, const VsRef *ref);
/* A VsRef from a ManagedObjectReference element; false if it is not one. */
bool vs_ref_parse(const xmlNode *node, VsRef *ref);

/*
 * Call @method on @this with the arguments @args (XML already escaped,
 * may be NULL), in the current session, logging in first when there is
 * none and once again when the server says the session ended. Returns
 * the answer, with the method's response element in @resp (borrowed from
 * the document). A SOAP fault becomes an error naming it and, when
 * @fault is not NULL, its type ("InvalidPowerState") in @fault (transfer
 * full). Control pool.
 */
xmlDoc *vs_call(VsProvider *prov, const char *method, const VsRef *this,
		const char *args, xmlNode **resp, char **fault, GError **error);

/* Log in if there is no session yet, or again when @force (the session
 * of generation @gen was refused; a newer one is kept). Control pool. */
bool vs_login(VsProvider *prov, bool force, guint gen, GError **error);
/* The session generation now. Any thread. */
guint vs_session_gen(VsProvider *prov);
/* "Cookie: vmware_soap_session=…", or NULL before any login. Transfer
 * full: free with cfs_secret_free. Any thread; never blocks. */
char *vs_cookie_header(VsProvider *prov);

/* The value of the property @name of the first object of a
 * RetrievePropertiesEx answer on @obj; NULL if absent. Transfer full
 * (the document in @doc). */
xmlNode *vs_property(VsProvider *prov, const VsRef *obj, const char *name,
		     xmlDoc **doc, GError **error);

/* Wait until the task @task succeeds; its result in @result (a copy of
 * the node, transfer full) when not NULL. Control pool. */
bool vs_task_wait(VsProvider *prov, const VsRef *task, const char *what,
		  CfsExportReport *report, const char *phase, xmlNode **result,
		  GError **error);

/* --- inventory.c --- */

bool vs_list(VsProvider *prov, GPtrArray *vms, GError **error);

/* --- ovf.c --- */

/* The OVF descriptor of a VM: @name, its guest, CPUs, memory and disks,
 * each named by its file in an OVA ("<vm>-disk1.vmdk"). Transfer full. */
typedef struct {
	const char *name;
	const char *guest;
	guint cpus;
	guint memory_mb;
	GPtrArray *disks; /* CfsDisk* of the VM */
	GPtrArray *files; /* char*: file names in the OVA, per disk */
} VsOvfVm;

GBytes *vs_ovf_build(const VsOvfVm *vm);

/* --- datastore.c --- */

/* The URL of a datastore file. Transfer full. */
char *vs_datastore_url(VsProvider *prov, const char *dc_path,
		       const char *datastore, const char *file);
/* The flat extent of a descriptor "dir/disk1.vmdk": "dir/disk1-flat.vmdk".
 * Transfer full. */
char *vs_flat_name(const char *file);
/* Probe one byte of a datastore file: its HTTP status (0 on a transport
 * error) and, on success, its Last-Modified (transfer full). Control
 * pool. */
long vs_datastore_probe(VsProvider *prov, const char *url, char **validator,
			GError **error);

CfsSource *vs_datastore_export_start(VsProvider *prov, CfsDisk *disk,
				     CfsExportReport *report, GError **error);
void vs_datastore_export_end(VsProvider *prov, CfsDisk *disk, CfsSource *src);
/* Remove the snapshot @snap of the VM @vm (for messages) and wait;
 * failures are logged. Control pool. */
void vs_snapshot_remove(VsProvider *prov, const VsRef *snap, const char *vm);

/* --- cbt.c --- */

/*
 * The allocation map of disk @d from changed block tracking
 * (QueryChangedDiskAreas, change id "*", asked again from where each answer
 * ended), of the base disk the snapshot @snap froze when it is not NULL;
 * the number of answers in @answers. NULL with an error when the server
 * faults (its type in @fault, transfer full: tracking off, an unknown
 * change id) or its answers do not hold together. Control pool.
 */
CfsExtentMap *vs_cbt_map(VsProvider *prov, const VsDisk *d, const VsRef *snap,
			 char **fault, guint *answers, GError **error);

/* --- inventory.c --- */

/* Remove temporary snapshots whose ownership tag is stale. */
void vs_snapshot_sweep(VsProvider *prov, bool at_unmount);

/* --- nfc.c --- */

CfsSource *vs_nfc_export_start(VsProvider *prov, CfsDisk *disk,
			       CfsExportReport *report, GError **error);
void vs_nfc_export_end(VsProvider *prov, CfsDisk *disk, CfsSource *src);
void vs_lease_unref(VsLease *lease);

/* "Timedout: Operation timed out." from a LocalizedMethodFault element.
 * Transfer full. */
char *vs_fault_message(const xmlNode *err);
