UPDATE points SET capacity_factor_value = NULL;
UPDATE points SET E = 0;
