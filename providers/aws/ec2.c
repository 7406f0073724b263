// SPDX-License-Identifier: MIT
/*
 * The EC2 Query API (POST form bodies, XML answers): the inventory
 * (DescribeInstances, DescribeVolumes), the temporary snapshots of
 * ebs-direct exports and the sweep of those a crashed cloudfs left.
 */
#include <json-c/json.h>
#include <libxml/parser.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/util.h"
#include "providers/aws/aws-private.h"

/* Volumes per DescribeVolumes call (VolumeId.N). */
#define AWS_VOLUME_BATCH 100
/* The longest wait between two polls of a snapshot. */
#define AWS_POLL_MAX_S 10.0

/* --- XML --- */

static bool xml_is(xmlNode *n, const char *name)
{
	return n->type == XML_ELEMENT_NODE &&
	       strcmp((const char *)n->name, name) == 0;
}

xmlNode *aws_xml_child(xmlNode *node, const char *name)
{
	for (xmlNode *c = node ? node->children : NULL; c; c = c->next)
		if (xml_is(c, name))
			return c;
	return NULL;
}

xmlNode *aws_xml_next(xmlNode *node, const char *name)
{
	for (xmlNode *c = node ? node->next : NULL; c; c = c->next)
		if (xml_is(c, name))
			return c;
	return NULL;
}

xmlNode *aws_xml_path(xmlNode *node, const char *path)
{
	g_auto(GStrv) parts = g_strsplit(path, "/", -1);

	for (char **p = parts; *p && node; p++)
		node = aws_xml_child(node, *p);
	return node;
}

char *aws_xml_text(xmlNode *node, const char *path)
{
	xmlNode *n = path ? aws_xml_path(node, path) : node;
	xmlChar *c;
	char *out;

	if (!n)
		return NULL;
	c = xmlNodeGetContent(n);
	out = c ? g_strstrip(g_strdup((const char *)c)) : NULL;
	xmlFree(c);
	return out;
}

char *aws_xml_tag(xmlNode *item, const char *key)
{
	xmlNode *set = aws_xml_child(item, "tagSet");

	for (xmlNode *t = aws_xml_child(set, "item"); t;
	     t = aws_xml_next(t, "item")) {
		g_autofree char *k = aws_xml_text(t, "key");

		if (g_strcmp0(k, key) == 0)
			return aws_xml_text(t, "value");
	}
	return NULL;
}

/* Spaces become '+', as HTML forms and the AWS SDKs send them (a server
 * that re-encodes the parsed form to check the payload hash, as moto
 * does, then sees the same bytes). */
char *aws_form_escape(const char *s)
{
	g_autofree char *enc = cfs_sigv4_uri_encode(s, strlen(s), false);
	GString *out = g_string_sized_new(strlen(enc));

	for (const char *p = enc; *p; p++) {
		if (g_str_has_prefix(p, "%20")) {
			g_string_append_c(out, '+');
			p += 2;
		} else {
			g_string_append_c(out, *p);
		}
	}
	return g_string_free(out, FALSE);
}

/* --- calls --- */

xmlDoc *aws_ec2_call(AwsProvider *prov, const char *region,
		     const char *action, const char *params, GError **error)
{
	g_autofree char *base = aws_endpoint(prov, AWS_EC2, region);
	g_autofree char *url = g_strdup_printf("%s/", base);
	g_autofree char *what = g_strdup_printf("EC2 %s in %s", action,
						region);
	g_autofree char *body = g_strdup_printf(
		"Action=%s&Version=%s%s%s", action, AWS_EC2_VERSION,
		params ? "&" : "", params ? params : "");
	g_autoptr(CfsHttpRequest) req = cfs_http_request_new(url);
	xmlDoc *doc;
	gsize len = strlen(body);

	req->method = g_strdup("POST");
	cfs_http_request_add_header(req, "Content-Type: application/"
				    "x-www-form-urlencoded; charset=utf-8");
	req->body = g_bytes_new(body, len);
	if (!aws_sign(prov, req, "ec2", region, error)) {
		g_prefix_error(error, "%s: ", what);
		return NULL;
	}
	if (!aws_perform(prov, req, what, error))
		return NULL;
	doc = req->response && req->response->len ?
		xmlReadMemory((const char *)req->response->data,
			      (int)req->response->len, "ec2.xml", NULL,
			      XML_PARSE_NONET | XML_PARSE_NOERROR |
			      XML_PARSE_NOWARNING | XML_PARSE_NOBLANKS) :
		NULL;
	if (!doc || !xmlDocGetRootElement(doc)) {
		if (doc)
			xmlFreeDoc(doc);
		g_set_error(error, CFS_ERROR, EIO, "%s: the answer is not XML "
			    "(is the EC2 endpoint %s right?)", what, base);
		return NULL;
	}
	return doc;
}

