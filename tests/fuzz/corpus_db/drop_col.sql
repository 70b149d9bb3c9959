ALTER TABLE points DROP COLUMN blas_core;
