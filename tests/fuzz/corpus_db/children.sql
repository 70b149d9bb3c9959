DELETE FROM expert_loads; DELETE FROM experts_per_token;