/* --- inventory --- */

typedef struct {
	char *device;
	char *volume_id;
} AwsMapping;

typedef struct {
	char *id;
	char *name;
	char *state;
	char *type;
	char *zone;
	char *root_device;
	gint64 launched;	/* seconds since the epoch, 0: unknown */
	GArray *mappings;	/* AwsMapping */
} AwsInstance;

typedef struct {
	guint64 size_gib;
	char *type;
	char *state;
	bool encrypted;
} AwsVolume;

static void mapping_clear(AwsMapping *m)
{
	g_free(m->device);
	g_free(m->volume_id);
}

static void instance_free(AwsInstance *i)
{
	g_free(i->id);
	g_free(i->name);
	g_free(i->state);
	g_free(i->type);
	g_free(i->zone);
	g_free(i->root_device);
	g_array_unref(i->mappings);
	g_free(i);
}

static void volume_free(AwsVolume *v)
{
	g_free(v->type);
	g_free(v->state);
	g_free(v);
}

void aws_disk_free(AwsDisk *d)
{
	if (!d)
		return;
	g_free(d->region);
	g_free(d->instance_id);
	g_free(d->volume_id);
	g_free(d->device);
	g_free(d);
}

static AwsInstance *instance_parse(xmlNode *item)
{
	AwsInstance *i = g_new0(AwsInstance, 1);
	xmlNode *bdm = aws_xml_child(item, "blockDeviceMapping");

	i->id = aws_xml_text(item, "instanceId");
	i->name = aws_xml_tag(item, "Name");
	i->state = aws_xml_text(item, "instanceState/name");
	i->type = aws_xml_text(item, "instanceType");
	{
		g_autofree char *t = aws_xml_text(item, "launchTime");

		i->launched = cfs_parse_iso8601(t);
	}
	i->zone = aws_xml_text(item, "placement/availabilityZone");
	i->root_device = aws_xml_text(item, "rootDeviceName");
	i->mappings = g_array_new(FALSE, TRUE, sizeof(AwsMapping));
	g_array_set_clear_func(i->mappings, (GDestroyNotify)mapping_clear);
	for (xmlNode *m = aws_xml_child(bdm, "item"); m;
	     m = aws_xml_next(m, "item")) {
		AwsMapping am = {
			aws_xml_text(m, "deviceName"),
			aws_xml_text(m, "ebs/volumeId"),
		};

		if (am.device && am.volume_id)
			g_array_append_val(i->mappings, am);
		else
			mapping_clear(&am);
	}
	return i;
}

/* The boot volume first, then the others by device name. */
static gint mapping_cmp(gconstpointer a, gconstpointer b, gpointer root)
{
	const AwsMapping *x = a, *y = b;
	bool xr = g_strcmp0(x->device, root) == 0;
	bool yr = g_strcmp0(y->device, root) == 0;

	if (xr != yr)
		return xr ? -1 : 1;
	return g_strcmp0(x->device, y->device);
}

