// SPDX-License-Identifier: MIT
/*
 * Thread support for libsmbclient. Unless it is given thread functions,
 * the library keeps its per-thread state (a stack of temporary talloc
 * frames that every call pushes and pops) in one process-wide variable,
 * and two threads inside it at once corrupt each other even on separate
 * contexts. Its header offers smbc_thread_posix() and smbc_thread_impl()
 * for that, but not every build exports them (Debian's does not), so the
 * functions, of the shape smbc_thread_impl() documents, are handed to
 * smb_thread_set_functions() of libsamba-util, the call those two make,
 * found at run time. Without it every call into the library must be
 * serialised by the caller.
 *
 * The library never frees what a thread made: when a thread ends, its
 * values are kept and handed to the next thread that has none (the frame
 * stack of an ended thread is empty: every call pops what it pushed), so
 * the memory is bounded by the number of threads that used the library at
 * once and all of it stays reachable.
 *
 * Threads: hv_smb_threads_init on any thread, before any other call into
 * libsmbclient; the callbacks on whichever thread calls the library.
 */
#include <dlfcn.h>
#include <glib.h>
#include <pthread.h>

#include "providers/hyperv/hyperv-private.h"

/* The callbacks in the order smbc_thread_impl() takes them. */
typedef struct {
	int (*create_mutex)(const char *name, void **lock, const char *where);
	void (*destroy_mutex)(void *lock, const char *where);
	int (*lock_mutex)(void *lock, int lock_type, const char *where);
	int (*create_tls)(const char *name, void **key, const char *where);
	void (*destroy_tls)(void **key, const char *where);
	int (*set_tls)(void *key, const void *value, const char *where);
	void *(*get_tls)(void *key, const char *where);
} SmbThreadFns;

#define SMB_THREAD_LOCK 1
#define SMB_THREAD_UNLOCK 2

typedef struct SmbTlsValue SmbTlsValue;

/* One thread-local variable of the library. Never freed. */
typedef struct {
	pthread_key_t key;
	GMutex lock;
	SmbTlsValue *spare;	/* protected by lock: ended threads' */
} SmbTls;

/* What a thread holds for one variable: the pthread value. */
struct SmbTlsValue {
	SmbTls *tls;
	const void *value;
	SmbTlsValue *next;	/* in tls->spare */
};

static int smb_create_mutex(const char *name, void **lock, const char *where)
{
	GMutex *m = g_new0(GMutex, 1);

	g_mutex_init(m);
	*lock = m;
	return 0;
}

static void smb_destroy_mutex(void *lock, const char *where)
{
	g_mutex_clear(lock);
	g_free(lock);
}

static int smb_lock_mutex(void *lock, int lock_type, const char *where)
{
	if (lock_type == SMB_THREAD_LOCK)
		g_mutex_lock(lock);
	else if (lock_type == SMB_THREAD_UNLOCK)
		g_mutex_unlock(lock);
	else
		return -1;
	return 0;
}

/* A thread ends: keep its value for the next thread. */
static void smb_tls_left(void *data)
{
	SmbTlsValue *v = data;
	SmbTls *tls = v->tls;

	g_mutex_lock(&tls->lock);
	v->next = tls->spare;
	tls->spare = v;
	g_mutex_unlock(&tls->lock);
}

static int smb_create_tls(const char *name, void **key, const char *where)
{
	SmbTls *tls = g_new0(SmbTls, 1);

	g_mutex_init(&tls->lock);
	if (pthread_key_create(&tls->key, smb_tls_left) != 0) {
		g_mutex_clear(&tls->lock);
		g_free(tls);
		return -1;
	}
	*key = tls;
	return 0;
}

/* The library destroys its variables only when it is torn down, which
 * the provider never lets happen (see smb.c): values may still be held. */
static void smb_destroy_tls(void **key, const char *where)
{
}

/* This thread's value of @tls, a spare one if it has none yet. */
static SmbTlsValue *smb_tls_value(SmbTls *tls)
{
	SmbTlsValue *v = pthread_getspecific(tls->key);

	if (v)
		return v;
	g_mutex_lock(&tls->lock);
	v = tls->spare;
	if (v)
		tls->spare = v->next;
	g_mutex_unlock(&tls->lock);
	if (v) {
		v->next = NULL;
		pthread_setspecific(tls->key, v);
	}
	return v;
}

static int smb_set_tls(void *key, const void *value, const char *where)
{
	SmbTls *tls = key;
	SmbTlsValue *v;

	if (!tls)
		return -1;
	v = smb_tls_value(tls);
	if (!v) {
		v = g_new0(SmbTlsValue, 1);
		v->tls = tls;
	}
	v->value = value;
	return pthread_setspecific(tls->key, v) ? -1 : 0;
}

static void *smb_get_tls(void *key, const char *where)
{
	SmbTls *tls = key;
	SmbTlsValue *v;

	/* The library reads a variable before it creates its key. */
	if (!tls)
		return NULL;
	v = smb_tls_value(tls);
	return v ? (void *)v->value : NULL;
}

static const SmbThreadFns smb_thread_fns = {
	.create_mutex = smb_create_mutex,
	.destroy_mutex = smb_destroy_mutex,
	.lock_mutex = smb_lock_mutex,
	.create_tls = smb_create_tls,
	.destroy_tls = smb_destroy_tls,
	.set_tls = smb_set_tls,
	.get_tls = smb_get_tls,
};

static gpointer smb_threads_install(gpointer unused)
{
	int (*set_functions)(const SmbThreadFns *fns);

	*(void **)&set_functions = dlsym(RTLD_DEFAULT,
					 "smb_thread_set_functions");
	if (!set_functions || set_functions(&smb_thread_fns) != 0) {
		g_warning("hyperv: libsmbclient without thread support: SMB "
				"reads go one at a time");
		return GINT_TO_POINTER(1);
	}
	return GINT_TO_POINTER(2);
}

bool hv_smb_threads_init(void)
{
	static GOnce once = G_ONCE_INIT;

	return GPOINTER_TO_INT(g_once(&once, smb_threads_install, NULL)) == 2;
}
