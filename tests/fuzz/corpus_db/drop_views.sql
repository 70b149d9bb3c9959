DROP VIEW summary; DROP VIEW over_seeds; DROP VIEW by_router_cf;
