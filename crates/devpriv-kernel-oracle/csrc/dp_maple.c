// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * dp_maple.c: a minimal C API over the kernel's lib/maple_tree.c, for
 * devpriv-kernel-oracle's Rust wrapper (src/ffi.rs mirrors it).
 *
 * This file is devpriv's own code. It contains no kernel code: it only
 * #includes the kernel's lib/maple_tree.c, from a kernel tree found at
 * build time (ci/kernel-src.sh or KERNEL_SRC), the way the kernel's own
 * tools/testing/shared/maple-shim.c does, so that this one translation
 * unit can also reach maple_node_cache (static there) to set the
 * harness's allocation policy.
 *
 * Every tree is created with MT_FLAGS_ALLOC_RANGE and is not in RCU mode,
 * as device_private_pgmap_tree is. Values are stored as xa_mk_value(v):
 * value entries (low bit set) never look like internal nodes or reserved
 * entries, and NULL (an empty range) cannot be stored by mistake.
 *
 * Two flavours, chosen by build.rs:
 * - DP_CHECK (debug builds, for the differential tests):
 *   CONFIG_DEBUG_MAPLE_TREE, so the kernel's own MT_BUG_ON/MAS_WARN_ON
 *   checks run and mt_validate() is available;
 * - otherwise (release and bench builds): the production configuration.
 */

#ifdef DP_CHECK
/* The kernel's userspace maple tests build with these (maple-shared.h). */
#define CONFIG_DEBUG_MAPLE_TREE
#define CONFIG_MAPLE_SEARCH
#endif
#define MAPLE_32BIT (MAPLE_NODE_SLOTS > 31)

#include "dp_maple.h"
#include "shared.h"
#include <stdlib.h>
#include <time.h>
#include <pthread.h>
#include <urcu.h>
#include "linux/init.h"

/* The kernel tree's lib/maple_tree.c (absolute path from build.rs). */
#include DP_MAPLE_TREE_C


/* The maple tree stores a pointer to its struct in the root node's parent
 * field, so the struct must never move: it lives on the C heap. */
struct dp_mt {
	struct maple_tree mt;
};

/* The harness's allocation tracing switch (defined in tools/lib/slab.c,
 * which the maple tree does not otherwise need): off. */
int kmalloc_verbose;

static pthread_once_t dp_once = PTHREAD_ONCE_INIT;
static pthread_key_t dp_rcu_key;

static void dp_rcu_unregister(void *unused)
{
	(void)unused;
	rcu_unregister_thread();
}

static void dp_init(void)
{
	maple_tree_init();
	/*
	 * The harness's kmem_cache (tools/testing/shared/linux.c) fails every
	 * allocation that may not sleep (GFP_NOWAIT, which mas_insert() tries
	 * first) unless "non_kernel" allocations are allowed; the kernel's
	 * slab would normally satisfy them. Allow 4e9 of them, so writes take
	 * the kernel's common path instead of failing once and retrying
	 * through mas_nomem(). (The harness decrements the count without its
	 * lock; with this budget the count never nears 0.)
	 */
	kmem_cache_set_non_kernel(maple_node_cache, UINT_MAX);
	pthread_key_create(&dp_rcu_key, dp_rcu_unregister);
}

/* liburcu wants each reader thread registered (and unregistered before it
 * exits: the key's destructor does that). */
static __thread int dp_registered;

static inline void dp_thread(void)
{
	if (unlikely(!dp_registered)) {
		pthread_once(&dp_once, dp_init);
		rcu_register_thread();
		pthread_setspecific(dp_rcu_key, &dp_registered);
		dp_registered = 1;
	}
}

unsigned int dp_mt_flavour(void)
{
	unsigned int f = 0;
#ifdef DP_CHECK
	f |= DP_FLAVOUR_CHECK;
#endif
#ifdef DP_ASAN
	f |= DP_FLAVOUR_ASAN;
#endif
#ifdef DP_UBSAN
	f |= DP_FLAVOUR_UBSAN;
#endif
	return f;
}

struct dp_mt *dp_mt_new(void)
{
	struct dp_mt *t;

