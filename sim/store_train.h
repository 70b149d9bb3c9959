/* store_train.h: the DDL of the training tables of the results database (train_points, steps,
 * step_loads and the view train_summary), created by sim/store.c for a new database and by its
 * migration 2 -> 3. */
#ifndef MOE_STORE_TRAIN_H
#define MOE_STORE_TRAIN_H

extern const char moe_store_train_sql[];

#endif
