// SPDX-License-Identifier: MIT
/*
 * Temporary EC2 images for export_method = image: CreateImage of the
 * instance (NoReboot, the image and its snapshots tagged as cloudfs's
 * temporaries), waited for until available; deregistered and their
 * snapshots deleted once ExportImage is done, or by the sweep after a
 * crash.
 */
#include <libxml/tree.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "providers/aws/aws-private.h"

#define AWS_IMAGE_POLL_MAX_S 10.0
/* Snapshots one image may have (block device mappings). */
#define AWS_IMAGE_SNAPSHOTS_MAX 64

char *aws_image_create(AwsProvider *prov, const AwsDisk *d,
		       CfsExportReport *report, GError **error)
{
	g_autoptr(GString) params = g_string_new(NULL);
	g_autofree char *iid = aws_form_escape(d->instance_id);
	g_autofree char *name = g_strdup_printf(
		"cloudfs-%s-%" G_GINT64_FORMAT, d->instance_id,
		g_get_real_time() / G_USEC_PER_SEC);
	g_autofree char *name_e = aws_form_escape(name);
	g_autofree char *desc = aws_form_escape(
		"cloudfs: temporary image for an export, deleted when done");
	g_autoptr(xmlDoc) doc = NULL;
	char *id;

	cfs_export_report(report, "image", 0.0);
	g_string_append_printf(params, "InstanceId=%s&Name=%s&Description=%s"
			       "&NoReboot=true"
			       "&TagSpecification.1.ResourceType=image"
			       "&TagSpecification.2.ResourceType=snapshot",
			       iid, name_e, desc);
	aws_tag_params(params, "TagSpecification.1", true, NULL,
		       d->instance_id);
	aws_tag_params(params, "TagSpecification.2", true, NULL,
		       d->instance_id);
	doc = aws_ec2_call(prov, d->region, "CreateImage", params->str, error);
	if (!doc)
		return NULL;
	id = aws_xml_text(xmlDocGetRootElement(doc), "imageId");
	if (!id || !*id) {
		g_free(id);
		g_set_error(error, CFS_ERROR, EIO, "EC2 CreateImage of %s: no "
			    "imageId in the answer", d->instance_id);
		return NULL;
	}
	g_message("aws: image %s of %s created", id, d->instance_id);
	return id;
}

/* Wait until @image_id is available. */
bool aws_image_wait(AwsProvider *prov, const char *region,
		    const char *image_id, CfsExportReport *report,
		    GError **error)
{
	g_autofree char *i = aws_form_escape(image_id);
	g_autofree char *params = g_strdup_printf("ImageId.1=%s", i);
	CfsPoll poll;

	cfs_poll_init(&poll, report, prov->poll_s, AWS_IMAGE_POLL_MAX_S, 0);
	for (;;) {
		g_autoptr(xmlDoc) doc = aws_ec2_poll(prov, region,
						     "DescribeImages", params,
						     report, poll.wait, error);
		g_autofree char *state = NULL, *why = NULL;
		xmlNode *item;

		if (!doc)
			return false;
		item = aws_xml_path(xmlDocGetRootElement(doc),
				    "imagesSet/item");
		state = aws_xml_text(item, "imageState");
		why = aws_xml_text(item, "stateReason/message");
		if (g_strcmp0(state, "available") == 0) {
			cfs_export_report(report, "image", 100.0);
			return true;
		}
		if (!item || g_strcmp0(state, "pending") != 0) {
			g_set_error(error, CFS_ERROR, EIO, "image %s %s%s%s",
				    image_id, state ? state : "vanished",
				    why && *why ? ": " : "", why ? why : "");
			return false;
		}
		cfs_export_report(report, "image", 0.0);
		if (!cfs_poll_next(&poll, 0, "image", error))
			return false;
	}
}

/* The snapshots behind an imagesSet item. */
static GPtrArray *image_snapshots(xmlNode *item)
{
	GPtrArray *ids = g_ptr_array_new_with_free_func(g_free);
	xmlNode *bdm = aws_xml_child(item, "blockDeviceMapping");

	for (xmlNode *m = aws_xml_child(bdm, "item");
	     m && ids->len < AWS_IMAGE_SNAPSHOTS_MAX;
	     m = aws_xml_next(m, "item")) {
		char *sid = aws_xml_text(m, "ebs/snapshotId");

		if (sid && g_str_has_prefix(sid, "snap-"))
			g_ptr_array_add(ids, sid);
		else
			g_free(sid);
	}
	return ids;
}

/* Deregister the image @item describes, then delete its snapshots. */
static void image_delete_item(AwsProvider *prov, const char *region,
			      const char *image_id, xmlNode *item)
{
	g_autoptr(GPtrArray) snaps = image_snapshots(item);
	g_autofree char *i = aws_form_escape(image_id);
	g_autofree char *params = g_strdup_printf("ImageId=%s", i);
	g_autoptr(GError) error = NULL;
	g_autoptr(xmlDoc) doc = aws_ec2_call(prov, region, "DeregisterImage",
					     params, &error);

	if (!doc) {
		g_warning("aws: could not deregister temporary image %s (it "
			  "will be retried at the next mount): %s", image_id,
			  error->message);
		return;
	}
	g_message("aws: temporary image %s deregistered", image_id);
	for (guint s = 0; s < snaps->len; s++)
		aws_snapshot_delete(prov, region, snaps->pdata[s]);
}

void aws_image_delete(AwsProvider *prov, const char *region,
		      const char *image_id)
{
	g_autofree char *i = aws_form_escape(image_id);
	g_autofree char *params = g_strdup_printf("ImageId.1=%s", i);
	g_autoptr(GError) error = NULL;
	g_autoptr(xmlDoc) doc = aws_ec2_call(prov, region, "DescribeImages",
					     params, &error);
	xmlNode *item = doc ? aws_xml_path(xmlDocGetRootElement(doc),
					   "imagesSet/item") : NULL;

	if (!doc)
		g_warning("aws: describing temporary image %s: %s", image_id,
			  error->message);
	/* Without its description the image still goes; its snapshots
	 * are then left for the sweep. */
	image_delete_item(prov, region, image_id, item);
}

void aws_image_sweep(AwsProvider *prov, const char *region, bool self)
{
	g_autoptr(GError) error = NULL;
	g_autoptr(xmlDoc) doc = aws_ec2_call(
		prov, region, "DescribeImages",
		"Owner.1=self&Filter.1.Name=tag%3A" "cloudfs%3Atemporary"
		"&Filter.1.Value.1=true", &error);

	if (!doc) {
		g_warning("aws: looking for images left behind in %s: %s",
			  region, error->message);
		return;
	}
	for (xmlNode *i = aws_xml_path(xmlDocGetRootElement(doc),
				       "imagesSet/item");
	     i; i = aws_xml_next(i, "item")) {
		g_autofree char *id = aws_xml_text(i, "imageId");
		g_autofree char *owner = aws_xml_tag(i, AWS_TAG_OWNER);
		g_autofree char *tmp = aws_xml_tag(i, AWS_TAG_TEMPORARY);

		if (!id || g_strcmp0(tmp, "true") != 0)
			continue;
		if (!cfs_owner_is_stale(owner, self)) {
			g_debug("aws: image %s is not ours to delete (owner "
				"%s)", id, owner ? owner : "none");
			continue;
		}
		g_message("aws: deleting image %s left behind by an earlier "
			  "cloudfs (%s)", id, owner);
		image_delete_item(prov, region, id, i);
	}
}
