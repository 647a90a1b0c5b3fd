/*
 * The backend replicas run on.  One today; the choice will come from the
 * configuration (backends: in controld.yml) as others are added.
 */

#include "backend.h"

const struct backend_ops  *backend = &backend_local;