	dp_thread();
	t = malloc(sizeof(*t));
	if (t)
		mt_init_flags(&t->mt, MT_FLAGS_ALLOC_RANGE);
	return t;
}

void dp_mt_free(struct dp_mt *t)
{
	dp_thread();
	mtree_destroy(&t->mt);
	free(t);
}

int dp_mt_alloc(struct dp_mt *t, unsigned long *startp, unsigned long value,
		unsigned long size, unsigned long min, unsigned long max,
		int rev)
{
	dp_thread();
	if (rev)
		return mtree_alloc_rrange(&t->mt, startp, xa_mk_value(value),
					  size, min, max, GFP_KERNEL);
	return mtree_alloc_range(&t->mt, startp, xa_mk_value(value), size,
				 min, max, GFP_KERNEL);
}

int dp_mt_empty_area(struct dp_mt *t, unsigned long *startp,
		     unsigned long size, unsigned long min, unsigned long max,
		     int rev)
{
	MA_STATE(mas, &t->mt, 0, 0);
	int ret;

	dp_thread();
	/* As mtree_alloc_range() does, under the tree's lock. */
	mtree_lock(&t->mt);
	if (rev)
		ret = mas_empty_area_rev(&mas, min, max, size);
	else
		ret = mas_empty_area(&mas, min, max, size);
	mtree_unlock(&t->mt);
	if (!ret)
		*startp = mas.index;
	return ret;
}

int dp_mt_insert_range(struct dp_mt *t, unsigned long first,
		       unsigned long last, unsigned long value)
{
	dp_thread();
	return mtree_insert_range(&t->mt, first, last, xa_mk_value(value),
				  GFP_KERNEL);
}

/* Returns 1 and the value if a range held index, 0 if it was a gap. */
int dp_mt_erase(struct dp_mt *t, unsigned long index, unsigned long *value)
{
	void *entry;

	dp_thread();
	entry = mtree_erase(&t->mt, index);
	if (!entry)
		return 0;
	*value = xa_to_value(entry);
	return 1;
}

int dp_mt_load(struct dp_mt *t, unsigned long index, unsigned long *value)
{
	void *entry;

	dp_thread();
	entry = mtree_load(&t->mt, index);
	if (!entry)
		return 0;
	*value = xa_to_value(entry);
	return 1;
}

int dp_mt_walk(struct dp_mt *t, unsigned long index, unsigned long *first,
	       unsigned long *last, unsigned long *value)
{
	MA_STATE(mas, &t->mt, index, index);
	void *entry;

	dp_thread();
	rcu_read_lock();
	entry = mas_walk(&mas);
	rcu_read_unlock();
	*first = mas.index;
	*last = mas.last;
	if (!entry)
		return 0;
	*value = xa_to_value(entry);
	return 1;
}

int dp_mt_find(struct dp_mt *t, unsigned long index, unsigned long *first,
	       unsigned long *last, unsigned long *value)
{
	MA_STATE(mas, &t->mt, index, index);
	void *entry;

	dp_thread();
	rcu_read_lock();
	entry = mas_find(&mas, ULONG_MAX);
	rcu_read_unlock();
	if (!entry)
		return 0;
	*first = mas.index;
	*last = mas.last;
	*value = xa_to_value(entry);
	return 1;
}

size_t dp_mt_dump(struct dp_mt *t, struct dp_range *out, size_t cap)
{
	MA_STATE(mas, &t->mt, 0, 0);
	size_t n = 0;
	void *entry;

	dp_thread();
	rcu_read_lock();
	mas_for_each(&mas, entry, ULONG_MAX) {
		if (n < cap) {
			out[n].first = mas.index;
			out[n].last = mas.last;
			out[n].value = xa_to_value(entry);
		}
		n++;
	}
	rcu_read_unlock();
	return n;
}

int dp_mt_validate(struct dp_mt *t)
{
	dp_thread();
#ifdef DP_CHECK
	mtree_lock(&t->mt);
	mt_validate(&t->mt);
	mtree_unlock(&t->mt);
	return 1;
#else
	(void)t;
	return 0;
#endif
}
