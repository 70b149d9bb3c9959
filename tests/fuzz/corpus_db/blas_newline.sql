UPDATE points SET blas_core = 'a' || char(10) || 'b';
