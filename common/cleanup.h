/* SPDX-License-Identifier: MIT */
/* Scoped cleanup (g_autoptr) for the C libraries cloudfs uses. */
#pragma once

#include <curl/curl.h>
#include <glib.h>
#include <json-c/json.h>
#include <libxml/tree.h>

typedef struct json_object json_object;
G_DEFINE_AUTOPTR_CLEANUP_FUNC(json_object, json_object_put)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(CURL, curl_easy_cleanup)
typedef struct curl_slist CfsCurlSlist;
G_DEFINE_AUTOPTR_CLEANUP_FUNC(CfsCurlSlist, curl_slist_free_all)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(xmlDoc, xmlFreeDoc)
