/* hmap.h - a hash map from byte-string or 64-bit keys to pointers; the
 * session tables of c2s and sm live in these. Keys are not copied: the
 * caller keeps each key alive while its entry exists. */
#ifndef XMPPD_HMAP_H
#define XMPPD_HMAP_H

#include <stddef.h>
#include <stdint.h>

struct hmap_entry {
    const char *key;   /* NULL for integer keys */
    size_t klen;
    uint64_t ikey;
    uint64_t hash;
    void *value;
    struct hmap_entry *next;
};

struct hmap {
    struct hmap_entry **buckets;
    size_t nbuckets; /* power of two */
    size_t count;
};

/* Look a string key up; NULL if absent. */
void *hmap_get(const struct hmap *m, const char *key, size_t klen);
/* Insert or replace a string key; returns the previous value or NULL; -1
 * allocation failure is reported through *failed when non-NULL. */
void *hmap_put(struct hmap *m, const char *key, size_t klen, void *value, int *failed);
/* Remove a string key; returns its value or NULL. */
void *hmap_del(struct hmap *m, const char *key, size_t klen);
/* The same for 64-bit keys. */
void *hmap_iget(const struct hmap *m, uint64_t key);
void *hmap_iput(struct hmap *m, uint64_t key, void *value, int *failed);
void *hmap_idel(struct hmap *m, uint64_t key);
/* Visit every entry (do not modify the map inside fn). */
void hmap_each(const struct hmap *m, void (*fn)(void *value, void *arg), void *arg);
/* Collect up to max values into out; returns how many (safe to modify the map afterwards). */
size_t hmap_values(const struct hmap *m, void **out, size_t max);
/* Free the table (not the values). */
void hmap_free(struct hmap *m);

#endif
