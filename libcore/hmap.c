/* hmap.c - chained hash map (hmap.h) with power-of-two tables that double
 * when the load reaches one entry per bucket. */
#include "config.h"
#include "hmap.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

static int grow(struct hmap *m)
{
    size_t n = m->nbuckets ? m->nbuckets * 2 : 64;
    struct hmap_entry **b = calloc(n, sizeof *b);
    if (!b) return -1;
    for (size_t i = 0; i < m->nbuckets; i++) {
        struct hmap_entry *e = m->buckets[i];
        while (e) {
            struct hmap_entry *next = e->next;
            size_t j = e->hash & (n - 1);
            e->next = b[j];
            b[j] = e;
            e = next;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->nbuckets = n;
    return 0;
}

static struct hmap_entry **find(const struct hmap *m, uint64_t h, const char *key, size_t klen, uint64_t ikey)
{
    if (!m->nbuckets) return NULL;
    struct hmap_entry **pp = &m->buckets[h & (m->nbuckets - 1)];
    for (; *pp; pp = &(*pp)->next) {
        struct hmap_entry *e = *pp;
        if (e->hash != h) continue;
        if (key ? (e->key && e->klen == klen && memcmp(e->key, key, klen) == 0) : (!e->key && e->ikey == ikey))
            return pp;
    }
    return pp;
}

static void *put(struct hmap *m, uint64_t h, const char *key, size_t klen, uint64_t ikey, void *value, int *failed)
{
    if (failed) *failed = 0;
    if (m->count >= m->nbuckets && grow(m) < 0) {
        if (failed) *failed = 1;
        return NULL;
    }
    struct hmap_entry **pp = find(m, h, key, klen, ikey);
    if (*pp) {
        void *old = (*pp)->value;
        (*pp)->value = value;
        (*pp)->key = key;
        return old;
    }
    struct hmap_entry *e = malloc(sizeof *e);
    if (!e) {
        if (failed) *failed = 1;
        return NULL;
    }
    *e = (struct hmap_entry){ key, klen, ikey, h, value, NULL };
    *pp = e;
    m->count++;
    return NULL;
}

static void *del(struct hmap *m, uint64_t h, const char *key, size_t klen, uint64_t ikey)
{
    struct hmap_entry **pp = find(m, h, key, klen, ikey);
    if (!pp || !*pp) return NULL;
    struct hmap_entry *e = *pp;
    void *v = e->value;
    *pp = e->next;
    free(e);
    m->count--;
    return v;
}

void *hmap_get(const struct hmap *m, const char *key, size_t klen)
{
    struct hmap_entry **pp = find(m, util_hash64(key, klen), key, klen, 0);
    return pp && *pp ? (*pp)->value : NULL;
}

void *hmap_put(struct hmap *m, const char *key, size_t klen, void *value, int *failed)
{
    return put(m, util_hash64(key, klen), key, klen, 0, value, failed);
}

void *hmap_del(struct hmap *m, const char *key, size_t klen) { return del(m, util_hash64(key, klen), key, klen, 0); }

void *hmap_iget(const struct hmap *m, uint64_t key)
{
    struct hmap_entry **pp = find(m, mix64(key), NULL, 0, key);
    return pp && *pp ? (*pp)->value : NULL;
}

void *hmap_iput(struct hmap *m, uint64_t key, void *value, int *failed)
{
    return put(m, mix64(key), NULL, 0, key, value, failed);
}

void *hmap_idel(struct hmap *m, uint64_t key) { return del(m, mix64(key), NULL, 0, key); }

void hmap_each(const struct hmap *m, void (*fn)(void *value, void *arg), void *arg)
{
    for (size_t i = 0; i < m->nbuckets; i++)
        for (struct hmap_entry *e = m->buckets[i]; e; e = e->next) fn(e->value, arg);
}

size_t hmap_values(const struct hmap *m, void **out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < m->nbuckets && n < max; i++)
        for (struct hmap_entry *e = m->buckets[i]; e && n < max; e = e->next) out[n++] = e->value;
    return n;
}

void hmap_free(struct hmap *m)
{
    for (size_t i = 0; i < m->nbuckets; i++) {
        struct hmap_entry *e = m->buckets[i];
        while (e) {
            struct hmap_entry *next = e->next;
            free(e);
            e = next;
        }
    }
    free(m->buckets);
    memset(m, 0, sizeof *m);
}
