/*
 * Affinity routing of the model endpoint: the 64-bit key of a request
 * (a hash of its prompt's first bytes or of its session) and the weight
 * of each replica for a key, for rendezvous (highest random weight)
 * hashing: a replica that joins or leaves moves only the keys whose
 * highest weight it has.  Pure functions, no allocation.
 */

#ifndef DS_AFFINITY_H
#define DS_AFFINITY_H

#include <stddef.h>
#include <stdint.h>

/* the hash of len bytes, eight at a time */
uint64_t ds_affinity_hash(const void *data, size_t len);

/* the weight of the replica `uid` for `key`: a 64-bit mix of both */
uint64_t ds_affinity_weight(uint64_t key, uint64_t uid);

/*
 * The bound of "consistent hashing with bounded loads": a replica may
 * take a request while its in-flight count is at most
 * ceil(load_factor / 1000 x (total + 1) / n), total being the in-flight
 * count over the n replicas.  At most, not below: the counts are read
 * while other requests end, and a replica still counting the request
 * that just ended must not pass the next one on.  Never below 1.
 */
int64_t ds_affinity_bound(int64_t total, uint64_t n, uint32_t load_factor);

#endif /* DS_AFFINITY_H */
