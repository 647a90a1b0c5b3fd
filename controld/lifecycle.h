/*
 * The replica state machine (lifecycle.c): the one place a replica's
 * state changes.  run.h draws the states and their transitions.
 */

#ifndef CONTROLD_LIFECYCLE_H
#define CONTROLD_LIFECYCLE_H

struct replica;

/* 1 when a replica may go from state `from` to `to` */
int replica_transition_ok(int from, int to);

/*
 * Moves rep to state `to`: 0, or -1 (logged, nothing changes) when the
 * transition is not one of the machine's.  The run's document is marked
 * changed, and its replica set when the replica enters or leaves it
 * (ready, draining).  Moving to the state it is in does nothing.
 */
int replica_set_state(struct replica *rep, int to);

#endif /* CONTROLD_LIFECYCLE_H */
