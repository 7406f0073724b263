// SPDX-License-Identifier: MIT
/*
 * EC2 and S3 XML answers: instances with their block device mappings,
 * volumes, export tasks, and error bodies.
 */
#include "providers/aws/ec2.c"
#include "tests/fuzz/fuzz-common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	g_autoptr(xmlDoc) doc = NULL;
	g_autoptr(CfsHttpRequest) req = cfs_http_request_new("http://h/");
	g_autofree char *err = NULL;
	xmlNode *root;

	if (size > INT_MAX)
		return 0;
	req->response = g_byte_array_new();
	g_byte_array_append(req->response, data, (guint)size);
	err = aws_error_text(req);
	doc = xmlReadMemory((const char *)data, (int)size, "answer.xml", NULL,
			    XML_PARSE_NONET | XML_PARSE_NOERROR |
			    XML_PARSE_NOWARNING);
	root = doc ? xmlDocGetRootElement(doc) : NULL;
	if (!root)
		return 0;
	for (xmlNode *r = aws_xml_path(root, "reservationSet/item"); r;
	     r = aws_xml_next(r, "item")) {
		for (xmlNode *i = aws_xml_path(r, "instancesSet/item"); i;
		     i = aws_xml_next(i, "item"))
			instance_free(instance_parse(i));
	}
	for (xmlNode *v = aws_xml_path(root, "volumeSet/item"); v;
	     v = aws_xml_next(v, "item")) {
		g_autofree char *s = aws_xml_text(v, "size");
		g_autofree char *id = aws_xml_text(v, "volumeId");
	}
	for (xmlNode *t = aws_xml_path(root, "exportTaskSet/item"); t;
	     t = aws_xml_next(t, "item")) {
		g_autofree char *k = aws_xml_text(t, "exportToS3/s3Key");
		g_autofree char *st = aws_xml_text(t, "state");
	}
	{
		g_autofree char *next = aws_xml_text(root, "nextToken");
		g_autofree char *esc = next ? aws_form_escape(next) : NULL;
	}
	return 0;
}
