/*
 * The field names of the module's JSON stats ("dstack_stats json"): the
 * module writes them (ngx_http_dstack_stats.c), controld reads them
 * (controld/stats.c).  One definition, so that a renamed field cannot
 * leave the reader looking for the old name.
 *
 *   {"version":1,"time":T,"services":[{"name","uid","slot","inflight",
 *     "requests":{<class>:n...},
 *     "windows":{"<seconds>":{"arrivals",<class>:n...}...},
 *     "request_time_ms_sum",
 *     "hold":{"held","total","ms_sum","timeouts","rejected",
 *             "cold_starts","cold_start_ms_sum"},
 *     "model":{"requests","errors","ttfb_ms_sum","prompt_tokens",
 *              "completion_tokens",
 *              "ttft_ms":{"<seconds>":{"p50","p99","n"}...},
 *              "tpot_ms":{"<seconds>":{"p50","p99","n"}...}},
 *     "replicas":[{"addr","uid","slot","state","version","inflight",
 *                  "requests","failures","ttft_ms":{...},
 *                  "tpot_ms":{...}}...]}...],
 *   "budgets":[{"token","service","model","requests","refused",
 *               "prompt_tokens","completion_tokens","day",
 *               "day_tokens"}...]}
 */

#ifndef DS_STATS_NAMES_H
#define DS_STATS_NAMES_H

/* "name": for a writer's format strings */
#define DS_STATS_KEY(name)              "\"" name "\":"

#define DS_STATS_FORMAT                 1       /* "version" */

/* the answer */
#define DS_STATS_VERSION                "version"
#define DS_STATS_TIME                   "time"
#define DS_STATS_SERVICES               "services"
/* shared mode (a gateway's mirror): {"rev":N,"database":"ok"} or
 * {"rev":N,"database":"unreachable","since":<unix s>} */
#define DS_STATS_FOLLOW                 "follow"
#define DS_STATS_FOLLOW_REV             "rev"
#define DS_STATS_FOLLOW_DATABASE        "database"
#define DS_STATS_FOLLOW_SINCE           "since"

/* a service */
#define DS_STATS_NAME                   "name"
#define DS_STATS_UID                    "uid"
#define DS_STATS_SLOT                   "slot"
#define DS_STATS_INFLIGHT               "inflight"
#define DS_STATS_REQUESTS               "requests"  /* by class */
#define DS_STATS_WINDOWS                "windows"   /* by length, seconds */
#define DS_STATS_ARRIVALS               "arrivals"
#define DS_STATS_REQUEST_TIME_MS_SUM    "request_time_ms_sum"
#define DS_STATS_HOLD                   "hold"
#define DS_STATS_MODEL                  "model"
#define DS_STATS_REPLICAS               "replicas"

/* the classes of "requests" and of each window */
#define DS_STATS_REFUSED                "refused"
#define DS_STATS_1XX                    "1xx"
#define DS_STATS_2XX                    "2xx"
#define DS_STATS_3XX                    "3xx"
#define DS_STATS_4XX                    "4xx"
#define DS_STATS_5XX                    "5xx"

/* "hold" */
#define DS_STATS_HELD                   "held"
#define DS_STATS_HELD_TOTAL             "total"
#define DS_STATS_HELD_MS_SUM            "ms_sum"
#define DS_STATS_HOLD_TIMEOUTS          "timeouts"
#define DS_STATS_HOLD_REJECTED          "rejected"
#define DS_STATS_COLD_STARTS            "cold_starts"
#define DS_STATS_COLD_START_MS_SUM      "cold_start_ms_sum"

/* "model" */
#define DS_STATS_MODEL_REQUESTS         "requests"
#define DS_STATS_MODEL_ERRORS           "errors"
#define DS_STATS_TTFB_MS_SUM            "ttfb_ms_sum"
#define DS_STATS_PROMPT_TOKENS          "prompt_tokens"
#define DS_STATS_COMPLETION_TOKENS      "completion_tokens"
/* latency of the model's answers, per window (also per replica), for
 * services with a model only: milliseconds, one decimal; "n" answers;
 * 0s when none */
#define DS_STATS_TTFT_MS                "ttft_ms"
#define DS_STATS_TPOT_MS                "tpot_ms"
#define DS_STATS_P50                    "p50"
#define DS_STATS_P99                    "p99"
#define DS_STATS_LAT_N                  "n"

/* a replica; also "uid", "slot", "inflight" */
#define DS_STATS_ADDR                   "addr"
#define DS_STATS_STATE                  "state"     /* "ready", "draining" */
#define DS_STATS_REPLICA_VERSION        "version"
#define DS_STATS_REPLICA_REQUESTS       "requests"
#define DS_STATS_FAILURES               "failures"

/*
 * "budgets": the token budgets' counters of this gateway (#16), one
 * entry per (token, model) seen since the entry was made (a gateway
 * keeps the entries of the current UTC day; older idle ones may go).
 * "token" is the token's name, "" for the anonymous caller of a model
 * without auth; "service" the service key; "requests" admitted,
 * "refused" over a budget (429); token counts from the answers' usage
 * (the reservation when an answer had none); "day" the UTC day
 * (unix time / 86400) that "day_tokens" counts, reserved included.
 */
#define DS_STATS_BUDGETS                "budgets"
#define DS_STATS_BUDGET_TOKEN           "token"
#define DS_STATS_BUDGET_SERVICE         "service"
#define DS_STATS_BUDGET_MODEL           "model"
#define DS_STATS_BUDGET_REQUESTS        "requests"
#define DS_STATS_BUDGET_REFUSED         "refused"
#define DS_STATS_BUDGET_PROMPT          "prompt_tokens"
#define DS_STATS_BUDGET_COMPLETION      "completion_tokens"
#define DS_STATS_BUDGET_DAY             "day"
#define DS_STATS_BUDGET_DAY_TOKENS      "day_tokens"

#endif /* DS_STATS_NAMES_H */
