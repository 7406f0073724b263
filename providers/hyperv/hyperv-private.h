/* SPDX-License-Identifier: MIT */
/*
 * The Hyper-V provider's private types: the instance made from the
 * [hyperv] section (hyperv.c), the WinRM shell client (wsman.c),
 * PowerShell scripts, CLIXML and JSON (ps.c), the inventory (inventory.c),
 * exports and the sweep (export.c) and the sources that read an exported
 * VHDX over SMB or from a local folder (smb.c).
 *
 * Threads: create and free on the main thread; everything else on the
 * control pool, except a source's pread (the engine's I/O threads).
 * HvProvider is immutable after create except what says otherwise.
 */
#pragma once

#include <glib.h>
#include <json-c/json.h>
#include <stdbool.h>

#include "common/http.h"
#include "providers/provider.h"

/* Names of what a mount makes on the host: the checkpoint is
 * HV_PREFIX<tag>, the export folder <export_path>\HV_PREFIX<tag>-<vm>-<disk>. */
#define HV_PREFIX "cloudfs-"

/* SMB connections per exported file: the default and the bound. */
#define HV_SMB_CONNECTIONS 4
#define HV_SMB_CONNECTIONS_MAX 16

/* Disks larger than this are refused (a lying inventory). */
#define HV_DISK_MAX (64ULL << 40)

typedef struct {
	CfsProvider base;

	char *url;		/* https://host:5986/wsman */
	char *export_path;	/* a folder of the host: D:\cloudfs-exports */
	char *smb_url;		/* smb://host[:port]/share[/dir], or NULL */
	char *smb_user;		/* DOMAIN\user or user */
	char *smb_password;	/* a secret */
	char *export_mount;	/* the share mounted here, or NULL */
	guint smb_connections;	/* SMB connections per exported file */
	bool keep_exports;
	guint op_timeout_s;	/* OperationTimeout of one Receive */
	guint list_timeout_s;	/* a whole inventory script */
	CfsHttpSettings *settings;	/* TLS, NTLM/Basic and hv_classify */

	GMutex lock;
	GHashTable *vm_locks;	/* protected by lock: VM name -> HvVmLock */
} HvProvider;

/* What the inventory says about one disk: the CfsDisk's priv. */
typedef struct {
	char *vm;		/* VM name */
	char *vm_id;
	guint vm_state;		/* Running 2, Off 3, … */
	char *path;		/* the drive's current VHD(X) path */
	char *leaf;		/* the file name an export writes: the chain's
				 * base disk name as .vhdx */
	char *name;		/* "disk", "disk1" */
} HvDisk;

void hv_disk_free(HvDisk *d);

/* --- hyperv.c --- */

/* How WinRM answers are retried: 500 carries a SOAP fault and is final,
 * 401 is a refused logon. Network thread. */
CfsHttpClass hv_classify(const CfsHttpRequest *req);

/* The lock that keeps two exports of one VM apart (one checkpoint name
 * per mount). Control pool. */
void hv_vm_lock(HvProvider *prov, const char *vm);
void hv_vm_unlock(HvProvider *prov, const char *vm);

/* --- wsman.c: a WinRM shell --- */

typedef struct HvShell HvShell;

/* What a command wrote and how it ended. */
typedef struct {
	GString *out;		/* stdout bytes (UTF-8: codepage 65001) */
	GString *err;		/* stderr bytes (CLIXML) */
	int exit_code;
} HvRun;

/* Called after each Receive that brought output, with what arrived so
 * far. Return false to stop the command (Signal terminate). */
typedef bool (*HvReceiveFn)(gpointer data, const HvRun *run);

/* Create a shell (codepage 65001). Transfer full. */
HvShell *hv_shell_open(HvProvider *prov, GError **error);
/* Delete the shell; failures are logged. NULL is fine. */
void hv_shell_close(HvShell *shell);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(HvShell, hv_shell_close)

/*
 * Run @script with powershell -EncodedCommand in @shell and receive its
 * output until it is done (Receives that time out are sent again) or
 * @timeout_s seconds passed (0: no limit). @on_receive may be NULL.
 * Fills @run (initialise it with hv_run_init). False on a transport
 * error, a fault, a timeout or when @on_receive stopped it.
 */
bool hv_shell_run(HvShell *shell, const char *script, guint timeout_s,
		  HvReceiveFn on_receive, gpointer data, HvRun *run,
		  GError **error);

void hv_run_init(HvRun *run);
void hv_run_clear(HvRun *run);

/* --- ps.c: scripts, CLIXML and JSON --- */

/* @s as a PowerShell single-quoted string. Transfer full. */
char *hv_ps_quote(const char *s);

/* The error records of a CLIXML stream, decoded, as the first line of
 * the first one ("Export-VM : The disk is full."), or NULL. Transfer
 * full. */
char *hv_clixml_error(const char *err, gsize len);

/* The last PercentComplete of the progress records in @err, or -1. */
int hv_clixml_percent(const char *err, gsize len);

/*
 * Run @script in a new shell and return its stdout; a non-zero exit code
 * is an error whose message is the script's first CLIXML error. @what
 * names the script in errors. Transfer full.
 */
char *hv_ps(HvProvider *prov, const char *what, const char *script,
	    guint timeout_s, HvReceiveFn on_receive, gpointer data,
	    GError **error);

/* The JSON values ConvertTo-Json printed in @text (an object, an array
 * or nothing), as an array. Transfer full. */
json_object *hv_json_list(const char *text, const char *what,
			  GError **error);

/* The JSON between the line @marker ("#vms", written by Write-Output)
 * and the next line that starts with '#', as hv_json_list gives it.
 * Transfer full. */
json_object *hv_ps_section(const char *out, const char *marker,
			   GError **error);

/* Members of a ConvertTo-Json object; NULL/0 when missing or of another
 * type. Borrowed. */
const char *hv_json_str(json_object *o, const char *key);
gint64 hv_json_int(json_object *o, const char *key, gint64 fallback);

/* --- inventory.c --- */

bool hv_list(HvProvider *prov, GPtrArray *vms, GError **error);

/* --- export.c --- */

CfsSource *hv_export_start(HvProvider *prov, CfsDisk *disk,
			   CfsExportReport *report, GError **error);
void hv_export_end(HvProvider *prov, CfsDisk *disk, CfsSource *src);
/* Remove checkpoints and export folders whose tag is stale. */
void hv_sweep(HvProvider *prov, bool self);

/* The export folder of @d: <export_path>\cloudfs-<tag>-<vm>-<disk>.
 * Transfer full. */
char *hv_export_folder(HvProvider *prov, const HvDisk *d);

/* --- smb.c: reading the exported file --- */

/* Give libsmbclient thread functions, before any other call into it;
 * false if it cannot take them (then calls go one at a time). Any
 * thread. */
bool hv_smb_threads_init(void);

/* Check smb_url. Main thread. */
bool hv_smb_check(HvProvider *prov, GError **error);

/*
 * A source over the exported file @rel (a path under the export folder,
 * '\'-separated, relative to export_path), read over SMB or from
 * export_mount. Size and identity come from the file. Control pool.
 * Transfer full.
 */
CfsSource *hv_source_open(HvProvider *prov, const char *rel, GError **error);

/* Close what the source holds open (the host will not delete an open
 * file); later reads fail. Control pool. */
void hv_source_shut(CfsSource *src);