static bool list_instances(AwsProvider *prov, const char *region,
			   GPtrArray *out, GError **error)
{
	g_autofree char *token = NULL;

	do {
		g_autofree char *params = NULL;
		g_autoptr(xmlDoc) doc = NULL;
		xmlNode *root;

		if (token) {
			g_autofree char *t = aws_form_escape(token);

			params = g_strdup_printf("MaxResults=1000&NextToken=%s",
						 t);
		} else {
			params = g_strdup("MaxResults=1000");
		}
		doc = aws_ec2_call(prov, region, "DescribeInstances", params,
				   error);
		if (!doc)
			return false;
		root = xmlDocGetRootElement(doc);
		for (xmlNode *r = aws_xml_path(root, "reservationSet/item"); r;
		     r = aws_xml_next(r, "item"))
			for (xmlNode *i = aws_xml_path(r, "instancesSet/item");
			     i; i = aws_xml_next(i, "item")) {
				AwsInstance *inst = instance_parse(i);

				if (!inst->id ||
				    g_strcmp0(inst->state, "terminated") == 0)
					instance_free(inst);
				else
					g_ptr_array_add(out, inst);
			}
		g_free(token);
		token = aws_xml_text(root, "nextToken");
		if (token && !*token)
			g_clear_pointer(&token, g_free);
	} while (token);
	return true;
}

/* Sizes and states of the volumes of @instances: id -> AwsVolume. */
static GHashTable *list_volumes(AwsProvider *prov, const char *region,
				GPtrArray *instances, GError **error)
{
	g_autoptr(GHashTable) vols = g_hash_table_new_full(
		g_str_hash, g_str_equal, g_free, (GDestroyNotify)volume_free);
	g_autoptr(GPtrArray) ids = g_ptr_array_new();

	for (guint i = 0; i < instances->len; i++) {
		AwsInstance *inst = instances->pdata[i];

		for (guint m = 0; m < inst->mappings->len; m++)
			g_ptr_array_add(ids, g_array_index(inst->mappings,
							   AwsMapping, m)
						     .volume_id);
	}
	for (guint start = 0; start < ids->len; start += AWS_VOLUME_BATCH) {
		g_autoptr(GString) params = g_string_new(NULL);
		g_autoptr(xmlDoc) doc = NULL;
		xmlNode *root;

		for (guint i = start;
		     i < ids->len && i < start + AWS_VOLUME_BATCH; i++) {
			g_autofree char *v = aws_form_escape(ids->pdata[i]);

			g_string_append_printf(params, "%sVolumeId.%u=%s",
					       params->len ? "&" : "",
					       i - start + 1, v);
		}
		doc = aws_ec2_call(prov, region, "DescribeVolumes",
				   params->str, error);
		if (!doc)
			return NULL;
		root = xmlDocGetRootElement(doc);
		for (xmlNode *v = aws_xml_path(root, "volumeSet/item"); v;
		     v = aws_xml_next(v, "item")) {
			AwsVolume *vol = g_new0(AwsVolume, 1);
			g_autofree char *size = aws_xml_text(v, "size");
			g_autofree char *enc = aws_xml_text(v, "encrypted");
			char *id = aws_xml_text(v, "volumeId");

			vol->size_gib = size ? g_ascii_strtoull(size, NULL, 10)
					     : 0;
			vol->type = aws_xml_text(v, "volumeType");
			vol->state = aws_xml_text(v, "status");
			vol->encrypted = g_strcmp0(enc, "true") == 0;
			if (id)
				g_hash_table_replace(vols, id, vol);
			else
				volume_free(vol);
		}
	}
	return g_steal_pointer(&vols);
}

static void json_add_str(json_object *o, const char *key, const char *value)
{
	if (value)
		json_object_object_add(o, key, json_object_new_string(value));
	else
		json_object_object_add(o, key, NULL);
}

static char *disk_file_name(AwsProvider *prov, guint n)
{
	const char *ext = prov->mode == AWS_MODE_EXPORT ?
		prov->export_format : "vmdk";

	return n ? g_strdup_printf("disk%u.%s", n, ext) :
		   g_strdup_printf("disk.%s", ext);
}

