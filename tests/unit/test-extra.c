// SPDX-License-Identifier: MIT
/*
 * Files made of metadata and disks: the ustar archive an OVA is, checked
 * with GNU tar (listing, extraction, member contents and order), read
 * whole and in odd pieces.
 */
#include <glib/gstdio.h>
#include <string.h>

#include "fs/extra.h"

static GBytes *member_bytes(gsize len, guint seed)
{
	guint8 *buf = g_malloc(len);

	for (gsize i = 0; i < len; i++)
		buf[i] = (guint8)(i * 31 + seed);
	return g_bytes_new_take(buf, len);
}

static CfsExtra *archive(GBytes **parts, const char **names, guint n)
{
	CfsVmFile *file;
	g_autoptr(GPtrArray) exports = g_ptr_array_new();
	CfsVm *vm = cfs_vm_new("vm");
	CfsVmFile *tar = cfs_vm_add_tar(vm, "vm.ova");

	for (guint i = 0; i < n; i++)
		cfs_vm_file_add_member(tar, names[i], parts[i], 0, NULL);
	/* Take the file out of the VM, as the tree does. */
	file = g_ptr_array_steal_index(vm->files, 0);
	cfs_vm_free(vm);
	return cfs_extra_new(file, exports, 1700000000);
}

static GBytes *read_whole(CfsExtra *x, guint64 piece)
{
	guint64 size = 0, off = 0;
	g_autoptr(GByteArray) out = g_byte_array_new();
	g_autofree guint8 *buf = g_malloc(piece);

	g_assert_true(cfs_extra_size(x, &size));
	for (;;) {
		guint64 len = piece;
		g_autoptr(GError) error = NULL;

		g_assert_true(cfs_extra_pread(x, buf, off, &len, &error));
		g_assert_no_error(error);
		if (!len)
			break;
		g_byte_array_append(out, buf, (guint)len);
		off += len;
	}
	g_assert_cmpuint(out->len, ==, size);
	return g_byte_array_free_to_bytes(g_steal_pointer(&out));
}

static void test_ova_layout_read_by_tar(void)
{
	const char *names[] = { "vm.ovf", "vm-disk1.vmdk", "vm-disk2.vmdk" };
	GBytes *parts[] = { member_bytes(1234, 1), member_bytes(512, 2),
			    member_bytes(70001, 3) };
	g_autoptr(CfsExtra) x = archive(parts, names, 3);
	g_autofree char *dir = g_dir_make_tmp("cfs-tar-XXXXXX", NULL);
	g_autofree char *path = g_build_filename(dir, "vm.ova", NULL);
	g_autofree char *listing = NULL, *cmd = NULL, *tar = NULL;
	g_autoptr(GBytes) whole = read_whole(x, 1 << 20);
	g_autoptr(GBytes) pieces = read_whole(x, 777);
	int status = 0;

	tar = g_find_program_in_path("tar");
	if (!tar) {
		g_test_skip("no tar");
		return;
	}
	g_assert_true(g_bytes_equal(whole, pieces));
	g_assert_cmpuint(g_bytes_get_size(whole) % 512, ==, 0);
	g_assert_true(g_file_set_contents(path, g_bytes_get_data(whole, NULL),
					  (gssize)g_bytes_get_size(whole),
					  NULL));
	cmd = g_strdup_printf("tar tf %s", path);
	g_assert_true(g_spawn_command_line_sync(cmd, &listing, NULL, &status,
						NULL));
	g_assert_cmpint(status, ==, 0);
	g_assert_cmpstr(listing, ==, "vm.ovf\nvm-disk1.vmdk\nvm-disk2.vmdk\n");
	g_free(cmd);
	cmd = g_strdup_printf("tar xf %s -C %s", path, dir);
	g_assert_true(g_spawn_command_line_sync(cmd, NULL, NULL, &status,
						NULL));
	g_assert_cmpint(status, ==, 0);
	for (guint i = 0; i < G_N_ELEMENTS(names); i++) {
		g_autofree char *member = g_build_filename(dir, names[i], NULL);
		g_autofree char *text = NULL;
		gsize len = 0;

		g_assert_true(g_file_get_contents(member, &text, &len, NULL));
		g_assert_cmpmem(text, len, g_bytes_get_data(parts[i], NULL),
				g_bytes_get_size(parts[i]));
		g_remove(member);
		g_bytes_unref(parts[i]);
	}
	g_remove(path);
	g_rmdir(dir);
}

static void test_header_sizes(void)
{
	guint8 h[512];
	guint sum = 0;

	/* 8 GiB and more: base-256, as GNU tar writes it. */
	g_assert_true(cfs_tar_header(h, "big.vmdk", 20ULL << 30, 0));
	g_assert_cmpuint(h[124], ==, 0x80);
	g_assert_cmpuint(((guint64)h[131] << 32) | ((guint64)h[132] << 24),
			 ==, (20ULL << 30) & 0xffff000000ULL);
	for (int i = 0; i < 512; i++)
		sum += i >= 148 && i < 156 ? ' ' : h[i];
	g_assert_cmpuint(sum, ==, g_ascii_strtoull((char *)h + 148, NULL, 8));
	/* Names that do not fit are refused, never cut. */
	g_assert_false(cfs_tar_header(h, "", 1, 0));
	{
		g_autofree char *longname = g_strnfill(101, 'a');

		g_assert_false(cfs_tar_header(h, longname, 1, 0));
	}
}

int main(int argc, char *argv[])
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/extra/ova-read-by-tar", test_ova_layout_read_by_tar);
	g_test_add_func("/extra/header-sizes", test_header_sizes);
	return g_test_run();
}
