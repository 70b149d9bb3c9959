DROP TABLE expert_loads;
