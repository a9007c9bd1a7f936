// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * dp_maple.h: the C API of dp_maple.c (devpriv's own code). Every function
 * returning int returns 0 or a negative errno, as the kernel call it
 * wraps does, unless its comment says otherwise.
 */
#ifndef DP_MAPLE_H
#define DP_MAPLE_H

#include <stddef.h>

#define DP_FLAVOUR_CHECK 1u /* CONFIG_DEBUG_MAPLE_TREE, mt_validate() */
#define DP_FLAVOUR_ASAN 2u /* built with -fsanitize=address */
#define DP_FLAVOUR_UBSAN 4u /* built with -fsanitize=undefined */

struct dp_mt;

struct dp_range {
	unsigned long first;
	unsigned long last;
	unsigned long value;
};

unsigned int dp_mt_flavour(void);
/* mt_init_flags(MT_FLAGS_ALLOC_RANGE); NULL if malloc failed. */
struct dp_mt *dp_mt_new(void);
/* mtree_destroy(), then frees the tree. */
void dp_mt_free(struct dp_mt *t);
/* mtree_alloc_range() (rev = 0) or mtree_alloc_rrange() (rev != 0). */
int dp_mt_alloc(struct dp_mt *t, unsigned long *startp, unsigned long value,
		unsigned long size, unsigned long min, unsigned long max,
		int rev);
/* mas_empty_area() / mas_empty_area_rev() under the tree's lock. */
int dp_mt_empty_area(struct dp_mt *t, unsigned long *startp,
		     unsigned long size, unsigned long min, unsigned long max,
		     int rev);
/* mtree_insert_range(). */
int dp_mt_insert_range(struct dp_mt *t, unsigned long first,
		       unsigned long last, unsigned long value);
/* mtree_erase(): 1 and *value if a range held index, 0 in a gap. */
int dp_mt_erase(struct dp_mt *t, unsigned long index, unsigned long *value);
/* mtree_load(): 1 and *value if a range holds index, 0 in a gap. */
int dp_mt_load(struct dp_mt *t, unsigned long index, unsigned long *value);
/* mas_walk() under rcu_read_lock(): the range (or gap) holding index in
 * *first..*last; 1 and *value for a range, 0 for a gap. */
int dp_mt_walk(struct dp_mt *t, unsigned long index, unsigned long *first,
	       unsigned long *last, unsigned long *value);
/* mas_find(&mas, ULONG_MAX) from index under rcu_read_lock(): the first
 * range ending at or after index; 1 and the range and value if any. */
int dp_mt_find(struct dp_mt *t, unsigned long index, unsigned long *first,
	       unsigned long *last, unsigned long *value);
/* mas_for_each(): writes up to cap ranges in order; returns how many the
 * tree holds (call again with a larger buffer if that is more than cap). */
size_t dp_mt_dump(struct dp_mt *t, struct dp_range *out, size_t cap);
/* mt_validate() (aborts on a broken tree): 1 if the check flavour has it,
 * 0 otherwise. */
int dp_mt_validate(struct dp_mt *t);

#endif /* DP_MAPLE_H */