static CfsVm *instance_vm(AwsProvider *prov, const char *region,
			  AwsInstance *inst, GHashTable *vols)
{
	CfsVm *vm = cfs_vm_new(inst->id);
	g_autoptr(json_object) o = json_object_new_object();
	json_object *jv = json_object_new_array();
	guint n = 0;

	vm->mtime = inst->launched;
	g_array_sort_with_data(inst->mappings, mapping_cmp, inst->root_device);
	json_add_str(o, "provider", "aws");
	json_add_str(o, "instance_id", inst->id);
	json_add_str(o, "name", inst->name);
	json_add_str(o, "state", inst->state);
	json_add_str(o, "instance_type", inst->type);
	json_add_str(o, "region", region);
	json_add_str(o, "availability_zone", inst->zone);
	json_add_str(o, "root_device", inst->root_device);
	json_add_str(o, "mode", prov->mode == AWS_MODE_EXPORT ? "export" :
							      "ebs-direct");
	json_add_str(o, "source", prov->mode == AWS_MODE_EXPORT ?
		     "EC2 export task to S3, then ranged GETs (size known "
		     "when the export completes)" :
		     "temporary EBS snapshot read with the EBS direct APIs "
		     "(random access; unwritten blocks are holes)");
	for (guint m = 0; m < inst->mappings->len; m++) {
		AwsMapping *am = &g_array_index(inst->mappings, AwsMapping, m);
		AwsVolume *vol = g_hash_table_lookup(vols, am->volume_id);
		json_object *jd = json_object_new_object();
		bool boot = g_strcmp0(am->device, inst->root_device) == 0;
		bool shown = vol && vol->size_gib &&
			     (prov->mode == AWS_MODE_EBS_DIRECT || m == 0);
		g_autofree char *file = shown ? disk_file_name(prov, n) : NULL;

		json_add_str(jd, "volume_id", am->volume_id);
		json_add_str(jd, "device", am->device);
		json_object_object_add(jd, "boot",
				       json_object_new_boolean(boot));
		if (vol) {
			json_object_object_add(jd, "size", json_object_new_int64(
				(int64_t)(vol->size_gib << 30)));
			json_object_object_add(jd, "size_gib",
				json_object_new_int64((int64_t)vol->size_gib));
			json_add_str(jd, "volume_type", vol->type);
			json_add_str(jd, "volume_state", vol->state);
			json_object_object_add(jd, "encrypted",
				json_object_new_boolean(vol->encrypted));
		}
		json_add_str(jd, "file", file);
		if (!shown)
			json_add_str(jd, "note", !vol ? "DescribeVolumes did "
				     "not describe this volume" :
				     "an EC2 export holds the boot volume "
				     "only: use mode = ebs-direct for the "
				     "others");
		json_object_array_add(jv, jd);
		if (shown) {
			AwsDisk *d = g_new0(AwsDisk, 1);
			CfsDisk *disk;
			g_autofree char *name = n ?
				g_strdup_printf("disk%u", n) :
				g_strdup("disk");

			d->region = g_strdup(region);
			d->instance_id = g_strdup(inst->id);
			d->volume_id = g_strdup(am->volume_id);
			d->device = g_strdup(am->device);
			d->size = vol->size_gib << 30;
			d->boot = boot;
			if (prov->mode == AWS_MODE_EXPORT) {
				disk = cfs_disk_new(name, prov->export_format,
						    CFS_SIZE_UNKNOWN);
				disk->id = g_strdup_printf(
					"export %s %s %s %s", region, inst->id,
					am->volume_id, prov->export_format);
			} else {
				/* Raw EBS blocks, shown as a VMDK; the map
				 * comes with the snapshot's block list. */
				disk = cfs_disk_new(name, "raw", d->size);
				disk->present = g_strdup("vmdk");
				disk->id = g_strdup_printf("ebs %s %s", region,
							   am->volume_id);
			}
			disk->priv = d;
			disk->priv_free = (GDestroyNotify)aws_disk_free;
			g_ptr_array_add(vm->disks, disk);
			n++;
		}
	}
	json_object_object_add(o, "volumes", jv);
	vm->info_json = g_strdup_printf("%s\n", json_object_to_json_string_ext(
		o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
	return vm;
}

bool aws_ec2_list_region(AwsProvider *prov, const char *region,
			 GPtrArray *vms, GError **error)
{
	g_autoptr(GPtrArray) instances = g_ptr_array_new_with_free_func(
		(GDestroyNotify)instance_free);
	g_autoptr(GHashTable) vols = NULL;

	if (!list_instances(prov, region, instances, error))
		return false;
	vols = list_volumes(prov, region, instances, error);
	if (!vols)
		return false;
	for (guint i = 0; i < instances->len; i++)
		g_ptr_array_add(vms, instance_vm(prov, region,
						 instances->pdata[i], vols));
	return true;
}

/* --- temporary snapshots --- */

static void tag_param(GString *s, const char *prefix, guint n,
		      const char *key, const char *value)
{
	g_autofree char *k = aws_form_escape(key);
	g_autofree char *v = aws_form_escape(value);

	g_string_append_printf(s, "&%s.Tag.%u.Key=%s&%s.Tag.%u.Value=%s",
			       prefix, n, k, prefix, n, v);
}

void aws_tag_params(GString *s, const char *prefix, bool temporary,
		    const char *volume_id, const char *instance_id)
{
	guint n = 1;

	/* Kept resources are not temporary: the sweep leaves them. */
	tag_param(s, prefix, n++, AWS_TAG_TEMPORARY,
		  temporary ? "true" : "false");
	if (volume_id)
		tag_param(s, prefix, n++, AWS_TAG_VOLUME, volume_id);
	tag_param(s, prefix, n++, AWS_TAG_INSTANCE, instance_id);
	tag_param(s, prefix, n++, AWS_TAG_OWNER, cfs_owner_tag());
	tag_param(s, prefix, n, "Name", "cloudfs temporary");
}

char *aws_snapshot_create(AwsProvider *prov, const AwsDisk *d,
			  GError **error)
{
	g_autoptr(GString) params = g_string_new(NULL);
	g_autofree char *vol = aws_form_escape(d->volume_id);
	g_autofree char *desc = g_strdup_printf(
		"cloudfs: temporary snapshot of %s (%s %s), deleted when "
		"read", d->volume_id, d->instance_id, d->device);
	g_autofree char *desc_e = aws_form_escape(desc);
	g_autoptr(xmlDoc) doc = NULL;
	char *id;

	g_string_append_printf(params, "VolumeId=%s&Description=%s"
			       "&TagSpecification.1.ResourceType=snapshot",
			       vol, desc_e);
	aws_tag_params(params, "TagSpecification.1", !prov->keep_snapshots,
		       d->volume_id, d->instance_id);
	doc = aws_ec2_call(prov, d->region, "CreateSnapshot", params->str,
			   error);
	if (!doc)
		return NULL;
	id = aws_xml_text(xmlDocGetRootElement(doc), "snapshotId");
	if (!id || !*id) {
		g_free(id);
		g_set_error(error, CFS_ERROR, EIO, "EC2 CreateSnapshot of %s: "
			    "no snapshotId in the answer", d->volume_id);
		return NULL;
	}
	g_message("aws: snapshot %s of %s (%s) created", id, d->volume_id,
		  d->instance_id);
	return id;
}

xmlDoc *aws_ec2_poll(AwsProvider *prov, const char *region,
		     const char *action, const char *params,
		     CfsExportReport *report, double wait, GError **error)
{
	for (guint failures = 1;; failures++) {
		g_autoptr(GError) local = NULL;
		xmlDoc *doc = aws_ec2_call(prov, region, action, params, &local);

		if (doc)
			return doc;
		if (failures == 5) {
			g_propagate_error(error, g_steal_pointer(&local));
			return NULL;
		}
		if (!cfs_poll_wait(report, wait, error))
			return NULL;
	}
}

bool aws_snapshot_wait(AwsProvider *prov, const char *region,
		       const char *snapshot_id, CfsExportReport *report,
		       GError **error)
{
	g_autofree char *sid = aws_form_escape(snapshot_id);
	g_autofree char *params = g_strdup_printf("SnapshotId.1=%s", sid);
	CfsPoll poll;

	cfs_poll_init(&poll, report, prov->poll_s, AWS_POLL_MAX_S, 0);
	for (;;) {
		g_autoptr(xmlDoc) doc = aws_ec2_poll(prov, region,
						     "DescribeSnapshots",
						     params, report, poll.wait,
						     error);
		g_autofree char *state = NULL, *progress = NULL, *msg = NULL;
		xmlNode *item;

		if (!doc)
			return false;
		item = aws_xml_path(xmlDocGetRootElement(doc),
				    "snapshotSet/item");
		state = aws_xml_text(item, "status");
		progress = aws_xml_text(item, "progress");
		msg = aws_xml_text(item, "stateMessage");
		if (g_strcmp0(state, "completed") == 0) {
			cfs_export_report(report, "snapshot", 100.0);
			return true;
		}
		if (g_strcmp0(state, "error") == 0 || !item) {
			g_set_error(error, CFS_ERROR, EIO, "snapshot %s %s%s%s",
				    snapshot_id, item ? "failed" : "vanished",
				    msg && *msg ? ": " : "", msg ? msg : "");
			return false;
		}
		cfs_export_report(report, "snapshot",
				  progress ? g_ascii_strtod(progress, NULL) :
					     0.0);
		if (!cfs_poll_next(&poll, 0, "snapshot", error))
			return false;
	}
}

void aws_snapshot_delete(AwsProvider *prov, const char *region,
			 const char *snapshot_id)
{
	g_autofree char *sid = aws_form_escape(snapshot_id);
	g_autofree char *params = g_strdup_printf("SnapshotId=%s", sid);
	g_autoptr(GError) error = NULL;
	g_autoptr(xmlDoc) doc = aws_ec2_call(prov, region, "DeleteSnapshot",
					     params, &error);

	if (doc)
		g_message("aws: temporary snapshot %s deleted", snapshot_id);
	else
		g_warning("aws: could not delete temporary snapshot %s (it "
			  "will be retried at the next mount): %s", snapshot_id,
			  error->message);
}

void aws_ec2_sweep(AwsProvider *prov, const char *region, bool self)
{
	g_autoptr(GError) error = NULL;
	g_autoptr(xmlDoc) doc = NULL;

	/* Images first: their snapshots cannot go while they are
	 * registered. */
	aws_image_sweep(prov, region, self);
	doc = aws_ec2_call(
		prov, region, "DescribeSnapshots",
		"Owner.1=self&Filter.1.Name=tag%3A" "cloudfs%3Atemporary"
		"&Filter.1.Value.1=true", &error);

	if (!doc) {
		g_warning("aws: looking for snapshots left behind in %s: %s",
			  region, error->message);
		return;
	}
	for (xmlNode *s = aws_xml_path(xmlDocGetRootElement(doc),
				       "snapshotSet/item");
	     s; s = aws_xml_next(s, "item")) {
		g_autofree char *id = aws_xml_text(s, "snapshotId");
		g_autofree char *owner = aws_xml_tag(s, AWS_TAG_OWNER);
		g_autofree char *tmp = aws_xml_tag(s, AWS_TAG_TEMPORARY);

		if (!id || g_strcmp0(tmp, "true") != 0)
			continue;
		/* Only what this machine and cache made, in a process that
		 * is gone: another cloudfs may still be reading it. */
		if (!cfs_owner_is_stale(owner, self)) {
			g_debug("aws: snapshot %s is not ours to delete (owner "
				"%s)", id, owner ? owner : "none");
			continue;
		}
		g_message("aws: deleting snapshot %s left behind by an earlier "
			  "cloudfs (%s)", id, owner);
		aws_snapshot_delete(prov, region, id);
	}
}
