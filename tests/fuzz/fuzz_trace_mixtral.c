/* fuzz_trace_mixtral.c: libFuzzer target for the Mixtral JSONL importer
 * (problem_id, layer, experts, gating_probs, token_idx | token_pos),
 * through moe_trace_load, moe_trace_info and the trace token source; the body and its
 * contracts are in fuzz_trace.h. Seed corpus: tests/fuzz/corpus_trace_mixtral/; dictionary:
 * tests/fuzz/trace_mixtral.dict. `make fuzz` builds and runs it.
 */
#include "fuzz_trace.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_trace_one(MOE_TRACE_MIXTRAL, data, size);
}
