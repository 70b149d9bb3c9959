/* registry.c: the NULL-terminated table of token source types. Adding a source is one new file
 * in sim/sources/ (defining `const moe_source_type moe_source_NAME`) and its line here;
 * `moesim list sources`, moe_source_open and the source tests iterate this table. */
#include "source.h"

extern const moe_source_type moe_source_gaussian, moe_source_clustered, moe_source_zipf_ids,
    moe_source_drift, moe_source_collapsed, moe_source_npy;
extern const moe_source_type moe_source_trace_deepseek, moe_source_trace_mixtral,
    moe_source_trace_flame, moe_source_trace_popularity;

const moe_source_type *const moe_source_types[] = {
    &moe_source_gaussian,
    &moe_source_clustered,
    &moe_source_zipf_ids,
    &moe_source_drift,
    &moe_source_collapsed,
    &moe_source_npy,
    &moe_source_trace_deepseek,
    &moe_source_trace_mixtral,
    &moe_source_trace_flame,
    &moe_source_trace_popularity,
    NULL,
};
