// SPDX-License-Identifier: MIT
/*
 * ThreadSanitizer does not see GLib's locks: GMutex, GCond and GRWLock
 * are futexes on Linux, not pthread mutexes. Built into TSan builds only,
 * these wrappers call GLib's own functions and tell TSan what they did,
 * so that what a lock protects is not reported as a race. GLib calls them
 * through the PLT too (it is not linked -Bsymbolic), so its queues and
 * thread pools are covered as well.
 */
#include <dlfcn.h>
#include <glib.h>
#include <pthread.h>
#include <sanitizer/tsan_interface.h>

/* GLib's own function, found once (atomically: any thread may be
 * first). */
#define REAL(ret, name, ...)                                              \
	static ret (*real_fn)(__VA_ARGS__);                               \
	ret (*real)(__VA_ARGS__) = __atomic_load_n(&real_fn,              \
						   __ATOMIC_ACQUIRE);     \
	if (!real) {                                                      \
		*(void **)&real = dlsym(RTLD_NEXT, name);                 \
		__atomic_store_n(&real_fn, real, __ATOMIC_RELEASE);       \
	}

void g_mutex_lock(GMutex *m)
{
	REAL(void, "g_mutex_lock", GMutex *);
	__tsan_mutex_pre_lock(m, 0);
	real(m);
	__tsan_mutex_post_lock(m, 0, 0);
}

gboolean g_mutex_trylock(GMutex *m)
{
	gboolean got;

	REAL(gboolean, "g_mutex_trylock", GMutex *);
	__tsan_mutex_pre_lock(m, __tsan_mutex_try_lock);
	got = real(m);
	__tsan_mutex_post_lock(m, __tsan_mutex_try_lock |
			       (got ? 0 : __tsan_mutex_try_lock_failed), 0);
	return got;
}

void g_mutex_unlock(GMutex *m)
{
	REAL(void, "g_mutex_unlock", GMutex *);
	__tsan_mutex_pre_unlock(m, 0);
	real(m);
	__tsan_mutex_post_unlock(m, 0);
}

void g_mutex_clear(GMutex *m)
{
	REAL(void, "g_mutex_clear", GMutex *);
	__tsan_mutex_destroy(m, 0);
	real(m);
}

/* A wait gives the mutex up and takes it again. */
void g_cond_wait(GCond *c, GMutex *m)
{
	REAL(void, "g_cond_wait", GCond *, GMutex *);
	__tsan_mutex_pre_unlock(m, 0);
	__tsan_mutex_post_unlock(m, 0);
	real(c, m);
	__tsan_mutex_pre_lock(m, 0);
	__tsan_mutex_post_lock(m, 0, 0);
}

gboolean g_cond_wait_until(GCond *c, GMutex *m, gint64 end)
{
	gboolean woken;

	REAL(gboolean, "g_cond_wait_until", GCond *, GMutex *, gint64);
	__tsan_mutex_pre_unlock(m, 0);
	__tsan_mutex_post_unlock(m, 0);
	woken = real(c, m, end);
	__tsan_mutex_pre_lock(m, 0);
	__tsan_mutex_post_lock(m, 0, 0);
	return woken;
}

void g_rw_lock_writer_lock(GRWLock *l)
{
	REAL(void, "g_rw_lock_writer_lock", GRWLock *);
	__tsan_mutex_pre_lock(l, 0);
	real(l);
	__tsan_mutex_post_lock(l, 0, 0);
}

void g_rw_lock_writer_unlock(GRWLock *l)
{
	REAL(void, "g_rw_lock_writer_unlock", GRWLock *);
	__tsan_mutex_pre_unlock(l, 0);
	real(l);
	__tsan_mutex_post_unlock(l, 0);
}

void g_rw_lock_reader_lock(GRWLock *l)
{
	REAL(void, "g_rw_lock_reader_lock", GRWLock *);
	__tsan_mutex_pre_lock(l, __tsan_mutex_read_lock);
	real(l);
	__tsan_mutex_post_lock(l, __tsan_mutex_read_lock, 0);
}

void g_rw_lock_reader_unlock(GRWLock *l)
{
	REAL(void, "g_rw_lock_reader_unlock", GRWLock *);
	__tsan_mutex_pre_unlock(l, __tsan_mutex_read_lock);
	real(l);
	__tsan_mutex_post_unlock(l, __tsan_mutex_read_lock);
}

/*
 * GLib's queues and thread pools lock with its own GMutex, called inside
 * libglib where no wrapper sees it: a handoff through them is made
 * visible here, at the public calls (what is pushed was written before
 * the pop that gets it, or before the pool job that runs on it).
 */
void g_async_queue_push(GAsyncQueue *q, gpointer data)
{
	REAL(void, "g_async_queue_push", GAsyncQueue *, gpointer);
	__tsan_release(q);
	real(q, data);
}

gpointer g_async_queue_pop(GAsyncQueue *q)
{
	gpointer data;

	REAL(gpointer, "g_async_queue_pop", GAsyncQueue *);
	data = real(q);
	__tsan_acquire(q);
	return data;
}

typedef struct {
	GFunc func;
	gpointer user_data;
} PoolJob;

/* Runs each job of a pool made through g_thread_pool_new. */
static void pool_trampoline(gpointer data, gpointer job)
{
	PoolJob *j = job;

	__tsan_acquire(j);
	j->func(data, j->user_data);
}

/* The PoolJob of each pool, found without reading the pool (GLib frees
 * it in a worker thread, which TSan would take for a race). */
static pthread_mutex_t pools_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
	GThreadPool *pool;
	PoolJob *job;
} pools[64];

GThreadPool *g_thread_pool_new(GFunc func, gpointer user_data,
			       gint max_threads, gboolean exclusive,
			       GError **error)
{
	/* Lives as long as the process: pools are few. */
	PoolJob *j = g_new(PoolJob, 1);
	GThreadPool *pool;

	REAL(GThreadPool *, "g_thread_pool_new", GFunc, gpointer, gint,
	     gboolean, GError **);
	j->func = func;
	j->user_data = user_data;
	pool = real(pool_trampoline, j, max_threads, exclusive, error);
	pthread_mutex_lock(&pools_lock);
	for (guint i = 0; pool && i < G_N_ELEMENTS(pools); i++) {
		if (!pools[i].pool || pools[i].pool == pool) {
			pools[i].pool = pool;
			pools[i].job = j;
			break;
		}
	}
	pthread_mutex_unlock(&pools_lock);
	return pool;
}

gboolean g_thread_pool_push(GThreadPool *pool, gpointer data, GError **error)
{
	PoolJob *j = NULL;

	REAL(gboolean, "g_thread_pool_push", GThreadPool *, gpointer,
	     GError **);
	pthread_mutex_lock(&pools_lock);
	for (guint i = 0; i < G_N_ELEMENTS(pools) && !j; i++)
		if (pools[i].pool == pool)
			j = pools[i].job;
	pthread_mutex_unlock(&pools_lock);
	if (j)	/* the trampoline acquires it */
		__tsan_release(j);
	return real(pool, data, error);
}
