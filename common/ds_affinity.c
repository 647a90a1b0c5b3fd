/*
 * Affinity keys and weights, see ds_affinity.h.  The mix is splitmix64's
 * finalizer (Steele, Lea, Flood): every input bit flips about half of
 * the output bits, which is what makes the weights of one key over the
 * replicas independent draws.
 */

#include <string.h>

#include "ds_affinity.h"


#define DS_AFFINITY_SEED        0x9e3779b97f4a7c15ULL
#define DS_AFFINITY_MUL         0xff51afd7ed558ccdULL


static uint64_t
ds_mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;

    return x;
}


uint64_t
ds_affinity_hash(const void *data, size_t len)
{
    size_t          i;
    uint64_t        h, w;
    const uint8_t  *p = data;

    h = DS_AFFINITY_SEED ^ ((uint64_t) len * DS_AFFINITY_MUL);

    for (i = 0; i + 8 <= len; i += 8) {
        memcpy(&w, p + i, 8);       /* unaligned, host order: the key
                                       never leaves this host */
        h = (h ^ w) * DS_AFFINITY_MUL;
        h ^= h >> 29;
    }

    w = 0;
    memcpy(&w, p + i, len - i);
    h = (h ^ w) * DS_AFFINITY_MUL;

    return ds_mix64(h);
}


uint64_t
ds_affinity_weight(uint64_t key, uint64_t uid)
{
    return ds_mix64(key ^ ds_mix64(uid + DS_AFFINITY_SEED));
}


int64_t
ds_affinity_bound(int64_t total, uint64_t n, uint32_t load_factor)
{
    uint64_t  num, den;

    if (total < 0) {
        total = 0;      /* counters of other workers, read in passing */
    }

    if (n == 0) {
        return 1;
    }

    /* ceil(c x (total + 1) / n) with c = load_factor / 1000, in integers */
    num = (uint64_t) load_factor * ((uint64_t) total + 1);
    den = 1000 * n;

    return (int64_t) ((num + den - 1) / den);
}
