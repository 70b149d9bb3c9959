UPDATE expert_loads SET expert = 100000 WHERE expert = 1;
UPDATE experts_per_token SET experts = -5;
